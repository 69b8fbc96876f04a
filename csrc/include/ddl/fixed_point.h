/* fixed_point.h: exact, order-independent sums of float32 values through int64 fixed point
 * (the deterministic data-parallel mode's gradient reduction, docs/determinism.md).
 *
 * Values come as k rows of n float32, the n columns cut into nseg segments (lengths[s] columns
 * each; one scale per segment). For a segment whose values all satisfy |x| < 2^E:
 *   ddl_fixed_exponents  E per segment (the max over the rows; combine ranks with a MAX),
 *   ddl_fixed_accumulate acc[i] += rint(x * 2^shift[s]) over the rows: exact in int64 while
 *                        the total count of values times 2^(E + shift) stays below 2^63,
 *   ddl_fixed_to_float   out[i] = acc[i] * (2^-shift[s] / divisor), as float32.
 * Integer addition is associative, so the result does not depend on how the values were split
 * over rows, threads or ranks, nor on their order. */
#ifndef DDL_FIXED_POINT_H
#define DDL_FIXED_POINT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The exponent reported for a segment of zeros: below every float's. */
#define DDL_FIXED_NO_EXP (-(INT64_C(1) << 40))

/* exps[s] = the largest frexp exponent of the segment's values (|x| < 2^exps[s]), or
 * DDL_FIXED_NO_EXP when all are zero; bad[s] = 1 when one is NaN or infinite (else 0). */
void ddl_fixed_exponents(const float *rows, int64_t k, int64_t n, int64_t nseg,
                         const int64_t *lengths, int64_t *exps, int64_t *bad);
/* acc[i] += sum over the k rows of rint(row[i] * 2^shift[s]) for the columns of segment s;
 * segments with skip[s] != 0 are left alone. */
void ddl_fixed_accumulate(const float *rows, int64_t k, int64_t n, int64_t nseg,
                          const int64_t *lengths, const int64_t *shift, const int64_t *skip,
                          int64_t *acc);
/* out[i] = (float)((double)acc[i] * f) with f = 2^-shift[s] / divisor (each product rounded
 * once to double, then to float); NaN for the segments with bad[s] != 0. */
void ddl_fixed_to_float(const int64_t *acc, int64_t n, int64_t nseg, const int64_t *lengths,
                        const int64_t *shift, const int64_t *bad, double divisor, float *out);

/* One segment given as k separate rows xs[0..k) of n float32 each (a tensor's gradient from
 * each of k micro-batches, no copy into a matrix): *exp and *bad as ddl_fixed_exponents gives
 * them for that segment (k may be 0: DDL_FIXED_NO_EXP, not bad). */
void ddl_fixed_segment_exponent(int64_t *exp, int64_t *bad, const float *const *xs, int64_t k,
                                int64_t n);
/* acc[i] = sum over the k rows of rint(xs[r][i] * 2^shift) (overwrites acc; zeros for k = 0):
 * the same integers as ddl_fixed_accumulate into a zeroed acc, in one pass per row over
 * cache-sized blocks of acc. */
void ddl_fixed_quantize_sum(int64_t *acc, const float *const *xs, int64_t k, int64_t n,
                            int64_t shift);

/* The compact wire format: two biased 32-bit lanes per int64 word. words[j] gets
 * (acc[2j] + bias) | (acc[2j+1] + bias) << 32 (a missing last odd element counts as 0);
 * every acc[i] + bias must lie in [0, 2^31) and stay so summed over the ranks, so that adding
 * words never carries across a lane. nwords = (n + 1) / 2. */
void ddl_fixed_pack(const int64_t *acc, int64_t n, int64_t bias, int64_t *words);
/* The inverse after the words were summed over ranks whose biases total total_bias. */
void ddl_fixed_unpack(const int64_t *words, int64_t n, int64_t total_bias, int64_t *acc);
/* One segment's ddl_fixed_quantize_sum then ddl_fixed_pack in one pass: words
 * ((n + 1) / 2 of them) get the biased lanes of the k rows' sums (k = 0: lanes of just the
 * bias, the contribution of a rank with nothing to add). */
void ddl_fixed_quantize_pack(int64_t *words, const float *const *xs, int64_t k, int64_t n,
                             int64_t shift, int64_t bias);
/* ddl_fixed_unpack then ddl_fixed_to_float of one segment (divisor and shift as there; NaN
 * everywhere when bad). */
void ddl_fixed_unpack_to_float(float *out, const int64_t *words, int64_t n, int64_t shift,
                               int64_t bad, int64_t total_bias, double divisor);

#ifdef __cplusplus
}
#endif

#endif
