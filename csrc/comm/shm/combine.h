// combine.h: the shared-memory transport's n-way reduction kernel: one pass over n inputs in
// rank order, with AVG's division, written to one or two outputs, vectorised per CPU (AVX-512,
// AVX2 or the x86-64 baseline, picked at load time). Same bits as comm/reduce.h's pairwise
// functions followed by finish_avg (its `_naive` twin, which the small path still uses).
#ifndef DDL_COMM_SHM_COMBINE_H
#define DDL_COMM_SHM_COMBINE_H

#include <cstddef>
#include <cstdint>

namespace ddl_comm {

// out[i] = ((in[0][i] op in[1][i]) op in[2][i]) ... op in[n-1][i], then / n for AVG, for
// i < count; out2 (NULL: none) gets the same values. out may be one of the inputs (exactly:
// the same pointer), out2 must not overlap any. n >= 1; int64 AVG is refused upstream.
//   out, out2, in[q]: (count,) of the collective's dtype
void shm_combine(void* out, void* out2, const void* const* in, int n, int64_t count, int dtype,
                 int redop);

} // namespace ddl_comm

#endif
