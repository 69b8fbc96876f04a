/* train_linear.c: data-parallel training in C alone, through ddl's public C API (ddl/ddl.h).
 *
 * Every rank makes its own shard of a synthetic regression problem y = x w* + b* + noise,
 * computes the mean-squared-error gradient of a linear model with autograd, averages the
 * gradients across ranks with an allreduce, and takes an SGD step: what DDP does, by hand.
 * Rank 0 serves the rendezvous store. Launch it like a Python script, with the launcher's
 * --no-python flag (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
 *
 *     python -m ddl.run --nproc-per-node 2 --no-python ./train_linear
 *
 * Build (tests/test_c_api.py does exactly this): compile csrc/ without csrc/python/ together
 * with this file, link Gloo, OpenBLAS, zlib and the C++ runtime. Each rank prints its final
 * loss and weights; all ranks end with the same weights.
 */
#include "ddl/ddl.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#define D 8   /* features */
#define N 256 /* rows per rank */
#define STEPS 200
#define LR 0.1

static int check(ddl_status st, const char *what) {
    if (st == DDL_OK) return 0;
    fprintf(stderr, "train_linear: %s failed: %s\n", what, ddl_last_error());
    return 1;
}

static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}

/* loss = mean((x @ w^T + b - y)^2) as a recorded graph; *loss gets a new reference. */
static ddl_status mse(ddl_tensor **loss, const ddl_tensor *x, const ddl_tensor *w,
                      const ddl_tensor *b, const ddl_tensor *y) {
    ddl_tensor *pred = NULL, *diff = NULL, *sq = NULL;
    ddl_status st = ddl_ag_linear(&pred, x, w, b); /* (N, 1) */
    if (!st) st = ddl_ag_binary(&diff, DDL_OP_SUB, pred, y);
    if (!st) st = ddl_ag_binary(&sq, DDL_OP_MUL, diff, diff);
    if (!st) st = ddl_ag_reduce(loss, DDL_REDUCE_MEAN, sq, 0, NULL, 0, 0);
    ddl_tensor_release(pred);
    ddl_tensor_release(diff);
    ddl_tensor_release(sq);
    return st;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN); /* Gloo writes without MSG_NOSIGNAL (shared/gloo-notes.md) */
    int rank = env_int("RANK", 0), world = env_int("WORLD_SIZE", 1);
    int port = env_int("MASTER_PORT", 0);
    const char *addr = getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1";
    if (world > 1 && port <= 0) {
        fprintf(stderr, "train_linear: set MASTER_PORT (or launch with python -m ddl.run)\n");
        return 2;
    }

    ddl_tcp_server *server = NULL;
    ddl_store *store = NULL;
    ddl_pg *pg = NULL;
    ddl_tensor *x = NULL, *noise = NULL, *y = NULL, *w_true = NULL, *w = NULL, *b = NULL;
    ddl_tensor *loss = NULL;
    int failed = 0;
    if (rank == 0) failed = check(ddl_tcp_server_new(&server, addr, port, &port), "store server");
    if (!failed) failed = check(ddl_store_new_tcp(&store, addr, port, 30000), "store client");
    if (!failed)
        failed = check(ddl_pg_new(&pg, store, "train_linear", rank, world, addr, NULL, 30000),
                       "process group");

    /* The data: every rank draws its own rows (the seed differs), the same true weights. */
    int64_t xs[2] = {N, D}, ys[2] = {N, 1}, ws[2] = {1, D}, bs[1] = {1};
    ddl_manual_seed(1234);
    if (!failed) failed = check(ddl_randn(&w_true, DDL_FLOAT32, 2, ws), "randn");
    ddl_manual_seed(1000 + (uint64_t)rank);
    if (!failed) failed = check(ddl_randn(&x, DDL_FLOAT32, 2, xs), "randn");
    if (!failed) failed = check(ddl_randn(&noise, DDL_FLOAT32, 2, ys), "randn");
    if (!failed) {
        ddl_tensor *xw = NULL, *wt = NULL, *scaled = NULL, *shifted = NULL;
        ddl_status st = ddl_tensor_transpose(&wt, w_true, 0, 1);
        if (!st) st = ddl_matmul(&xw, x, wt); /* (N, 1) */
        if (!st) st = ddl_binary_scalar(&scaled, DDL_OP_MUL, noise, 0.01, 1, 0);
        if (!st) st = ddl_binary_scalar(&shifted, DDL_OP_ADD, xw, 0.5, 1, 0); /* b* = 0.5 */
        if (!st) st = ddl_binary(&y, DDL_OP_ADD, shifted, scaled);
        ddl_tensor_release(xw);
        ddl_tensor_release(wt);
        ddl_tensor_release(scaled);
        ddl_tensor_release(shifted);
        failed = check(st, "making the data");
    }

    /* The model starts at zero on every rank, so no broadcast is needed. */
    if (!failed) failed = check(ddl_tensor_zeros(&w, DDL_FLOAT32, 2, ws), "zeros");
    if (!failed) failed = check(ddl_tensor_zeros(&b, DDL_FLOAT32, 1, bs), "zeros");
    if (!failed) failed = check(ddl_tensor_set_requires_grad(w, 1), "requires_grad");
    if (!failed) failed = check(ddl_tensor_set_requires_grad(b, 1), "requires_grad");

    ddl_tensor *params[2] = {w, b};
    for (int step = 0; !failed && step < STEPS; step++) {
        ddl_tensor_release(loss);
        loss = NULL;
        for (int i = 0; i < 2; i++)
            if (params[i]->grad) failed |= check(ddl_zero_(params[i]->grad), "zero_grad");
        if (!failed) failed = check(mse(&loss, x, w, b, y), "forward");
        if (!failed) failed = check(ddl_backward(loss, NULL, 0), "backward");
        for (int i = 0; !failed && i < 2; i++) /* average the gradients over the ranks */
            failed =
                check(ddl_pg_allreduce(pg, params[i]->grad, DDL_COMM_AVG, 0, NULL), "allreduce");
        const ddl_tensor *grads[2] = {failed ? NULL : w->grad, failed ? NULL : b->grad};
        if (!failed)
            failed = check(ddl_sgd_step(2, params, grads, NULL, NULL, LR, 0, 0, 0, 0, 0), "sgd");
    }

    if (!failed) {
        double l = 0, err = 0, bias = 0;
        failed = check(ddl_tensor_item(&l, loss, 0), "item");
        for (int j = 0; !failed && j < D; j++) {
            double a, t;
            failed = check(ddl_tensor_item(&a, w, j), "item") ||
                     check(ddl_tensor_item(&t, w_true, j), "item");
            err = fmax(err, fabs(a - t));
        }
        if (!failed) failed = check(ddl_tensor_item(&bias, b, 0), "item");
        if (!failed) {
            printf("rank %d/%d: loss %.6f max|w - w*| %.5f bias %.5f weights", rank, world, l, err,
                   bias);
            for (int j = 0; j < D; j++) {
                double a;
                ddl_tensor_item(&a, w, j);
                printf(" %.6f", a);
            }
            printf("\n");
        }
    }

    ddl_tensor_release(loss);
    ddl_tensor_release(x);
    ddl_tensor_release(noise);
    ddl_tensor_release(y);
    ddl_tensor_release(w_true);
    ddl_tensor_release(w);
    ddl_tensor_release(b);
    if (!failed && pg) failed = check(ddl_pg_barrier(pg, 0, NULL), "barrier");
    ddl_pg_shutdown(pg);
    ddl_pg_release(pg);
    ddl_store_release(store);
    ddl_tcp_server_free(server);
    return failed;
}
