/* reducer.c: the DDP gradient reducer (buckets, leaf hooks, overlapped allreduce). */
#include "ddl/reducer.h"

#include "autograd/node.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    ddl_dtype dtype;
    int n;           /* parameters in this bucket */
    int *params;     /* their indices */
    int64_t numel;   /* elements of all its gradients */
    ddl_tensor *buf; /* (numel,) the gradients back to back; NULL in a one-parameter bucket,
                      * whose allreduce runs on that parameter's .grad itself (no copy) */
    int pending;     /* parameters not yet ready this iteration */
    ddl_work *work;  /* the allreduce in flight */
    int64_t t_start, t_end;
} bucket;

typedef struct {
    ddl_reducer *r;
    int index;
} hook_ctx;

struct ddl_reducer {
    ddl_pg *pg;
    int n;
    ddl_tensor **params;
    ddl_tensor **views; /* views[i]: param i's slot in its bucket buffer, shaped like it (NULL
                         * when param i is alone in its bucket) */
    hook_ctx *hooks;
    int *bucket_of;
    int nb;
    bucket *b;
    int64_t cap, first_cap;
    int sync;      /* hooks launch allreduces (off inside no_sync) */
    int iter_sync; /* sync as it was when this iteration's forward ran */
    int in_iteration;
    uint8_t *ready;
    int next_launch;
    int *ready_order;
    int ready_count;
    int rebuilt;
    int local;       /* a group of one rank: the average is the gradient itself, nothing to send */
    int overlap;     /* buckets before the last go to the comm thread (else: the caller's thread) */
    int64_t *packed; /* (packed_cap,) scratch of ddl_reducer_sync_buffers, kept across steps */
    int64_t packed_cap;
    ddl_tensor *packed_t; /* a tensor over packed (or NULL) */
};

static void free_buckets(ddl_reducer *r) {
    for (int k = 0; k < r->nb; k++) {
        ddl_work_free(r->b[k].work);
        ddl_tensor_release(r->b[k].buf);
        free(r->b[k].params);
    }
    free(r->b);
    r->b = NULL;
    r->nb = 0;
}

/* Fill buckets following `order` (parameter indices), then build the flat buffers and the
 * views, copying each parameter's current gradient into its new slot. */
static ddl_status build_buckets(ddl_reducer *r, const int *order) {
    bucket *b = calloc((size_t)r->n + 1, sizeof *b);
    if (!b) DDL_FAIL(DDL_E_NOMEM, "DistributedDataParallel: out of memory building buckets");
    int nb = 0, alone = 0;
    int64_t bytes = 0;
    for (int k = 0; k < r->n; k++) {
        ddl_tensor *p = r->params[order[k]];
        int64_t pb = ddl_tensor_numel(p) * (int64_t)ddl_dtype_size(p->dtype);
        /* the first bucket is small, so communication starts early in backward */
        int64_t cap = nb <= 1 ? r->first_cap : r->cap;
        /* a parameter of first_cap bytes or more gets a bucket of its own: reduced in its
         * .grad (no copy) as soon as it is ready, not held back by the parameters after it */
        int big = pb >= r->first_cap;
        if (nb == 0 || b[nb - 1].dtype != p->dtype || bytes + pb > cap || big || alone) {
            nb++;
            b[nb - 1].dtype = p->dtype;
            bytes = 0;
        }
        alone = big;
        b[nb - 1].n++;
        b[nb - 1].numel += ddl_tensor_numel(p);
        bytes += pb;
    }
    /* hand out parameter indices per bucket, in order */
    int at = 0;
    ddl_status st = DDL_OK;
    for (int k = 0; k < nb && !st; k++) {
        b[k].params = malloc(sizeof(int) * (size_t)b[k].n);
        if (!b[k].params) st = ddl_fail(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
        for (int j = 0; !st && j < b[k].n; j++) b[k].params[j] = order[at++];
        if (!st && b[k].n > 1) st = ddl_tensor_zeros(&b[k].buf, b[k].dtype, 1, &b[k].numel);
    }
    /* views, and the current gradients moved into them */
    ddl_tensor **views = calloc((size_t)r->n + 1, sizeof *views);
    if (!views && !st) st = ddl_fail(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
    for (int k = 0; k < nb && !st; k++) {
        int64_t off = 0;
        if (b[k].n == 1) r->bucket_of[b[k].params[0]] = k;
        for (int j = 0; j < b[k].n && b[k].n > 1 && !st; j++) {
            int i = b[k].params[j];
            ddl_tensor *p = r->params[i];
            int64_t strides[DDL_MAX_DIMS];
            ddl_contiguous_strides(strides, p->ndim, p->shape);
            st = ddl_tensor_from_storage(&views[i], b[k].buf->storage, p->dtype, p->ndim, p->shape,
                                         strides, off);
            if (!st && p->grad) st = ddl_copy_(views[i], p->grad);
            if (!st && p->grad) {
                ddl_tensor_release(p->grad);
                ddl_tensor_retain(views[i]);
                p->grad = views[i];
            }
            r->bucket_of[i] = k;
            off += ddl_tensor_numel(p);
        }
    }
    if (st) {
        for (int k = 0; k < nb; k++) {
            free(b[k].params);
            ddl_tensor_release(b[k].buf);
        }
        free(b);
        if (views)
            for (int i = 0; i < r->n; i++) ddl_tensor_release(views[i]);
        free(views);
        return st;
    }
    free_buckets(r);
    if (r->views)
        for (int i = 0; i < r->n; i++) ddl_tensor_release(r->views[i]);
    free(r->views);
    r->views = views;
    r->b = b;
    r->nb = nb;
    return DDL_OK;
}

/* Wait for every queued bucket; the first error wins. */
static ddl_status wait_all(ddl_reducer *r) {
    ddl_status first = DDL_OK;
    char msg[1024] = "";
    ddl_error_info info;
    for (int k = 0; k < r->nb; k++) {
        bucket *bk = &r->b[k];
        if (!bk->work) continue;
        ddl_status st = ddl_work_wait(bk->work, -1);
        ddl_work_times(bk->work, &bk->t_start, &bk->t_end);
        if (st && !first) {
            first = st;
            snprintf(msg, sizeof msg, "%s", ddl_last_error());
            info = *ddl_last_error_info();
        }
        ddl_work_free(bk->work);
        bk->work = NULL;
    }
    if (first) { /* the first failure, with its fields (ranks, op, ...), as it was */
        ddl_fail(first, "%s", msg);
        *ddl_error_detail() = info;
    }
    return first;
}

/* The tensor bucket k all-reduces: its flat buffer, or its one parameter's gradient. */
static ddl_tensor *bucket_tensor(const ddl_reducer *r, const bucket *bk) {
    return bk->buf ? bk->buf : r->params[bk->params[0]]->grad;
}

/* Start every bucket that is complete and whose predecessors are started: the same order on
 * every rank, whatever order gradients arrive in. The last bucket (and every bucket when
 * overlap is off) runs on this thread, once those before it are done: no hand-off to the comm
 * thread and no wake-up on the way back, which on a busy machine can cost a scheduler tick.
 * After the last one every bucket is reduced. */
static ddl_status launch_ready(ddl_reducer *r) {
    while (r->next_launch < r->nb && r->b[r->next_launch].pending == 0) {
        bucket *bk = &r->b[r->next_launch];
        int last = r->next_launch == r->nb - 1;
        r->next_launch++;
        if (r->local) continue;
        ddl_status st;
        if (r->overlap && !last) {
            st = ddl_pg_allreduce(r->pg, bucket_tensor(r, bk), DDL_COMM_AVG, 0, &bk->work);
        } else {
            st = wait_all(r);
            bk->t_start = ddl_now_us();
            if (!st) st = ddl_pg_allreduce(r->pg, bucket_tensor(r, bk), DDL_COMM_AVG, 0, NULL);
            bk->t_end = ddl_now_us();
        }
        if (st) {
            r->in_iteration = 0; /* the group reports its failure again on the next call */
            wait_all(r);
            return st;
        }
    }
    if (r->next_launch == r->nb) {
        r->in_iteration = 0;
        return wait_all(r);
    }
    return DDL_OK;
}

/* Make p's .grad the tensor its bucket reduces: its slot of the flat buffer (copying the
 * gradient there unless it already is that slot), or, alone in its bucket, a contiguous
 * gradient of p's dtype (the engine's own result normally is one: kept as it is). */
static ddl_status attach_grad(ddl_reducer *r, int i) {
    ddl_tensor *p = r->params[i];
    if (r->views[i]) {
        if (p->grad == r->views[i]) return DDL_OK;
        DDL_TRY(p->grad ? ddl_copy_(r->views[i], p->grad) : ddl_zero_(r->views[i]));
        ddl_tensor_release(p->grad);
        p->grad = ddl_tensor_retain(r->views[i]);
        return DDL_OK;
    }
    ddl_tensor *g = p->grad, *own;
    if (!g) {
        DDL_TRY(ddl_tensor_zeros(&own, p->dtype, p->ndim, p->shape));
    } else if (g->dtype != p->dtype || !ddl_tensor_is_contiguous(g)) {
        DDL_TRY(ddl_tensor_to(&own, g, p->dtype));
    } else {
        return DDL_OK;
    }
    ddl_tensor_release(p->grad);
    p->grad = own;
    return DDL_OK;
}

static ddl_status on_grad_ready(ddl_tensor *leaf, void *vctx) {
    hook_ctx *hc = vctx;
    ddl_reducer *r = hc->r;
    int i = hc->index;
    (void)leaf;                          /* == r->params[i] */
    if (!r->in_iteration) return DDL_OK; /* backward without a DDP forward: plain accumulation */
    if (r->ready[i])
        DDL_FAIL(DDL_E_VALUE,
                 "DistributedDataParallel: parameter %d got a gradient twice in one iteration "
                 "(a second backward through the same forward?); run forward again first",
                 i);
    r->ready[i] = 1;
    if (!r->rebuilt && r->ready_count < r->n) r->ready_order[r->ready_count++] = i;
    DDL_TRY(attach_grad(r, i));
    if (!r->iter_sync) return DDL_OK;
    r->b[r->bucket_of[i]].pending--;
    return launch_ready(r);
}

ddl_status ddl_reducer_new(ddl_reducer **out, ddl_pg *pg, int n, ddl_tensor *const *params,
                           int64_t bucket_cap_bytes, int64_t first_bucket_bytes) {
    if (n < 1)
        DDL_FAIL(DDL_E_VALUE, "DistributedDataParallel: the module has no parameters "
                              "that require gradients");
    for (int i = 0; i < n; i++) {
        if (!ddl_dtype_is_float(params[i]->dtype) || !ddl_tensor_is_contiguous(params[i]))
            DDL_FAIL(DDL_E_VALUE,
                     "DistributedDataParallel: parameter %d must be a contiguous "
                     "float tensor",
                     i);
        if (ddl_tensor_get_hook(params[i], NULL))
            DDL_FAIL(DDL_E_VALUE,
                     "DistributedDataParallel: parameter %d already has a gradient "
                     "hook; register hooks after wrapping is not supported",
                     i);
    }
    ddl_reducer *r = calloc(1, sizeof *r);
    if (!r) DDL_FAIL(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
    r->pg = ddl_pg_retain(pg); /* the group's memory outlives us, even if destroyed */
    r->n = n;
    r->cap = bucket_cap_bytes > 0 ? bucket_cap_bytes : 25 << 20;
    r->first_cap = first_bucket_bytes > 0 ? first_bucket_bytes : 1 << 20;
    r->sync = 1;
    r->local = ddl_pg_size(pg) == 1;
    r->overlap = 1;
    r->params = calloc((size_t)n, sizeof *r->params);
    r->hooks = calloc((size_t)n, sizeof *r->hooks);
    r->bucket_of = calloc((size_t)n, sizeof *r->bucket_of);
    r->ready = calloc((size_t)n, 1);
    r->ready_order = calloc((size_t)n, sizeof *r->ready_order);
    int *order = malloc(sizeof(int) * (size_t)n);
    ddl_status st = DDL_OK;
    if (!r->params || !r->hooks || !r->bucket_of || !r->ready || !r->ready_order || !order)
        st = ddl_fail(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
    for (int i = 0; !st && i < n; i++) {
        r->params[i] = params[i];
        ddl_tensor_retain(params[i]);
        order[i] = n - 1 - i; /* reverse registration order: roughly when grads get ready */
    }
    if (!st) st = build_buckets(r, order);
    free(order);
    if (st) {
        ddl_reducer_free(r);
        return st;
    }
    for (int i = 0; !st && i < n; i++) {
        r->hooks[i].r = r;
        r->hooks[i].index = i;
        st = ddl_tensor_set_hook(params[i], on_grad_ready, &r->hooks[i], NULL);
    }
    if (st) {
        ddl_reducer_free(r); /* removes the hooks it set */
        return st;
    }
    *out = r;
    return DDL_OK;
}

void ddl_reducer_free(ddl_reducer *r) {
    if (!r) return;
    if (r->b) wait_all(r);
    for (int i = 0; i < r->n; i++)
        if (r->params && r->params[i]) {
            if (ddl_tensor_get_hook(r->params[i], NULL) == on_grad_ready)
                ddl_tensor_set_hook(r->params[i], NULL, NULL, NULL);
            ddl_tensor_release(r->params[i]);
        }
    if (r->views)
        for (int i = 0; i < r->n; i++) ddl_tensor_release(r->views[i]);
    free_buckets(r);
    free(r->views);
    free(r->params);
    free(r->hooks);
    free(r->bucket_of);
    free(r->ready);
    free(r->ready_order);
    ddl_tensor_release(r->packed_t);
    ddl_pg_release(r->pg);
    free(r);
}

int ddl_reducer_pending(const ddl_reducer *r, int *idx, int cap) {
    int k = 0;
    for (int i = 0; i < r->n; i++)
        if (!r->ready[i]) {
            if (k < cap) idx[k] = i;
            k++;
        }
    return k;
}

ddl_status ddl_reducer_prepare(ddl_reducer *r, const uint8_t *unused) {
    if (r->in_iteration && r->iter_sync) {
        /* the last iteration never completed: some parameters got no gradient */
        int first[8], k = ddl_reducer_pending(r, first, 8);
        char list[160] = "";
        size_t at = 0;
        for (int j = 0; j < k && j < 8 && at < sizeof list; j++)
            at += (size_t)snprintf(list + at, sizeof list - at, j ? ", %d" : "%d", first[j]);
        ddl_status ws = wait_all(r);
        r->in_iteration = 0;
        if (ws) return ws;
        DDL_FAIL(DDL_E_VALUE,
                 "DistributedDataParallel: the previous iteration did not finish reducing: %d "
                 "parameter(s) got no gradient (indices %s%s). Pass find_unused_parameters=True "
                 "if parts of the model are not used in every forward, or make sure every output "
                 "takes part in the loss",
                 k, list, k > 8 ? ", ..." : "");
    }
    ddl_status st = wait_all(r); /* nothing should be in flight; be safe */
    if (st) return st;
    /* A gradient left unset stays unset until the engine's hook: its result is then copied
     * into the bucket (or, alone in its bucket, reduced where it is), which costs less than
     * zeroing the slot here for the engine to add into. A gradient accumulating (no_sync, or
     * zeroed in place) is already where it belongs. */
    for (int i = 0; i < r->n; i++) {
        ddl_tensor *p = r->params[i];
        if (p->grad && p->grad != r->views[i] && r->views[i]) DDL_TRY(attach_grad(r, i));
    }
    memset(r->ready, 0, (size_t)r->n);
    for (int k = 0; k < r->nb; k++) r->b[k].pending = r->b[k].n;
    r->next_launch = 0;
    r->in_iteration = 1;
    r->iter_sync = r->sync;
    if (!r->rebuilt) r->ready_count = 0;
    if (unused) {
        for (int i = 0; i < r->n; i++)
            if (unused[i]) { /* no gradient this pass: reduce zeros (or what accumulated) */
                DDL_TRY(attach_grad(r, i));
                r->ready[i] = 1;
                if (r->iter_sync) r->b[r->bucket_of[i]].pending--;
            }
        if (r->iter_sync) return launch_ready(r);
    }
    return DDL_OK;
}

void ddl_reducer_set_sync(ddl_reducer *r, int sync) { r->sync = sync != 0; }

void ddl_reducer_set_overlap(ddl_reducer *r, int overlap) { r->overlap = overlap != 0; }

/* Bytes of t, rounded up to whole int64 words (the packing unit). */
static int64_t packed_words(const ddl_tensor *t) {
    int64_t bytes = ddl_tensor_numel(t) * (int64_t)ddl_dtype_size(t->dtype);
    return (bytes + 7) / 8;
}

ddl_status ddl_reducer_sync_buffers(ddl_reducer *r, int n, ddl_tensor *const *bufs) {
    int64_t words = 0;
    for (int i = 0; i < n; i++) {
        if (!ddl_tensor_is_contiguous(bufs[i]))
            DDL_FAIL(DDL_E_VALUE, "DistributedDataParallel: buffer %d is not contiguous", i);
        words += packed_words(bufs[i]);
    }
    if (r->local || words == 0) return DDL_OK;
    if (!r->packed_t || r->packed_cap != words) { /* the first step, or the buffers changed */
        ddl_tensor_release(r->packed_t);
        r->packed_t = NULL;
        DDL_TRY(ddl_tensor_empty(&r->packed_t, DDL_INT64, 1, &words));
        r->packed = ddl_tensor_data(r->packed_t);
        r->packed_cap = words;
    }
    int root = ddl_pg_rank(r->pg) == 0;
    int64_t at = 0;
    if (root)
        for (int i = 0; i < n; i++) { /* a byte copy: any dtype travels bit for bit */
            size_t bytes = (size_t)ddl_tensor_numel(bufs[i]) * ddl_dtype_size(bufs[i]->dtype);
            memcpy(r->packed + at, ddl_tensor_data(bufs[i]), bytes);
            at += packed_words(bufs[i]);
        }
    DDL_TRY(ddl_pg_broadcast(r->pg, r->packed_t, 0, 0, NULL));
    if (!root)
        for (int i = 0; i < n; i++) {
            size_t bytes = (size_t)ddl_tensor_numel(bufs[i]) * ddl_dtype_size(bufs[i]->dtype);
            memcpy(ddl_tensor_data(bufs[i]), r->packed + at, bytes);
            at += packed_words(bufs[i]);
        }
    return DDL_OK;
}

ddl_status ddl_reducer_rebuild(ddl_reducer *r) {
    if (r->rebuilt) return DDL_OK;
    r->rebuilt = 1;
    /* rank 0's observed order, completed with any parameter it did not see */
    int64_t n = r->n;
    ddl_tensor *ord;
    DDL_TRY(ddl_tensor_empty(&ord, DDL_INT64, 1, &n));
    int64_t *o = ddl_tensor_data(ord);
    uint8_t *seen = calloc((size_t)r->n, 1);
    if (!seen) {
        ddl_tensor_release(ord);
        DDL_FAIL(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
    }
    int k = 0;
    for (int j = 0; j < r->ready_count; j++)
        if (!seen[r->ready_order[j]]) seen[r->ready_order[j]] = 1, o[k++] = r->ready_order[j];
    for (int i = r->n - 1; i >= 0; i--)
        if (!seen[i]) o[k++] = i;
    free(seen);
    ddl_status st = ddl_pg_broadcast(r->pg, ord, 0, 0, NULL);
    int *order = malloc(sizeof(int) * (size_t)r->n);
    if (!order && !st) st = ddl_fail(DDL_E_NOMEM, "DistributedDataParallel: out of memory");
    for (int i = 0; !st && i < r->n; i++) {
        if (o[i] < 0 || o[i] >= r->n)
            st = ddl_fail(DDL_E_INTERNAL, "bad bucket order from rank 0");
        else
            order[i] = (int)o[i];
    }
    if (!st) st = build_buckets(r, order);
    free(order);
    ddl_tensor_release(ord);
    return st;
}

ddl_status ddl_reducer_shadow(ddl_reducer *r) {
    for (int k = 0; k < r->nb; k++) {
        ddl_tensor *z;
        DDL_TRY(ddl_tensor_zeros(&z, r->b[k].dtype, 1, &r->b[k].numel));
        ddl_status st = ddl_pg_allreduce(r->pg, z, DDL_COMM_AVG, 0, NULL);
        ddl_tensor_release(z);
        DDL_TRY(st);
    }
    return DDL_OK;
}

int ddl_reducer_num_buckets(const ddl_reducer *r) { return r->nb; }

int ddl_reducer_bucket_params(const ddl_reducer *r, int b, int *idx, int cap) {
    if (b < 0 || b >= r->nb) return 0;
    for (int j = 0; j < r->b[b].n && j < cap; j++) idx[j] = r->b[b].params[j];
    return r->b[b].n;
}

void ddl_reducer_bucket_times(const ddl_reducer *r, int b, int64_t *start_us, int64_t *end_us) {
    *start_us = *end_us = 0;
    if (b >= 0 && b < r->nb) *start_us = r->b[b].t_start, *end_us = r->b[b].t_end;
}

/* ---- differentiable allreduce ------------------------------------------------------------ */

static ddl_status allreduce_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                     const int *need) {
    (void)need;
    ddl_pg *pg = (ddl_pg *)(intptr_t)n->iargs[0];
    ddl_tensor *g;
    DDL_TRY(ddl_tensor_to(&g, dout, n->in[0].dtype)); /* a private contiguous copy */
    ddl_status st = ddl_pg_allreduce(pg, g, DDL_COMM_SUM, 0, NULL);
    if (st)
        ddl_tensor_release(g);
    else
        dinp[0] = g;
    return st;
}

ddl_status ddl_ag_allreduce_sum(ddl_tensor **out, ddl_pg *pg, const ddl_tensor *t) {
    ddl_tensor *o;
    DDL_TRY(ddl_tensor_clone(&o, t));
    ddl_status st = ddl_pg_allreduce(pg, o, DDL_COMM_SUM, 0, NULL);
    ddl_node *n = NULL;
    if (!st) st = ddl_node_record(&n, o, "AllreduceBackward", allreduce_backward, 1, &t);
    if (!st && n) n->iargs[0] = (int64_t)(intptr_t)pg;
    if (st)
        ddl_tensor_release(o);
    else
        *out = o;
    return st;
}
