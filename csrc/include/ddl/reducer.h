/* reducer.h: the DDP gradient reducer: buckets of parameters whose gradients live in one flat
 * buffer each, all-reduced (averaged) on the group's comm thread as soon as every gradient of
 * a bucket is final, while backward goes on.
 *
 * Life of one iteration:
 *   ddl_reducer_prepare()  at forward time: attaches each parameter's .grad to its slot of the
 *                          bucket buffer (zeroed where the gradient was unset; kept when
 *                          accumulating), marks the given unused parameters ready.
 *   backward               the leaf hook of each parameter marks it ready; a bucket whose
 *                          parameters are all ready is queued for allreduce, always in bucket
 *                          order so every rank issues the same sequence; when the last bucket
 *                          is queued the hook waits for all of them, so backward returns with
 *                          averaged gradients.
 *   no_sync                ddl_reducer_set_sync(r, 0): hooks only accumulate.
 *
 * A gradient unset at the hook is the engine's own result: copied into its slot, or, for a
 * parameter alone in its bucket (any parameter larger than the bucket cap), reduced where it
 * is. The last bucket always runs on the thread that finishes backward; the others go to the
 * group's comm thread (overlap on) or run there too (overlap off: better when every core
 * already runs a rank). A group of one rank communicates nothing.
 */
#ifndef DDL_REDUCER_H
#define DDL_REDUCER_H

#include "comm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ddl_reducer ddl_reducer;

/* params: the n parameters that require grad, in registration order (float32/float64,
 * contiguous, retained by the reducer). Buckets are filled in reverse order, the first capped
 * at first_bucket_bytes and the rest at bucket_cap_bytes, never mixing dtypes; a parameter of
 * first_bucket_bytes or more is alone in its bucket. */
ddl_status ddl_reducer_new(ddl_reducer **out, ddl_pg *pg, int n, ddl_tensor *const *params,
                           int64_t bucket_cap_bytes, int64_t first_bucket_bytes);
void ddl_reducer_free(ddl_reducer *r);

/* Start an iteration. unused[i] != 0 marks parameter i as getting no gradient this pass
 * (find_unused_parameters); NULL: all are expected. Fails (naming the parameter indices) when
 * the previous iteration's reduction did not finish because some parameters got no gradient. */
ddl_status ddl_reducer_prepare(ddl_reducer *r, const uint8_t *unused);
void ddl_reducer_set_sync(ddl_reducer *r, int sync);
/* overlap != 0 (the default): buckets before the last are all-reduced on the comm thread while
 * backward goes on; 0: on the thread running backward, in place, as each becomes ready. */
void ddl_reducer_set_overlap(ddl_reducer *r, int overlap);
/* Broadcast the n buffers (module buffers: running statistics, counters; contiguous, any
 * dtype) from the group's rank 0, packed byte for byte into one message (a scratch kept by the
 * reducer): one collective per forward however many buffers. */
ddl_status ddl_reducer_sync_buffers(ddl_reducer *r, int n, ddl_tensor *const *bufs);
/* Parameters (by index) still waiting for a gradient in the current iteration; returns the
 * count written to idx (at most cap). */
int ddl_reducer_pending(const ddl_reducer *r, int *idx, int cap);
/* Re-bucket by the order gradients became ready in the last iteration, taken from rank 0 so
 * every rank agrees. Call between iterations, once. */
ddl_status ddl_reducer_rebuild(ddl_reducer *r);
/* Shadow one iteration for ranks that ran out of data (Join): all-reduce zeros in every
 * bucket, matching the collectives of the ranks still training. */
ddl_status ddl_reducer_shadow(ddl_reducer *r);

/* Introspection for tests and benchmarks. */
int ddl_reducer_num_buckets(const ddl_reducer *r);
/* parameter indices of bucket b (returns the count, writes at most cap) */
int ddl_reducer_bucket_params(const ddl_reducer *r, int b, int *idx, int cap);
/* comm-thread start/end (ddl_now_us) of each bucket's last allreduce */
void ddl_reducer_bucket_times(const ddl_reducer *r, int b, int64_t *start_us, int64_t *end_us);

/* A differentiable SUM all-reduce (SyncBatchNorm): out = sum over ranks of t; its backward
 * all-reduces the gradient the same way. */
ddl_status ddl_ag_allreduce_sum(ddl_tensor **out, ddl_pg *pg, const ddl_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
