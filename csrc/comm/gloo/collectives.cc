// collectives.cc: the collectives issued through Gloo (its new options API only: mixing in
// the old algorithm classes on one context slows it down), once every rank has agreed on
// them; the local steps Gloo lacks (AVG, reduce_scatter's reduction) around them.
#include "comm/gloo/gloo.h"

#include "comm/reduce.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoall.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/gather.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/scatter.h>

#include <vector>

namespace ddl_comm {

namespace {

constexpr uint32_t kTag = 2; // the descriptor exchange uses tag 1

// Every collective's last step: its tag and timeout, then the call itself unless there is
// nothing to move (Gloo's algorithms reject empty buffers).
template <typename Opts, typename Op>
void issue(Opts& opts, Op op, int64_t timeout_ms, bool any = true) {
    opts.setTag(kTag);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    if (any) op(opts);
}

// A reduction's output buffer, typed, and its reduce function.
template <typename Opts> void set_reduction(Opts& opts, void* p, const Descriptor& d) {
    with_type(d.dtype, [&](auto t) {
        using T = decltype(t);
        opts.setOutput(static_cast<T*>(p), (size_t)d.count);
        opts.setReduceFunction(reduce_fn<T>(d.redop == DDL_COMM_AVG ? DDL_COMM_SUM : d.redop));
    });
}

} // namespace

void GlooTransport::run(const Descriptor& d, void* pa, void* pb, int64_t timeout_ms) {
    try {
        size_t es = ddl_dtype_size((ddl_dtype)d.dtype);
        size_t bytes = (size_t)d.count * es;
        uint8_t* a = static_cast<uint8_t*>(pa);
        uint8_t* b = static_cast<uint8_t*>(pb);
        switch (d.coll) {
        case DDL_COLL_ALLREDUCE: {
            gloo::AllreduceOptions opts(ctx_);
            set_reduction(opts, a, d);
            issue(opts, gloo::allreduce, timeout_ms, d.count > 0);
            finish_avg(a, d.dtype, d.redop, d.count, size_);
            break;
        }
        case DDL_COLL_BROADCAST: {
            gloo::BroadcastOptions opts(ctx_);
            opts.setOutput(a, bytes);
            opts.setRoot(d.root);
            issue(opts, gloo::broadcast, timeout_ms, d.count > 0);
            break;
        }
        case DDL_COLL_ALLGATHER: {
            gloo::AllgatherOptions opts(ctx_);
            opts.setInput(b, bytes);
            opts.setOutput(a, bytes * size_);
            issue(opts, gloo::allgather, timeout_ms, d.count > 0);
            break;
        }
        case DDL_COLL_ALLTOALL:
        case DDL_COLL_REDUCE_SCATTER: {
            // reduce_scatter = all-to-all of the chunks, then a local reduction of what
            // arrived: each byte crosses the network once
            bool rs = d.coll == DDL_COLL_REDUCE_SCATTER;
            size_t chunk = rs ? bytes : bytes / size_;
            std::vector<uint8_t> tmp(rs ? chunk * size_ : 0);
            uint8_t* dst = rs ? tmp.data() : a;
            gloo::AlltoallOptions opts(ctx_);
            opts.setInput(b, chunk * size_);
            opts.setOutput(dst, chunk * size_);
            issue(opts, gloo::alltoall, timeout_ms, chunk > 0);
            if (rs && chunk > 0) reduce_blocks(a, dst, chunk, size_, d.count, d.dtype, d.redop);
            break;
        }
        case DDL_COLL_REDUCE: {
            // Gloo reduces into every rank's output (its scratch space): a non-root rank works
            // on a copy so that its tensor is left as it was
            std::vector<uint8_t> scratch;
            if (rank_ != d.root && d.count > 0) {
                scratch.assign(a, a + bytes);
                a = scratch.data();
            }
            gloo::ReduceOptions opts(ctx_);
            set_reduction(opts, a, d);
            opts.setRoot(d.root);
            issue(opts, gloo::reduce, timeout_ms, d.count > 0);
            if (rank_ == d.root) finish_avg(a, d.dtype, d.redop, d.count, size_);
            break;
        }
        case DDL_COLL_GATHER: {
            gloo::GatherOptions opts(ctx_);
            opts.setInput(b, bytes);
            if (rank_ == d.root) opts.setOutput(a, bytes * size_);
            opts.setRoot(d.root);
            issue(opts, gloo::gather, timeout_ms, d.count > 0);
            break;
        }
        case DDL_COLL_SCATTER: {
            gloo::ScatterOptions opts(ctx_);
            opts.setRoot(d.root);
            opts.setOutput(a, bytes);
            std::vector<uint8_t*> chunks; // root's input, one chunk per rank
            for (int r = 0; rank_ == d.root && r < size_; r++)
                chunks.push_back(b + (size_t)r * bytes);
            if (rank_ == d.root) opts.setInputs(chunks, bytes);
            issue(opts, gloo::scatter, timeout_ms, d.count > 0);
            break;
        }
        case DDL_COLL_BARRIER: {
            gloo::BarrierOptions opts(ctx_);
            issue(opts, gloo::barrier, timeout_ms);
            break;
        }
        default: throw DdlError(DDL_E_INTERNAL, "unknown collective");
        }
    } catch (...) {
        rethrow_translated();
    }
}

} // namespace ddl_comm
