// reduce.h: the elementwise reductions of the collectives' reduce ops (SUM, AVG, MIN, MAX,
// PRODUCT) over float32/float64/int64, for the eager all_reduce, reduce_scatter's local step,
// and as a transport's reduce function. Header-only templates: -O3 vectorizes them in place.
#ifndef DDL_COMM_REDUCE_H
#define DDL_COMM_REDUCE_H

#include "ddl/comm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace ddl_comm {

// c = a (op) b over n elements; the signature transports take for a reduce function. AVG is
// reduced as SUM (divide by the world size afterwards, see finish_avg).
typedef void (*ReduceFn)(void* c, const void* a, const void* b, size_t n);

template <typename T> ReduceFn reduce_fn(int op) {
    switch (op) {
    case DDL_COMM_MIN:
        return [](void* c, const void* a, const void* b, size_t n) {
            for (size_t i = 0; i < n; i++)
                static_cast<T*>(c)[i] =
                    std::min(static_cast<const T*>(a)[i], static_cast<const T*>(b)[i]);
        };
    case DDL_COMM_MAX:
        return [](void* c, const void* a, const void* b, size_t n) {
            for (size_t i = 0; i < n; i++)
                static_cast<T*>(c)[i] =
                    std::max(static_cast<const T*>(a)[i], static_cast<const T*>(b)[i]);
        };
    case DDL_COMM_PRODUCT:
        return [](void* c, const void* a, const void* b, size_t n) {
            for (size_t i = 0; i < n; i++)
                static_cast<T*>(c)[i] = static_cast<const T*>(a)[i] * static_cast<const T*>(b)[i];
        };
    default:
        return [](void* c, const void* a, const void* b, size_t n) {
            for (size_t i = 0; i < n; i++)
                static_cast<T*>(c)[i] = static_cast<const T*>(a)[i] + static_cast<const T*>(b)[i];
        };
    }
}

// f(T{}) with T the C type of a collective's dtype (float32, float64, else int64).
template <typename F> void with_type(int dtype, F&& f) {
    if (dtype == DDL_FLOAT32)
        f(float{});
    else if (dtype == DDL_FLOAT64)
        f(double{});
    else
        f(int64_t{});
}

inline ReduceFn reduce_fn_for(int dtype, int redop) {
    ReduceFn fn = nullptr;
    int op = redop == DDL_COMM_AVG ? DDL_COMM_SUM : redop;
    with_type(dtype, [&](auto t) { fn = reduce_fn<decltype(t)>(op); });
    return fn;
}

// After a SUM standing in for AVG: divide the count elements at p by n (floating types only;
// int64 AVG is refused at the entry points).
inline void finish_avg(void* p, int dtype, int redop, int64_t count, int n) {
    if (redop != DDL_COMM_AVG) return;
    with_type(dtype, [&](auto t) {
        using T = decltype(t);
        for (int64_t i = 0; i < count; i++) static_cast<T*>(p)[i] /= (T)n;
    });
}

// out (count elements) = the reduction, in rank order, of the n blocks `stride` bytes apart
// at blocks (the same result, bit for bit, on every rank that reduces the same blocks).
inline void reduce_blocks(void* out, const uint8_t* blocks, size_t stride, int n, int64_t count,
                          int dtype, int redop) {
    ReduceFn fn = reduce_fn_for(dtype, redop);
    memcpy(out, blocks, (size_t)count * ddl_dtype_size((ddl_dtype)dtype));
    for (int i = 1; i < n; i++) fn(out, out, blocks + (size_t)i * stride, (size_t)count);
    finish_avg(out, dtype, redop, count, n);
}

} // namespace ddl_comm

#endif
