/* kernels/attention.h: what the fused and the naive attention kernels share privately: the
 * checks of a call's sizes and layouts, buffer offsets, and the mask applied to a tile. */
#ifndef DDL_KERNELS_ATTENTION_H
#define DDL_KERNELS_ATTENTION_H

#include "ddl/nn_attention.h"

#include "kernels/common.h"

#include <math.h>

/* The element offset of (b, h, row 0) in a buffer of layout s. */
static inline int64_t at(const ddl_sdpa_strides *s, int64_t b, int64_t h) {
    return b * s->b + h * s->h;
}

/* Zero strides -> contiguous (B, H, rows, feat); else check them: none negative, a row at
 * least `feat` wide (rows must not overlap; BLAS's lda >= K) and within an int. */
static inline ddl_status sdpa_layout(const char *who, const char *name, ddl_sdpa_strides *s,
                                     int64_t H, int64_t rows, int64_t feat) {
    if (s->b == 0 && s->h == 0 && s->r == 0) {
        *s = (ddl_sdpa_strides){.b = H * rows * feat, .h = rows * feat, .r = feat > 0 ? feat : 1};
        return DDL_OK;
    }
    if (s->b < 0 || s->h < 0 || s->r < (feat > 0 ? feat : 1) || s->r > MAX_DIM)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: %s strides (%lld, %lld, %lld) are not a layout of rows of %lld features", who,
                 name, (ll)s->b, (ll)s->h, (ll)s->r, (ll)feat);
    return DDL_OK;
}

/* Checks the sizes, fills *d from *dims with every layout resolved, checks q, k and v. */
static inline ddl_status sdpa_check_io(const char *who, ddl_sdpa_dims *d, const ddl_sdpa_dims *dims,
                                       const void *q, const void *k, const void *v) {
    if (dims == NULL) DDL_FAIL(DDL_E_VALUE, "%s: dims is NULL", who);
    *d = *dims;
    const int64_t x[6] = {d->B, d->H, d->L, d->S, d->D, d->E};
    for (int i = 0; i < 6; i++)
        if (x[i] < 0 || x[i] > MAX_DIM)
            DDL_FAIL(DDL_E_VALUE, "%s: sizes must be in [0, 2^31), got %lld", who, (ll)x[i]);
    int64_t n, widest = max64(max64(d->S, d->L), max64(d->D, d->E));
    if (!prod4(&n, d->B, d->H, max64(d->L, d->S), widest))
        DDL_FAIL(DDL_E_VALUE, "%s: sizes overflow", who);
    if (!(d->scale == d->scale)) DDL_FAIL(DDL_E_VALUE, "%s: scale is NaN", who);
    const int64_t H = d->H, L = d->L, S = d->S, D = d->D, E = d->E;
    DDL_TRY(sdpa_layout(who, "q", &d->q, H, L, D));
    DDL_TRY(sdpa_layout(who, "k", &d->k, H, S, D));
    DDL_TRY(sdpa_layout(who, "v", &d->v, H, S, E));
    DDL_TRY(sdpa_layout(who, "out", &d->out, H, L, E));
    DDL_TRY(sdpa_layout(who, "dout", &d->dout, H, L, E));
    DDL_TRY(sdpa_layout(who, "dq", &d->dq, H, L, D));
    DDL_TRY(sdpa_layout(who, "dk", &d->dk, H, S, D));
    DDL_TRY(sdpa_layout(who, "dv", &d->dv, H, S, E));
    DDL_TRY(check_buf(who, "q", q, d->B * H * L * D));
    DDL_TRY(check_buf(who, "k", k, d->B * H * S * D));
    return check_buf(who, "v", v, d->B * H * S * E);
}

static inline ddl_status sdpa_check_grads(const char *who, const ddl_sdpa_dims *d, const void *dout,
                                          const void *out, const void *lse) {
    DDL_TRY(check_buf(who, "dout", dout, d->B * d->H * d->L * d->E));
    DDL_TRY(check_buf(who, "out", out, d->B * d->H * d->L * d->E));
    return check_buf(who, "lse", lse, d->B * d->H * d->L);
}

/* Adds the mask and the causal -inf to a tile of scores for queries i0 .. i0+bq and keys
 * j0 .. j0+bk, element (query r, key c) at s[r * rs + c * cs] (rs = row stride of a
 * (query, key) tile; the backward's transposed tiles pass rs = 1). */
#define DEFINE_MASK_TILE(T, SFX)                                                                   \
    static inline void mask_tile_##SFX(T *s, int64_t rs, int64_t cs, const T *mask,                \
                                       const ddl_sdpa_dims *d, int64_t b, int64_t h, int64_t i0,   \
                                       int64_t bq, int64_t j0, int64_t bk) {                       \
        if (mask) {                                                                                \
            const T *m = mask + b * d->mstride[0] + h * d->mstride[1] + i0 * d->mstride[2] +       \
                         j0 * d->mstride[3];                                                       \
            const int64_t ml = d->mstride[2], ms = d->mstride[3];                                  \
            if (cs == 1)                                                                           \
                for (int64_t r = 0; r < bq; r++)                                                   \
                    for (int64_t c = 0; c < bk; c++) s[r * rs + c] += m[r * ml + c * ms];          \
            else                                                                                   \
                for (int64_t c = 0; c < bk; c++)                                                   \
                    for (int64_t r = 0; r < bq; r++) s[r * rs + c * cs] += m[r * ml + c * ms];     \
        }                                                                                          \
        if (d->causal)                                                                             \
            for (int64_t r = 0; r < bq; r++)                                                       \
                for (int64_t c = max64(0, i0 + r - j0 + 1); c < bk; c++)                           \
                    s[r * rs + c * cs] = -INFINITY;                                                \
    }
DEFINE_MASK_TILE(float, f32)
DEFINE_MASK_TILE(double, f64)

#endif /* DDL_KERNELS_ATTENTION_H */
