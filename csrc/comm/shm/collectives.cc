// collectives.cc: the collectives over the shared-memory segment, run by the caller's thread.
// Every call's first step carries this rank's descriptor (in its control block, by call
// parity), checked against every rank's before any data is read. A call whose share fits a
// small buffer (64 KiB; 1 MiB on 2 ranks) carries it whole in that step, and each rank then reads what it
// needs from every rank's buffer: one synchronisation in all, double-buffered by call parity,
// so no barrier between calls. A larger call moves in rounds through the large buffers
// (round parity), one step each, the first one carrying the descriptor: write this rank's
// piece, wait for every rank, read. A large all_reduce is a pipelined reduce-scatter plus
// allgather of its own (allreduce.cc).
// Reductions always combine ranks in rank order ((r0 op r1) op r2 ...): the same bits on every
// rank, run to run, for every size.
#include "comm/reduce.h"
#include "comm/shm/shm.h"

#include <cstring>

namespace ddl_comm {

int64_t now_us();

namespace {

// out (count elements) = the rank-order reduction of the n inputs (then AVG's division).
void reduce_into(void* out, const std::vector<const uint8_t*>& in, int64_t count, int dtype,
                 int redop) {
    if (count == 0) return;
    int n = (int)in.size();
    if (n == 1) {
        memcpy(out, in[0], (size_t)count * ddl_dtype_size((ddl_dtype)dtype));
    } else {
        ReduceFn fn = reduce_fn_for(dtype, redop);
        fn(out, in[0], in[1], (size_t)count);
        for (int q = 2; q < n; q++) fn(out, out, in[q], (size_t)count);
    }
    finish_avg(out, dtype, redop, count, n);
}

// How a collective's data is cut: each rank writes `blocks` blocks of `block` elements
// (reduce_scatter, scatter and all_to_all one per destination rank), cut in rounds along the
// block; `writes`: this rank writes at all (broadcast and scatter: the root only).
struct Shape {
    int blocks = 1;
    int64_t block = 0;
    bool writes = true;
    const uint8_t* src = nullptr;
};

Shape shape_of(const Descriptor& d, int rank, int size, const uint8_t* a, const uint8_t* b) {
    Shape s;
    s.block = d.count;
    switch (d.coll) {
    case DDL_COLL_ALLREDUCE:
    case DDL_COLL_REDUCE: s.src = a; break;
    case DDL_COLL_BROADCAST:
        s.src = a;
        s.writes = rank == d.root;
        break;
    case DDL_COLL_ALLGATHER:
    case DDL_COLL_GATHER: s.src = b; break;
    case DDL_COLL_REDUCE_SCATTER:
        s.blocks = size;
        s.src = b;
        break;
    case DDL_COLL_SCATTER:
        s.blocks = size;
        s.src = b;
        s.writes = rank == d.root;
        break;
    case DDL_COLL_ALLTOALL:
        s.blocks = size;
        s.block = d.count / size;
        s.src = b;
        break;
    default: // barrier
        s.block = 0;
        s.writes = false;
    }
    return s;
}

} // namespace

void ShmTransport::post_descriptor(const Descriptor& d, int par) {
    memcpy(&seg_->ctl(rank_)->desc[par], &d, sizeof d);
}

// After the call's first step: every rank's descriptor must equal d (else the mismatch
// error, on every rank, before any rank's data is read).
void ShmTransport::check_descriptors(const Descriptor& d, int par) {
    std::set<int> differ;
    Descriptor first{};
    for (int q = 0; q < size_; q++) {
        Descriptor other;
        memcpy(&other, &seg_->ctl(q)->desc[par], sizeof other);
        if (same_descriptor(other, d)) continue;
        if (differ.empty()) first = other;
        differ.insert(q);
    }
    if (!differ.empty()) throw mismatch_error(rank_, d, differ, first);
}

// Read round data: buf(q) holds rank q's `blocks` pieces of `len` elements, elements
// [off, off + len) of each of its blocks.
template <typename Buf>
static void read_round(const Descriptor& d, int rank, int size, const Shape& s, uint8_t* a, Buf buf,
                       int64_t off, int64_t len) {
    size_t es = ddl_dtype_size((ddl_dtype)d.dtype);
    size_t piece = (size_t)len * es;
    std::vector<const uint8_t*> in(size);
    switch (d.coll) {
    case DDL_COLL_ALLREDUCE:
    case DDL_COLL_REDUCE:
        if (d.coll == DDL_COLL_REDUCE && rank != d.root) return;
        for (int q = 0; q < size; q++) in[q] = buf(q);
        reduce_into(a + off * es, in, len, d.dtype, d.redop);
        return;
    case DDL_COLL_REDUCE_SCATTER:
        for (int q = 0; q < size; q++) in[q] = buf(q) + rank * piece;
        reduce_into(a + off * es, in, len, d.dtype, d.redop);
        return;
    case DDL_COLL_BROADCAST:
        if (rank != d.root && piece) memcpy(a + off * es, buf(d.root), piece);
        return;
    case DDL_COLL_SCATTER:
        if (piece) memcpy(a + off * es, buf(d.root) + rank * piece, piece);
        return;
    case DDL_COLL_GATHER:
    case DDL_COLL_ALLGATHER:
        if (d.coll == DDL_COLL_GATHER && rank != d.root) return;
        for (int q = 0; q < size && piece; q++)
            memcpy(a + ((size_t)q * s.block + off) * es, buf(q), piece);
        return;
    case DDL_COLL_ALLTOALL:
        for (int q = 0; q < size && piece; q++)
            memcpy(a + ((size_t)q * s.block + off) * es, buf(q) + rank * piece, piece);
        return;
    default: return;
    }
}

void ShmTransport::run(const Descriptor& d, void* pa, void* pb, int64_t timeout_ms) {
    int64_t deadline = now_us() + timeout_ms * 1000;
    uint8_t* a = static_cast<uint8_t*>(pa);
    const uint8_t* b = static_cast<const uint8_t*>(pb);
    size_t es = d.coll == DDL_COLL_BARRIER ? 1 : ddl_dtype_size((ddl_dtype)d.dtype);
    Shape s = shape_of(d, rank_, size_, a, b);
    size_t share = (size_t)s.blocks * (size_t)s.block * es;
    // the decision is the same on every rank whose descriptor agrees (it depends on it alone)
    bool small = share <= seg_->small_bytes();
    int par = (int)(calls_ & 1);
    calls_++;
    post_descriptor(d, par);
    if (small) {
        if (s.writes && share) memcpy(seg_->small(rank_, par), s.src, share);
        publish();
        wait_all(deadline);
        check_descriptors(d, par);
        read_round(
            d, rank_, size_, s, a, [&](int q) { return seg_->small(q, par); }, 0, s.block);
        return;
    }
    // a large call's first round carries the descriptor: checked before any data is read
    if (d.coll == DDL_COLL_ALLREDUCE)
        allreduce_large(d, a, deadline, par);
    else
        rounds(d, a, b, deadline, par);
}

void ShmTransport::rounds(const Descriptor& d, uint8_t* a, const uint8_t* b, int64_t deadline,
                          int par0) {
    size_t es = ddl_dtype_size((ddl_dtype)d.dtype);
    Shape s = shape_of(d, rank_, size_, a, b);
    int64_t per = (int64_t)(seg_->big_bytes() / ((size_t)s.blocks * es));
    big_free_ = false;
    for (int64_t off = 0; off < s.block; off += per) {
        int64_t len = s.block - off < per ? s.block - off : per;
        size_t piece = (size_t)len * es;
        uint8_t* mine = seg_->big(rank_, bigpar_);
        for (int k = 0; s.writes && k < s.blocks; k++)
            memcpy(mine + k * piece, s.src + ((size_t)k * s.block + off) * es, piece);
        publish();
        wait_all(deadline);
        if (off == 0) check_descriptors(d, par0);
        int par = (int)bigpar_;
        read_round(
            d, rank_, size_, s, a, [&](int q) { return seg_->big(q, par); }, off, len);
        bigpar_ ^= 1;
    }
}

} // namespace ddl_comm
