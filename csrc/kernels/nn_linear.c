/* nn_linear.c: float32 linear forward and backward (sgemm; above 4M multiply-adds the products
 * split over ddl's threads) with their `_naive` twins for the tests. */
#include "ddl/nn_conv.h"

#include "core/internal.h"

#include "kernels/common.h"

#include <string.h>

/* ---- linear ------------------------------------------------------------------------------ */

static ddl_status linear_check(const char *who, int64_t B, int64_t IN, int64_t OUT) {
    if (B < 1 || IN < 1 || OUT < 1)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (B, IN) = (%lld, %lld) and weight (OUT, IN) = (%lld, %lld) must "
                 "have positive sizes",
                 who, (ll)B, (ll)IN, (ll)OUT, (ll)IN);
    int64_t t;
    if (B > MAX_DIM || IN > MAX_DIM || OUT > MAX_DIM || !prod4(&t, B, IN, 1, 1) ||
        !prod4(&t, B, OUT, 1, 1) || !prod4(&t, OUT, IN, 1, 1))
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input (%lld, %lld) with weight (%lld, %lld) is too large (BLAS "
                 "dimensions are limited to 2^31 - 1)",
                 who, (ll)B, (ll)IN, (ll)OUT, (ll)IN);
    return DDL_OK;
}

static ddl_status linear_forward_args(const float *out, const float *inp, const float *weight,
                                      int64_t B, int64_t IN, int64_t OUT) {
    DDL_TRY(linear_check("linear", B, IN, OUT));
    return forward_bufs_check("linear", out, inp, weight);
}

static ddl_status linear_backward_args(const float *dinp, const float *dweight, const float *dout,
                                       const float *inp, const float *weight, int64_t B, int64_t IN,
                                       int64_t OUT) {
    DDL_TRY(linear_check("linear_backward", B, IN, OUT));
    return grad_inputs_check("linear_backward", dinp, dweight, dout, inp, weight);
}

/* Linear at several threads: the products split over ddl's own threads (ddl_parallel_run,
 * single-threaded sgemm in each share) by output columns (forward), input columns (dinp) and
 * weight rows (dweight), so no share sums across another's and OpenBLAS's own pool is never
 * woken in a layer (its idle workers would spin against ddl's). Below LINEAR_SPLIT_MACS the
 * call stays on the calling thread. */
#define LINEAR_SPLIT_MACS ((int64_t)1 << 22)

typedef struct {
    float *out, *dinp, *dweight;
    const float *inp, *weight, *bias, *dout;
    int64_t B, IN, OUT;
} linear_job;

/* Boundary t of nt shares of n columns (multiples of 16 inside). */
static int64_t share_edge(int64_t n, int t, int nt) {
    return t >= nt ? n : (n * t / nt) & ~(int64_t)15;
}

/* Threads for a linear call of B*IN*OUT multiply-adds; one (the calling thread) where a
 * product goes to bf16 under autocast, whose kernels split the work themselves. */
static int linear_threads(int64_t B, int64_t IN, int64_t OUT, int backward) {
    if ((double)B * IN * OUT < (double)LINEAR_SPLIT_MACS) return 1;
    if (backward ? ddl_gemm_takes_bf16(0, 0, B, IN, OUT) || ddl_gemm_takes_bf16(1, 0, OUT, IN, B)
                 : ddl_gemm_takes_bf16(0, 1, B, OUT, IN))
        return 1;
    return ddl_num_threads;
}

static void linear_forward_share(void *p, int tid, int nt) {
    const linear_job *j = p;
    int64_t lo = share_edge(j->OUT, tid, nt), hi = share_edge(j->OUT, tid + 1, nt);
    if (hi <= lo) return;
    if (j->bias)
        for (int64_t b = 0; b < j->B; b++)
            memcpy(j->out + b * j->OUT + lo, j->bias + lo, (size_t)(hi - lo) * sizeof(float));
    ddl_gemm_f32(0, 1, j->B, hi - lo, j->IN, j->inp, j->IN, j->weight + lo * j->IN, j->IN,
                 j->bias ? 1.0f : 0.0f, j->out + lo, j->OUT);
}

ddl_status ddl_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int64_t B, int64_t IN, int64_t OUT) {
    // out (B, OUT), inp (B, IN), weight (OUT, IN), bias (OUT,)
    DDL_TRY(linear_forward_args(out, inp, weight, B, IN, OUT));
    linear_job j = {
        .out = out, .inp = inp, .weight = weight, .bias = bias, .B = B, .IN = IN, .OUT = OUT};
    ddl_parallel_run(linear_threads(B, IN, OUT, 0), linear_forward_share, &j);
    return DDL_OK;
}

static void linear_backward_share(void *p, int tid, int nt) {
    const linear_job *j = p;
    if (j->dinp) { /* dinp[:, lo:hi] (B, IN) += dout (B, OUT) @ weight[:, lo:hi] (OUT, IN) */
        int64_t lo = share_edge(j->IN, tid, nt), hi = share_edge(j->IN, tid + 1, nt);
        if (hi > lo)
            ddl_gemm_f32(0, 0, j->B, hi - lo, j->OUT, j->dout, j->OUT, j->weight + lo, j->IN, 1.0f,
                         j->dinp + lo, j->IN);
    }
    if (j->dweight) { /* dweight[lo:hi] (OUT, IN) += dout[:, lo:hi]^T (OUT, B) @ inp (B, IN) */
        int64_t lo = share_edge(j->OUT, tid, nt), hi = share_edge(j->OUT, tid + 1, nt);
        if (hi > lo)
            ddl_gemm_f32(1, 0, hi - lo, j->IN, j->B, j->dout + lo, j->OUT, j->inp, j->IN, 1.0f,
                         j->dweight + lo * j->IN, j->IN);
    }
}

ddl_status ddl_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int64_t B, int64_t IN,
                               int64_t OUT) {
    // dinp (B, IN), dweight (OUT, IN), dbias (OUT,), dout (B, OUT), inp (B, IN),
    // weight (OUT, IN)
    DDL_TRY(linear_backward_args(dinp, dweight, dout, inp, weight, B, IN, OUT));
    if (dinp || dweight) {
        linear_job j = {.dinp = dinp,
                        .dweight = dweight,
                        .inp = inp,
                        .weight = weight,
                        .dout = dout,
                        .B = B,
                        .IN = IN,
                        .OUT = OUT};
        ddl_parallel_run(linear_threads(B, IN, OUT, 1), linear_backward_share, &j);
    }
    if (dbias) {
        /* Row by row keeps the reads contiguous; a float partial per column would lose bits
         * over large B, so sum in blocks of 256 columns into doubles. */
        double acc[256];
        for (int64_t j0 = 0; j0 < OUT; j0 += 256) {
            int64_t nj = min64(256, OUT - j0);
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0;
            for (int64_t b = 0; b < B; b++) {
                const float *r = dout + b * OUT + j0;
                for (int64_t j = 0; j < nj; j++) acc[j] += r[j];
            }
            for (int64_t j = 0; j < nj; j++) dbias[j0 + j] += (float)acc[j];
        }
    }
    return DDL_OK;
}

ddl_status ddl_linear_forward_naive(float *out, const float *inp, const float *weight,
                                    const float *bias, int64_t B, int64_t IN, int64_t OUT) {
    // out (B, OUT), inp (B, IN), weight (OUT, IN), bias (OUT,)
    DDL_TRY(linear_forward_args(out, inp, weight, B, IN, OUT));
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < OUT; j++) {
            double acc = bias ? bias[j] : 0.0;
            for (int64_t i = 0; i < IN; i++) acc += (double)inp[b * IN + i] * weight[j * IN + i];
            out[b * OUT + j] = (float)acc;
        }
    return DDL_OK;
}

ddl_status ddl_linear_backward_naive(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, int64_t B, int64_t IN,
                                     int64_t OUT) {
    // dinp (B, IN), dweight (OUT, IN), dbias (OUT,), dout (B, OUT), inp (B, IN),
    // weight (OUT, IN)
    DDL_TRY(linear_backward_args(dinp, dweight, dout, inp, weight, B, IN, OUT));
    if (dinp)
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < IN; i++) {
                double acc = 0.0;
                for (int64_t j = 0; j < OUT; j++)
                    acc += (double)dout[b * OUT + j] * weight[j * IN + i];
                dinp[b * IN + i] += (float)acc;
            }
    if (dweight)
        for (int64_t j = 0; j < OUT; j++)
            for (int64_t i = 0; i < IN; i++) {
                double acc = 0.0;
                for (int64_t b = 0; b < B; b++) acc += (double)dout[b * OUT + j] * inp[b * IN + i];
                dweight[j * IN + i] += (float)acc;
            }
    if (dbias)
        for (int64_t j = 0; j < OUT; j++) {
            double acc = 0.0;
            for (int64_t b = 0; b < B; b++) acc += dout[b * OUT + j];
            dbias[j] += (float)acc;
        }
    return DDL_OK;
}
