// combine.cc: the n-way reduction kernel of the shared-memory transport (see combine.h), cut
// in blocks that stay in L1: each block is reduced into a local accumulator (no aliasing for
// the vectoriser to guard against, so `out` may be an input), then stored once per output.
// Compiled three times (target_clones) so the loader picks AVX-512, AVX2 or the baseline.
#include "comm/shm/combine.h"

#include "ddl/comm.h"

#include <algorithm>
#include <cstring>

namespace ddl_comm {

namespace {

// Elements per block: 4 KiB of accumulator, well inside L1 beside the inputs' lines.
template <typename T> constexpr int64_t kBlock = 4096 / sizeof(T);

struct Sum {
    template <typename T> static T f(T a, T b) { return a + b; }
};
struct Prod {
    template <typename T> static T f(T a, T b) { return a * b; }
};
// std::min/max's semantics, NaN included (b < a ? b : a keeps a when either is NaN)
struct Min {
    template <typename T> static T f(T a, T b) { return b < a ? b : a; }
};
struct Max {
    template <typename T> static T f(T a, T b) { return a < b ? b : a; }
};

template <typename T, typename Op>
__attribute__((always_inline)) inline void combine_t(T* out, T* out2, const T* const* in, int n,
                                                     int64_t count, bool avg) {
    alignas(64) T acc[kBlock<T>];
    const T scale = (T)n;
    for (int64_t i0 = 0; i0 < count; i0 += kBlock<T>) {
        const int64_t m = std::min(kBlock<T>, count - i0);
        const T* a = in[0] + i0;
        if (n == 1) {
            for (int64_t j = 0; j < m; j++) acc[j] = a[j];
        } else {
            const T* b = in[1] + i0;
            for (int64_t j = 0; j < m; j++) acc[j] = Op::f(a[j], b[j]);
        }
        for (int q = 2; q < n; q++) {
            const T* c = in[q] + i0;
            for (int64_t j = 0; j < m; j++) acc[j] = Op::f(acc[j], c[j]);
        }
        if (avg)
            for (int64_t j = 0; j < m; j++) acc[j] = acc[j] / scale;
        T* o = out + i0;
        for (int64_t j = 0; j < m; j++) o[j] = acc[j];
        if (out2) {
            T* o2 = out2 + i0;
            for (int64_t j = 0; j < m; j++) o2[j] = acc[j];
        }
    }
}

template <typename T>
__attribute__((always_inline)) inline void combine_op(void* out, void* out2, const void* const* in,
                                                      int n, int64_t count, int redop) {
    T* o = static_cast<T*>(out);
    T* o2 = static_cast<T*>(out2);
    const T* const* x = reinterpret_cast<const T* const*>(in);
    switch (redop) {
    case DDL_COMM_MIN: combine_t<T, Min>(o, o2, x, n, count, false); break;
    case DDL_COMM_MAX: combine_t<T, Max>(o, o2, x, n, count, false); break;
    case DDL_COMM_PRODUCT: combine_t<T, Prod>(o, o2, x, n, count, false); break;
    case DDL_COMM_AVG: combine_t<T, Sum>(o, o2, x, n, count, true); break;
    default: combine_t<T, Sum>(o, o2, x, n, count, false); break;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

CLONES void combine_f32(void* out, void* out2, const void* const* in, int n, int64_t count,
                        int redop) {
    combine_op<float>(out, out2, in, n, count, redop);
}
CLONES void combine_f64(void* out, void* out2, const void* const* in, int n, int64_t count,
                        int redop) {
    combine_op<double>(out, out2, in, n, count, redop);
}
CLONES void combine_i64(void* out, void* out2, const void* const* in, int n, int64_t count,
                        int redop) {
    combine_op<int64_t>(out, out2, in, n, count, redop);
}

} // namespace

void shm_combine(void* out, void* out2, const void* const* in, int n, int64_t count, int dtype,
                 int redop) {
    if (count <= 0) return;
    if (dtype == DDL_FLOAT32)
        combine_f32(out, out2, in, n, count, redop);
    else if (dtype == DDL_FLOAT64)
        combine_f64(out, out2, in, n, count, redop);
    else
        combine_i64(out, out2, in, n, count, redop);
}

} // namespace ddl_comm
