/* kernels/common.h: what the nn_* kernel files share privately: size limits, the NULL-buffer
 * check, the layer buffer checks (conv2d, linear), the sliding-window geometry check, an 8-partial double sum, a stable sigmoid, and the
 * test-only backward error plant. */
#ifndef DDL_KERNELS_COMMON_H
#define DDL_KERNELS_COMMON_H

#include "ddl/core.h"

#include "core/internal.h"

#include <math.h>
#include <stdint.h>

/* Largest element count a buffer may have (keeps byte sizes and index arithmetic in int64). */
#define MAX_ELEMS ((int64_t)1 << 60)
/* Each size and parameter fits in an int (BLAS's index type), so sums and pairwise products
 * of them never overflow int64. */
#define MAX_DIM ((int64_t)2147483647)

typedef long long ll; /* for printf */

/* Test builds only: tests/test_c_kernels.py compiles the C harnesses once more with
 * -DDDL_PLANT_BACKWARD_ERROR=1e-3, which scales the backward kernels that use PLANT by
 * (1 + 1e-3), and checks that the harness fails. Never defined in the library build, where
 * PLANT(v) is v. */
#ifdef DDL_PLANT_BACKWARD_ERROR
#define PLANT(v) ((v) * (float)(1.0 + (DDL_PLANT_BACKWARD_ERROR)))
#else
#define PLANT(v) (v)
#endif

/* A buffer needed for `n` elements must not be NULL (an empty one may be). */
static inline ddl_status check_buf(const char *who, const char *name, const void *p, int64_t n) {
    if (p == NULL && n > 0) DDL_FAIL(DDL_E_VALUE, "%s: `%s` is NULL", who, name);
    return DDL_OK;
}

/* r = a*b*c*d, or 0 when it would pass MAX_ELEMS (all factors are >= 0). */
static inline int prod4(int64_t *r, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t v[4] = {a, b, c, d}, p = 1;
    for (int i = 0; i < 4; i++) {
        if (v[i] != 0 && p > MAX_ELEMS / v[i]) return 0;
        p *= v[i];
    }
    *r = p;
    return 1;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Sum in double with 8 independent partials: no latency chain (a single accumulator makes
 * conv2d's dbias cost more than its dweight sgemm), and the same result on every call. */
static inline double sum_f32(const float *x, int64_t n) {
    double a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x[i + j];
    for (; i < n; i++) t += x[i];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + t;
}

/* 1 / (1 + exp(-x)) without overflow for any x. */
static inline float sigmoidf_(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* What a backward (conv2d or linear, fast or naive) needs: dout always, inp for dweight,
 * weight for dinp. */
static inline ddl_status grad_inputs_check(const char *who, const void *dinp, const void *dweight,
                                           const void *dout, const void *inp, const void *weight) {
    if (!dout) DDL_FAIL(DDL_E_VALUE, "%s: dout must not be NULL", who);
    if (dweight && !inp) DDL_FAIL(DDL_E_VALUE, "%s: dweight needs inp, which is NULL", who);
    if (dinp && !weight) DDL_FAIL(DDL_E_VALUE, "%s: dinp needs weight, which is NULL", who);
    return DDL_OK;
}

/* A forward's buffers (conv2d or linear, fast or naive). */
static inline ddl_status forward_bufs_check(const char *who, const void *out, const void *inp,
                                            const void *weight) {
    if (!out || !inp || !weight)
        DDL_FAIL(DDL_E_VALUE, "%s: out, inp and weight must not be NULL", who);
    return DDL_OK;
}

/* Output size (OH, OW) of a window of (KH, KW) with stride, padding and dilation sliding over
 * (H, W); fails with a message naming `who` on a bad parameter (nn_conv.c). */
ddl_status ddl_window_out_size(const char *who, int64_t *OH, int64_t *OW, int64_t H, int64_t W,
                               int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                               int64_t pw, int64_t dh, int64_t dw);

#endif
