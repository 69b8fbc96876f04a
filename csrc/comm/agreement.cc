// agreement.cc: the descriptor exchange before every collective (see agreement.h): naming and
// comparing descriptors, the mismatch error, the eager all_reduce.
#include "comm/agreement.h"

#include "comm/error.h"
#include "comm/reduce.h"
#include "comm/transport.h"

#include <cstdio>
#include <cstring>
#include <set>

namespace ddl_comm {

namespace {

const char* redop_name(int op) {
    static const char* names[] = {"SUM", "AVG", "MIN", "MAX", "PRODUCT"};
    return op >= 0 && op < DDL_COMM_NUM_OPS ? names[op] : "?";
}

} // namespace

bool same_descriptor(const Descriptor& a, const Descriptor& b) {
    return a.seq == b.seq && a.coll == b.coll && a.dtype == b.dtype && a.count == b.count &&
           a.root == b.root && a.redop == b.redop && a.count2 == b.count2;
}

DdlError mismatch_error(int rank, const Descriptor& d, const std::set<int>& differ,
                        const Descriptor& first) {
    int r = *differ.begin();
    std::string msg = "mismatched collectives at sequence number " + std::to_string(d.seq) +
                      ": rank " + std::to_string(rank) + " called " + describe(d) + " but rank " +
                      std::to_string(r) + " called " + describe(first);
    if (first.seq != d.seq) msg += " (its sequence number " + std::to_string(first.seq) + ")";
    return DdlError(Failure(DDL_E_COMM, msg)
                        .op(coll_op_name(d.coll))
                        .seq((int64_t)d.seq)
                        .rank(rank)
                        .ranks(differ));
}

const char* coll_name(int coll) {
    static const char* names[] = {
        "?",      "all_reduce", "broadcast", "all_gather", "reduce_scatter",
        "reduce", "gather",     "scatter",   "all_to_all", "barrier"};
    return coll >= 1 && coll <= 9 ? names[coll] : "?";
}

const char* coll_op_name(int coll) {
    static const char* names[] = {"",       "allreduce", "broadcast", "allgather", "reduce_scatter",
                                  "reduce", "gather",    "scatter",   "alltoall",  "barrier"};
    return coll >= 1 && coll <= 9 ? names[coll] : "";
}

std::string describe(const Descriptor& d) {
    char buf[160];
    if (d.coll == DDL_COLL_BARRIER) {
        snprintf(buf, sizeof buf, "barrier()");
    } else {
        int n = snprintf(buf, sizeof buf, "%s(%s, %lld elements", coll_name(d.coll),
                         ddl_dtype_name((ddl_dtype)d.dtype), (long long)d.count);
        if (d.coll == DDL_COLL_ALLREDUCE || d.coll == DDL_COLL_REDUCE ||
            d.coll == DDL_COLL_REDUCE_SCATTER)
            n += snprintf(buf + n, sizeof buf - n, ", %s", redop_name(d.redop));
        if (d.coll == DDL_COLL_BROADCAST || d.coll == DDL_COLL_REDUCE ||
            d.coll == DDL_COLL_GATHER || d.coll == DDL_COLL_SCATTER)
            n += snprintf(buf + n, sizeof buf - n, ", root %d", d.root);
        snprintf(buf + n, sizeof buf - n, ")");
    }
    return buf;
}

bool Agreement::agree(Transport& t, int rank, int size, const Descriptor& d, void* data,
                      int64_t timeout_ms) {
    size_t bytes = (size_t)d.count * ddl_dtype_size((ddl_dtype)d.dtype);
    bool eager = d.coll == DDL_COLL_ALLREDUCE && d.count > 0 && bytes <= eager_cap_;
    const size_t block = sizeof(Descriptor) + eager_cap_;
    size_t used = sizeof(Descriptor) + (eager ? bytes : 0);
    xin_.resize(block * size);
    xout_.resize(block * size);
    memcpy(xin_.data(), &d, sizeof(Descriptor));
    if (eager) memcpy(xin_.data() + sizeof(Descriptor), data, bytes);
    for (int r = 1; r < size; r++) memcpy(xin_.data() + (size_t)r * block, xin_.data(), used);
    t.exchange(xout_.data(), xin_.data(), block, timeout_ms);
    std::set<int> differ;
    Descriptor first{};
    for (int r = 0; r < size; r++) {
        Descriptor other;
        memcpy(&other, xout_.data() + (size_t)r * block, sizeof other);
        if (same_descriptor(other, d)) continue;
        if (differ.empty()) first = other;
        differ.insert(r);
    }
    if (!differ.empty()) throw mismatch_error(rank, d, differ, first);
    // agreed by all: the next exchange carries an all_reduce of this size whole
    eager_cap_ = d.coll == DDL_COLL_ALLREDUCE && bytes > kEagerMin && bytes <= kEagerMax
                     ? (bytes + 63) / 64 * 64
                     : kEagerMin;
    if (!eager) return false;
    reduce_blocks(data, xout_.data() + sizeof(Descriptor), block, size, d.count, d.dtype, d.redop);
    return true;
}

} // namespace ddl_comm
