// pg.cc: the process group, whatever its transport: the join, the FIFO queue and the
// communication thread that runs every collective in issue order, work handles, and the
// extern "C" ddl_pg_* / ddl_work_* entry points (argument checks, then submit()).
// No C++ exception crosses into C: each entry point catches and maps to a ddl_status.
#include "comm/pg.h"

#include "comm/select.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

using namespace ddl_comm;

int64_t ddl_comm::now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void ddl_work::finish(const Failure& f) {
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    a = b = nullptr;
    complete_early(f);
}

void ddl_work::complete_early(const Failure& f) {
    std::lock_guard<std::mutex> lock(this->m);
    if (done) return;
    result = f;
    t_end = now_us();
    done = true;
    cv.notify_all();
}

void ddl_pg::execute(ddl_work* w) {
    w->t_start = now_us();
    if (broken.load()) {
        w->finish(broken_f);
        return;
    }
    if (size > 1) {
        std::lock_guard<std::mutex> lock(wm);
        running = w;
        running_since = w->t_start;
    }
    struct Unwatch { // however execute leaves, the watchdog stops looking at w first
        ddl_pg* pg;
        ~Unwatch() {
            std::lock_guard<std::mutex> lock(pg->wm);
            pg->running = nullptr;
        }
    } unwatch{this};
    try {
        const Descriptor& d = w->desc;
        void* pa = w->a ? ddl_tensor_data(w->a) : nullptr;
        void* pb = w->b ? ddl_tensor_data(w->b) : nullptr;
        // a barrier is the exchange itself: every rank has heard from every other; one rank
        // needs no agreement (the transport handles it locally)
        if (transport->agrees_itself()) {
            transport->run(d, pa, pb, w->timeout_ms); // the descriptor travels with the data
        } else {
            bool done =
                size > 1 ? agreement.agree(*transport, rank, size, d, pa, w->timeout_ms) : false;
            if (!done && d.coll != DDL_COLL_BARRIER) transport->run(d, pa, pb, w->timeout_ms);
        }
        w->finish(Failure()); // (if the watchdog completed w already, its result stands)
    } catch (...) {
        fail(w);
    }
}

void ddl_pg::run() {
    for (;;) {
        ddl_work* w;
        {
            std::unique_lock<std::mutex> lock(qm);
            qcv.wait(lock, [&] { return !busy && (stopping || !queue.empty()); });
            if (queue.empty()) {
                thread_exited = true;
                qcv.notify_all();
                return;
            }
            w = queue.front();
            queue.pop_front();
            busy = true;
        }
        execute(w);
        ddl_work_free(w); // the queue's reference
        std::lock_guard<std::mutex> lock(qm);
        busy = false;
    }
}

namespace {

// Every rank announces itself with its world size, so a rank that never comes is named and
// ranks started with different world sizes fail at once (one deadline).
void join(GroupStore& store, int rank, int size, int64_t timeout_ms) {
    const std::string my_size = std::to_string(size);
    store.set("ddl/joined/" + std::to_string(rank), my_size);
    int64_t deadline = now_us() + timeout_ms * 1000;
    for (int r = 0; r < size; r++) {
        std::string v;
        int64_t left = std::max<int64_t>(0, (deadline - now_us()) / 1000);
        ddl_status st = store.get_status("ddl/joined/" + std::to_string(r), &v, left);
        if (st == DDL_E_TIMEOUT) {
            std::set<int> missing{r};
            for (int q = r + 1; q < size; q++)
                if (store.get_status("ddl/joined/" + std::to_string(q), &v, 0) != DDL_OK)
                    missing.insert(q);
            throw DdlError(Failure(DDL_E_TIMEOUT, "process group: rank(s) " + rank_list(missing) +
                                                      " of " + my_size + " never joined within " +
                                                      std::to_string(timeout_ms) + " ms")
                               .op("join")
                               .rank(rank)
                               .ranks(missing));
        }
        if (st != DDL_OK) {
            Failure f = Failure::last(st, "process group: waiting for rank " + std::to_string(r) +
                                              " to join: ");
            throw DdlError(f.op("join").rank(rank).ranks({r}));
        }
        if (v != my_size)
            throw DdlError(Failure(DDL_E_VALUE, "process group: rank " + std::to_string(r) +
                                                    " was started with world size " + v +
                                                    " but rank " + std::to_string(rank) + " with " +
                                                    my_size +
                                                    ": every rank needs the same WORLD_SIZE")
                               .op("join")
                               .rank(rank)
                               .ranks({r}));
    }
}

void pg_shutdown(ddl_pg* pg) {
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        if (pg->shut_down) return;
        pg->shut_down = true;
        pg->stopping = true;
    }
    pg->qcv.notify_all();
    {
        std::lock_guard<std::mutex> lock(pg->wm);
        pg->watch_stop = true;
    }
    pg->wcv.notify_all();
    if (pg->watchdog.joinable()) pg->watchdog.join();
    if (pg->thread.joinable()) {
        // A broken group's comm thread may sit in a transfer that only the timeout ends (see
        // watch()): give it a moment, then leave it (and the group's memory) behind.
        bool exited = true;
        if (pg->broken.load()) {
            std::unique_lock<std::mutex> lock(pg->qm);
            exited = pg->qcv.wait_for(lock, std::chrono::milliseconds(200),
                                      [&] { return pg->thread_exited; });
        }
        if (exited) {
            pg->thread.join();
        } else {
            pg->thread.detach();
            pg->leaked = true;
        }
    }
    if (pg->transport) pg->transport->close();
}

ddl_status check_tensor(const ddl_tensor* t, const char* who, const char* arg) {
    if (!t) return ddl_fail(DDL_E_VALUE, "%s: %s is required", who, arg);
    if (!ddl_tensor_is_contiguous(t))
        return ddl_fail(DDL_E_VALUE, "%s: %s must be contiguous", who, arg);
    // the collectives reduce float32, float64 and int64; the narrow storage dtypes (int32,
    // float16, ...) would be read as one of those: refuse them (convert with .float()/.long())
    if (t->dtype == DDL_BOOL || ddl_dtype_compute(t->dtype) != t->dtype)
        return ddl_fail(DDL_E_TYPE, "%s: %s of dtype %s is not supported", who, arg,
                        ddl_dtype_name(t->dtype));
    return DDL_OK;
}

ddl_status check_root(const ddl_pg* pg, int root, const char* who) {
    if (root < 0 || root >= pg->size)
        return ddl_fail(DDL_E_VALUE, "%s: root %d is outside [0, %d)", who, root, pg->size);
    return DDL_OK;
}

ddl_status check_op(ddl_comm_op op, const ddl_tensor* t, const char* who) {
    if ((unsigned)op >= DDL_COMM_NUM_OPS) return ddl_fail(DDL_E_VALUE, "%s: bad op %d", who, op);
    if (op == DDL_COMM_AVG && t->dtype == DDL_INT64)
        return ddl_fail(DDL_E_TYPE, "%s: AVG needs a floating-point tensor, got int64", who);
    return DDL_OK;
}

// `whole` must hold the world size times `part`'s elements, of part's dtype.
ddl_status check_whole(const ddl_pg* pg, const char* who, const ddl_tensor* whole,
                       const char* whole_name, const ddl_tensor* part) {
    if (whole->dtype != part->dtype || ddl_tensor_numel(whole) != ddl_tensor_numel(part) * pg->size)
        return ddl_fail(DDL_E_VALUE, "%s: %s holds %lld %s elements; it needs %d x %lld %s", who,
                        whole_name, (long long)ddl_tensor_numel(whole),
                        ddl_dtype_name(whole->dtype), pg->size, (long long)ddl_tensor_numel(part),
                        ddl_dtype_name(part->dtype));
    return DDL_OK;
}

// Queue (or, when small, synchronous and nothing is queued, run here) the collective.
ddl_status submit(ddl_pg* pg, int coll, ddl_tensor* a, const ddl_tensor* b, int root, int redop,
                  int64_t count, int64_t timeout_ms, ddl_work** work) {
    if (pg->broken.load()) return pg->broken_f.raise();
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        if (pg->shut_down)
            return ddl_fail(DDL_E_VALUE, "%s: the process group was destroyed", coll_name(coll));
    }
    ddl_work* w = new (std::nothrow) ddl_work;
    if (!w) return ddl_fail(DDL_E_NOMEM, "%s: out of memory", coll_name(coll));
    w->desc.coll = coll;
    w->desc.dtype = a ? (int)a->dtype : (b ? (int)b->dtype : 0);
    w->desc.count = count;
    w->desc.count2 = 0;
    w->desc.root = root;
    w->desc.redop = redop;
    w->timeout_ms = timeout_ms > 0 ? timeout_ms : pg->timeout_ms;
    w->a = a ? ddl_tensor_retain(a) : nullptr;
    w->b = b ? ddl_tensor_retain(const_cast<ddl_tensor*>(b)) : nullptr;
    w->refs = 2; // the caller's and the queue's
    bool here = false;
    {
        std::lock_guard<std::mutex> lock(pg->qm);
        w->desc.seq = pg->next_seq++;
        // a synchronous call with nothing queued or running runs on the caller's thread (in
        // issue order all the same): no handoff to the comm thread and back, two thread
        // wake-ups fewer per call (small ones only: a large transfer can be stuck in the
        // transport after a failure until the watchdog completes the work for its waiter)
        here = !work && !pg->busy && pg->queue.empty() &&
               (pg->transport->runs_inline() ||
                (size_t)count * ddl_dtype_size((ddl_dtype)w->desc.dtype) <= kEagerMax);
        if (here)
            pg->busy = true;
        else
            pg->queue.push_back(w);
    }
    if (here) {
        pg->execute(w);
        ddl_work_free(w); // the queue's reference
        std::lock_guard<std::mutex> lock(pg->qm);
        pg->busy = false;
        pg->qcv.notify_all(); // under the lock: ddl_pg_release may delete pg once it sees !busy
    } else {
        pg->qcv.notify_one();
    }
    if (work) {
        *work = w;
        return DDL_OK;
    }
    ddl_status st = ddl_work_wait(w, -1);
    ddl_work_free(w);
    return st;
}

// gather and scatter: `part` on every rank, `whole` (world size x part) on the root only.
ddl_status rooted(ddl_pg* pg, int coll, ddl_tensor* out, const ddl_tensor* in, int root,
                  int64_t timeout_ms, ddl_work** work) {
    const char* who = coll_name(coll);
    bool gather = coll == DDL_COLL_GATHER;
    const ddl_tensor* part = gather ? in : out;
    const ddl_tensor* whole = gather ? out : in;
    const char* part_name = gather ? "input" : "output";
    const char* whole_name = gather ? "output" : "input";
    ddl_status st = check_tensor(part, who, part_name);
    if (!st) st = check_root(pg, root, who);
    if (!st && pg->rank == root) {
        st = check_tensor(whole, who, whole_name);
        if (!st) st = check_whole(pg, who, whole, whole_name, part);
    }
    if (st) return st;
    if (pg->rank != root && gather) out = nullptr;
    if (pg->rank != root && !gather) in = nullptr;
    return submit(pg, coll, out, in, root, 0, ddl_tensor_numel(part), timeout_ms, work);
}

} // namespace

extern "C" {

ddl_status ddl_pg_new(ddl_pg** out, ddl_store* store, const char* prefix, int rank, int size,
                      const char* hostname, const char* iface, int64_t timeout_ms) {
    const char* env = getenv("DDL_COMM_TRANSPORT");
    ddl_transport mode = DDL_TRANSPORT_AUTO;
    if (env && *env && strcmp(env, "auto") != 0) {
        if (!strcmp(env, "gloo"))
            mode = DDL_TRANSPORT_GLOO;
        else if (!strcmp(env, "shm"))
            mode = DDL_TRANSPORT_SHM;
        else
            return ddl_fail(DDL_E_VALUE,
                            "process group: DDL_COMM_TRANSPORT=%s: use auto, gloo or shm", env);
    }
    return ddl_pg_new_transport(out, store, prefix, rank, size, hostname, iface, timeout_ms, mode);
}

ddl_status ddl_pg_new_transport(ddl_pg** out, ddl_store* store, const char* prefix, int rank,
                                int size, const char* hostname, const char* iface,
                                int64_t timeout_ms, ddl_transport transport) {
    if ((unsigned)transport > DDL_TRANSPORT_SHM)
        return ddl_fail(DDL_E_VALUE, "process group: unknown transport %d", (int)transport);
    if (size < 1 || rank < 0 || rank >= size)
        return ddl_fail(DDL_E_VALUE, "process group: rank %d is outside [0, %d)", rank, size);
    if (!store) return ddl_fail(DDL_E_VALUE, "process group: a store is required");
    if (timeout_ms <= 0) timeout_ms = 30000;
    ddl_pg* pg = new (std::nothrow) ddl_pg;
    if (!pg) return ddl_fail(DDL_E_NOMEM, "process group: out of memory");
    try {
        pg->rank = rank;
        pg->size = size;
        pg->timeout_ms = timeout_ms;
        pg->store.reset(new GroupStore(store, prefix ? prefix : "ddl", timeout_ms));
        join(*pg->store, rank, size, timeout_ms);
        pg->transport = select_transport(*pg->store, rank, size, hostname ? hostname : "",
                                         iface ? iface : "", timeout_ms, transport, &pg->n_hosts);
        pg->thread = std::thread([pg] { pg->run(); });
        if (size > 1) pg->watchdog = std::thread([pg] { pg->watch(); });
        *out = pg;
        return DDL_OK;
    } catch (...) {
        ddl_status st = map_exception("process group");
        delete pg;
        return st;
    }
}

ddl_pg* ddl_pg_retain(ddl_pg* pg) {
    if (pg) pg->refs.fetch_add(1);
    return pg;
}

void ddl_pg_release(ddl_pg* pg) {
    if (pg && pg->refs.fetch_sub(1) == 1) {
        pg_shutdown(pg);
        if (!pg->leaked) delete pg;
    }
}

void ddl_pg_shutdown(ddl_pg* pg) {
    if (pg) pg_shutdown(pg);
}

int ddl_pg_rank(const ddl_pg* pg) { return pg->rank; }
const char* ddl_pg_transport(const ddl_pg* pg) { return pg->transport->name(); }
int ddl_pg_num_hosts(const ddl_pg* pg) { return pg->n_hosts; }
int ddl_pg_size(const ddl_pg* pg) { return pg->size; }

ddl_status ddl_pg_check(const ddl_pg* pg) {
    if (pg->broken.load()) return pg->broken_f.raise();
    return DDL_OK;
}

ddl_status ddl_pg_allreduce(ddl_pg* pg, ddl_tensor* t, ddl_comm_op op, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(t, "all_reduce", "tensor");
    if (!st) st = check_op(op, t, "all_reduce");
    if (st) return st;
    return submit(pg, DDL_COLL_ALLREDUCE, t, nullptr, 0, op, ddl_tensor_numel(t), timeout_ms, work);
}

ddl_status ddl_pg_broadcast(ddl_pg* pg, ddl_tensor* t, int root, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(t, "broadcast", "tensor");
    if (!st) st = check_root(pg, root, "broadcast");
    if (st) return st;
    return submit(pg, DDL_COLL_BROADCAST, t, nullptr, root, 0, ddl_tensor_numel(t), timeout_ms,
                  work);
}

ddl_status ddl_pg_allgather(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int64_t timeout_ms,
                            ddl_work** work) {
    ddl_status st = check_tensor(out, "all_gather", "output");
    if (!st) st = check_tensor(in, "all_gather", "input");
    if (!st) st = check_whole(pg, "all_gather", out, "output", in);
    if (st) return st;
    return submit(pg, DDL_COLL_ALLGATHER, out, in, 0, 0, ddl_tensor_numel(in), timeout_ms, work);
}

ddl_status ddl_pg_reduce_scatter(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, ddl_comm_op op,
                                 int64_t timeout_ms, ddl_work** work) {
    ddl_status st = check_tensor(out, "reduce_scatter", "output");
    if (!st) st = check_tensor(in, "reduce_scatter", "input");
    if (!st) st = check_op(op, out, "reduce_scatter");
    if (!st) st = check_whole(pg, "reduce_scatter", in, "input", out);
    if (st) return st;
    return submit(pg, DDL_COLL_REDUCE_SCATTER, out, in, 0, op, ddl_tensor_numel(out), timeout_ms,
                  work);
}

ddl_status ddl_pg_reduce(ddl_pg* pg, ddl_tensor* t, int root, ddl_comm_op op, int64_t timeout_ms,
                         ddl_work** work) {
    ddl_status st = check_tensor(t, "reduce", "tensor");
    if (!st) st = check_root(pg, root, "reduce");
    if (!st) st = check_op(op, t, "reduce");
    if (st) return st;
    return submit(pg, DDL_COLL_REDUCE, t, nullptr, root, op, ddl_tensor_numel(t), timeout_ms, work);
}

ddl_status ddl_pg_gather(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int root,
                         int64_t timeout_ms, ddl_work** work) {
    return rooted(pg, DDL_COLL_GATHER, out, in, root, timeout_ms, work);
}

ddl_status ddl_pg_scatter(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int root,
                          int64_t timeout_ms, ddl_work** work) {
    return rooted(pg, DDL_COLL_SCATTER, out, in, root, timeout_ms, work);
}

ddl_status ddl_pg_alltoall(ddl_pg* pg, ddl_tensor* out, const ddl_tensor* in, int64_t timeout_ms,
                           ddl_work** work) {
    ddl_status st = check_tensor(out, "all_to_all", "output");
    if (!st) st = check_tensor(in, "all_to_all", "input");
    if (st) return st;
    int64_t n = ddl_tensor_numel(in);
    if (out->dtype != in->dtype || ddl_tensor_numel(out) != n || n % pg->size)
        return ddl_fail(DDL_E_VALUE,
                        "all_to_all: input and output must hold the same number of elements, "
                        "divisible by the world size %d (got %lld and %lld)",
                        pg->size, (long long)n, (long long)ddl_tensor_numel(out));
    return submit(pg, DDL_COLL_ALLTOALL, out, in, 0, 0, n, timeout_ms, work);
}

ddl_status ddl_pg_barrier(ddl_pg* pg, int64_t timeout_ms, ddl_work** work) {
    return submit(pg, DDL_COLL_BARRIER, nullptr, nullptr, 0, 0, 0, timeout_ms, work);
}

ddl_status ddl_work_wait(ddl_work* w, int64_t timeout_ms) {
    std::unique_lock<std::mutex> lock(w->m);
    if (timeout_ms < 0) {
        w->cv.wait(lock, [&] { return w->done; });
    } else if (!w->cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                               [&] { return w->done; })) {
        return Failure(DDL_E_TIMEOUT, std::string(coll_name(w->desc.coll)) + " #" +
                                          std::to_string(w->desc.seq) + ": still running after " +
                                          std::to_string(timeout_ms) + " ms")
            .op(coll_op_name(w->desc.coll))
            .seq((int64_t)w->desc.seq)
            .raise();
    }
    if (w->result.st != DDL_OK) return w->result.raise();
    return DDL_OK;
}

int ddl_work_is_completed(ddl_work* w) {
    std::lock_guard<std::mutex> lock(w->m);
    return w->done;
}

void ddl_work_free(ddl_work* w) {
    if (w && w->refs.fetch_sub(1) == 1) {
        ddl_tensor_release(w->a);
        ddl_tensor_release(w->b);
        delete w;
    }
}

void ddl_work_times(ddl_work* w, int64_t* start_us, int64_t* end_us) {
    std::lock_guard<std::mutex> lock(w->m);
    *start_us = w->t_start;
    *end_us = w->t_end;
}

int64_t ddl_now_us(void) { return now_us(); }

} // extern "C"
