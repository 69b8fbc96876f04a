/* comm.h: process groups and collectives, part of the C API. Implemented in csrc/comm/: pg.cc
 * (the group, its queue and thread, these entry points), agreement.cc (descriptors),
 * failure.cc (diagnosis, watchdog), select.cc (the transport choice), over a transport
 * (transport.h; Gloo over TCP in csrc/comm/gloo/, the only code that calls Gloo besides
 * csrc/store/redis.cc; shared memory among the ranks of one host in csrc/comm/shm/).
 *
 * On shared memory (the default when every rank runs on one host) the descriptor below
 * travels in the segment with the data, a collective runs on the caller's thread whatever its
 * size when nothing is queued, and a dead peer is found through its pidfd within ~20 ms.
 *
 * A process group (`ddl_pg`) is one transport (a shared-memory segment when every rank runs on
 * one host, a Gloo context over TCP otherwise, both for a group spanning hosts with several
 * ranks on some) plus a communication thread with a FIFO queue: every collective is queued there and runs in the order it was issued, so the
 * caller may wait for it (sync) or keep the work handle and wait later (async), for example
 * while backward computes the next gradients.
 *
 * Safety, always on:
 *  - Agreement before data: each collective first sends a 64-byte descriptor (sequence
 *    number, op, dtype, element count, root, reduce op) from every rank to every rank in one
 *    all-to-all step; if any rank differs, every rank fails with DDL_E_COMM describing both
 *    sides, before a buffer reaches Gloo (Gloo aborts the process on size mismatches). Small
 *    allreduces (up to 4 KiB, or up to 64 KiB when the previous allreduce had the same size)
 *    travel inside that step, so they cost one exchange in all.
 *  - Synchronous calls of at most 64 KiB run on the caller's thread when nothing is queued;
 *    larger ones, asynchronous ones (and DDP's buckets) on the group's comm thread, always in
 *    issue order.
 *  - Failures: a dead peer, a closed connection or a timeout fails the collective on every
 *    surviving rank with a message naming the op, its sequence number and the peer rank(s),
 *    and the same as fields of ddl_last_error_info() (rank, ranks at fault, op as the C API
 *    names it: "allreduce", seq, the peer's address, errno when known); the group is then
 *    broken and later calls fail at once with the same message and fields. The first
 *    ranks to see a connection fail close theirs at once (so every rank fails within
 *    milliseconds) and every failing rank reports in the store: ranks with no report within
 *    1 s are named as dead; after a timeout, the ranks that never reached the collective.
 *    A per-group watchdog thread releases the waiter of a collective stuck in a Gloo transfer
 *    whose connection died (Gloo would hold it until the timeout); see comm/failure.cc, watch().
 *  - Gloo's C++ exceptions never cross into C; SIGPIPE is ignored (Gloo writes without
 *    MSG_NOSIGNAL).
 */
#ifndef DDL_COMM_H
#define DDL_COMM_H

#include "autograd.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ddl_pg ddl_pg;

typedef struct ddl_work ddl_work;

typedef enum {
    DDL_COMM_SUM = 0,
    DDL_COMM_AVG,
    DDL_COMM_MIN,
    DDL_COMM_MAX,
    DDL_COMM_PRODUCT,
    DDL_COMM_NUM_OPS
} ddl_comm_op;

typedef enum {
    DDL_COLL_ALLREDUCE = 1,
    DDL_COLL_BROADCAST,
    DDL_COLL_ALLGATHER,
    DDL_COLL_REDUCE_SCATTER,
    DDL_COLL_REDUCE,
    DDL_COLL_GATHER,
    DDL_COLL_SCATTER,
    DDL_COLL_ALLTOALL,
    DDL_COLL_BARRIER,
} ddl_coll;

/* Join a group of `size` ranks as `rank`: rendezvous through `store` under `prefix` (distinct
 * per group), binding Gloo's TCP device to `hostname` (an address of this machine; NULL uses
 * `iface`, a network interface name, and when both are NULL 127.0.0.1). The store must outlive
 * the group. Ranks that do not join within timeout_ms are named in the DDL_E_TIMEOUT error
 * (and its record: op "join", ranks);
 * ranks started with a different `size` fail every rank at once with DDL_E_VALUE. */
ddl_status ddl_pg_new(ddl_pg **out, ddl_store *store, const char *prefix, int rank, int size,
                      const char *hostname, const char *iface, int64_t timeout_ms);

/* Which transport a group moves its data with. AUTO: shared memory (csrc/comm/shm/) when every
 * rank of the group runs on one host (same hostname, boot id and network namespace, or the
 * same DDL_HOST_ID) and the segment proved visible to all, else Gloo over TCP. GLOO: always
 * Gloo. SHM: shared memory, or DDL_E_VALUE when the ranks span hosts. */
typedef enum { DDL_TRANSPORT_AUTO = 0, DDL_TRANSPORT_GLOO, DDL_TRANSPORT_SHM } ddl_transport;
/* ddl_pg_new with the transport chosen by `transport` (ddl_pg_new reads DDL_COMM_TRANSPORT:
 * "auto" (or unset), "gloo", "shm"; any other value is DDL_E_VALUE). Every rank must pass the
 * same mode. */
ddl_status ddl_pg_new_transport(ddl_pg **out, ddl_store *store, const char *prefix, int rank,
                                int size, const char *hostname, const char *iface,
                                int64_t timeout_ms, ddl_transport transport);
/* The transport the group uses ("shm", "gloo") and the number of distinct hosts its ranks
 * run on. */
const char *ddl_pg_transport(const ddl_pg *pg);
int ddl_pg_num_hosts(const ddl_pg *pg);
/* A group is refcounted: ddl_pg_new's reference and one per ddl_pg_retain (which returns pg),
 * each given back with ddl_pg_release; the last frees it (NULL is a no-op for both). Holders
 * that must not outlive the group's memory (the DDP reducer) take references. */
ddl_pg *ddl_pg_retain(ddl_pg *pg);
void ddl_pg_release(ddl_pg *pg);
/* Drain the queue, stop the thread and close the connections now, whoever still holds a
 * reference: later collectives on the group fail with DDL_E_VALUE. Idempotent; NULL is a
 * no-op. The caller still releases its reference. */
void ddl_pg_shutdown(ddl_pg *pg);
int ddl_pg_rank(const ddl_pg *pg);
int ddl_pg_size(const ddl_pg *pg);
/* DDL_OK, or the error that broke the group (message set). */
ddl_status ddl_pg_check(const ddl_pg *pg);

/* Collectives. Tensors must be contiguous float32/float64/int64 (int64 AVG is an error);
 * they are updated in place and kept alive until the work completes. timeout_ms 0 uses the
 * group's. With `work` NULL the call waits; else *work is a handle for ddl_work_wait. */
ddl_status ddl_pg_allreduce(ddl_pg *pg, ddl_tensor *t, ddl_comm_op op, int64_t timeout_ms,
                            ddl_work **work);
ddl_status ddl_pg_broadcast(ddl_pg *pg, ddl_tensor *t, int root, int64_t timeout_ms,
                            ddl_work **work);
/* out (size * numel(in)) = every rank's `in`, in rank order */
ddl_status ddl_pg_allgather(ddl_pg *pg, ddl_tensor *out, const ddl_tensor *in, int64_t timeout_ms,
                            ddl_work **work);
/* out (n) = reduction over ranks of their in[rank*n .. (rank+1)*n) chunk; in (size * n) */
ddl_status ddl_pg_reduce_scatter(ddl_pg *pg, ddl_tensor *out, const ddl_tensor *in, ddl_comm_op op,
                                 int64_t timeout_ms, ddl_work **work);
/* t on root = reduction of every rank's t (other ranks' t is left as it was) */
ddl_status ddl_pg_reduce(ddl_pg *pg, ddl_tensor *t, int root, ddl_comm_op op, int64_t timeout_ms,
                         ddl_work **work);
/* out on root (size * numel(in)) = every rank's in; out NULL on other ranks */
ddl_status ddl_pg_gather(ddl_pg *pg, ddl_tensor *out, const ddl_tensor *in, int root,
                         int64_t timeout_ms, ddl_work **work);
/* out = chunk `rank` of root's in (size * numel(out)); in NULL on other ranks */
ddl_status ddl_pg_scatter(ddl_pg *pg, ddl_tensor *out, const ddl_tensor *in, int root,
                          int64_t timeout_ms, ddl_work **work);
/* out chunk j = rank j's in chunk `rank`; in and out (size * chunk) */
ddl_status ddl_pg_alltoall(ddl_pg *pg, ddl_tensor *out, const ddl_tensor *in, int64_t timeout_ms,
                           ddl_work **work);
ddl_status ddl_pg_barrier(ddl_pg *pg, int64_t timeout_ms, ddl_work **work);

/* Wait for a work item: its status (message set). timeout_ms < 0 waits as long as it takes
 * (the collective has its own timeout, so it ends). */
ddl_status ddl_work_wait(ddl_work *w, int64_t timeout_ms);
int ddl_work_is_completed(ddl_work *w);
void ddl_work_free(ddl_work *w);
/* Microseconds (since an arbitrary epoch) when the comm thread started / finished the work:
 * lets tests and benchmarks see overlap with backward. */
void ddl_work_times(ddl_work *w, int64_t *start_us, int64_t *end_us);
int64_t ddl_now_us(void);

/* Gloo version ("0.5.0") and a one-rank allreduce over a loopback TCP device: proves that the
 * Gloo shim is compiled, linked and working. */
const char *ddl_gloo_version(void);
ddl_status ddl_gloo_selftest(double *result);

#ifdef __cplusplus
}
#endif
#endif
