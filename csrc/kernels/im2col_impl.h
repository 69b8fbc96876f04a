/* im2col_impl.h: conv2d's im2col and its adjoint col2im_add for one element type; nn_conv.c
 * includes it once per type after defining IM2COL_T (float or double) and IM2COL_NAME(x) (the
 * function name x for that type). No include guard: each inclusion is one instantiation. */
#include <string.h>

/* Stride 1 in both directions with OW == W ("same" width, e.g. 3x3 padding 1): a kernel tap's
 * row of the im2col matrix is the input plane shifted by d = ih0*W + iw0 (ih0, iw0: the tap's
 * offsets), so one contiguous copy fills it, after which the columns the shift wrapped around
 * (ow < lo or ow >= hi) and the rows outside the plane are zeroed. shifted_rows gives the block
 * [*i0, *i1) of row positions whose source plane[i + d] lies inside the plane. */
static int IM2COL_NAME(plane_contiguous)(const conv_geom *g) {
    return g->sh == 1 && g->sw == 1 && g->OW == g->W;
}

static void IM2COL_NAME(shifted_rows)(int64_t *i0, int64_t *i1, int64_t *d, int64_t kh, int64_t kw,
                                      const conv_geom *g) {
    const int64_t W = g->W, OHW = g->OHW, ih0 = kh * g->dh - g->ph, iw0 = kw * g->dw - g->pw;
    int64_t oh_lo = max64(0, -ih0), oh_hi = min64(g->OH, g->H - ih0); /* rows inside the plane */
    if (oh_hi < oh_lo) oh_hi = oh_lo;
    *d = ih0 * W + iw0;
    *i0 = min64(max64(oh_lo * W, -*d), OHW);
    *i1 = max64(min64(oh_hi * W, g->H * W - *d), *i0);
}

/* One sample's im2col: col[(c, kh, kw), (oh, ow)] = inp[c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw],
 * zero in the padding; col's rows are `ld` floats apart (ld >= OH*OW: several samples side by
 * side). */
static void IM2COL_NAME(im2col)(IM2COL_T *col, int64_t ld, const IM2COL_T *inp,
                                const conv_geom *g) {
    // col (C*KH*KW, ld), inp (C, H, W)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
    if (IM2COL_NAME(plane_contiguous)(g)) {
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t i0, i1, d, lo, hi;
                IM2COL_NAME(shifted_rows)(&i0, &i1, &d, kh, kw, g);
                valid_range(&lo, &hi, kw * g->dw - g->pw, 1, W, OW);
                for (int64_t c = 0; c < g->C; c++) {
                    IM2COL_T *r = col + ((c * g->KH + kh) * g->KW + kw) * ld; // (OH*OW,)
                    const IM2COL_T *plane = inp + c * H * W;                  // (H*W,)
                    memset(r, 0, (size_t)i0 * sizeof(IM2COL_T));
                    memcpy(r + i0, plane + i0 + d, (size_t)(i1 - i0) * sizeof(IM2COL_T));
                    memset(r + i1, 0, (size_t)(g->OHW - i1) * sizeof(IM2COL_T));
                    if (lo > 0 || hi < OW)
                        for (int64_t oh = i0 / OW; oh * OW < i1; oh++) {
                            for (int64_t ow = 0; ow < lo; ow++) r[oh * OW + ow] = 0;
                            for (int64_t ow = hi; ow < OW; ow++) r[oh * OW + ow] = 0;
                        }
                }
            }
        return;
    }
    for (int64_t c = 0; c < g->C; c++) {
        const IM2COL_T *plane = inp + c * H * W; // (H, W)
        for (int64_t kh = 0; kh < g->KH; kh++) {
            for (int64_t kw = 0; kw < g->KW; kw++) {
                IM2COL_T *row = col + ((c * g->KH + kh) * g->KW + kw) * ld; // (OH, OW)
                int64_t iw0 = kw * g->dw - g->pw, lo, hi;
                valid_range(&lo, &hi, iw0, sw, W, OW);
                for (int64_t oh = 0; oh < OH; oh++) {
                    IM2COL_T *r = row + oh * OW;
                    int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, (size_t)OW * sizeof(IM2COL_T));
                        continue;
                    }
                    for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0;
                    if (hi > lo) {
                        const IM2COL_T *src = plane + ih * W + iw0 + lo * sw; // first valid column
                        if (sw == 1)
                            memcpy(r + lo, src, (size_t)(hi - lo) * sizeof(IM2COL_T));
                        else
                            for (int64_t ow = lo; ow < hi; ow++) r[ow] = src[(ow - lo) * sw];
                    }
                    for (int64_t ow = hi; ow < OW; ow++) r[ow] = 0;
                }
            }
        }
    }
}

/* The adjoint of im2col: inp[c, ih, iw] += col[...] over every window position that reads it
 * (in the same (c, kh, kw) order either way). In the plane-contiguous case each row is added
 * to the shifted plane in one contiguous pass after its wrapped-around columns are set to zero
 * in col (col is scratch: those entries are clobbered). */
static void IM2COL_NAME(col2im_add)(IM2COL_T *inp, IM2COL_T *col, int64_t ld, const conv_geom *g) {
    // inp (C, H, W), col (C*KH*KW, ld)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
    if (IM2COL_NAME(plane_contiguous)(g)) {
        for (int64_t c = 0; c < g->C; c++) {
            IM2COL_T *plane = inp + c * H * W; // (H*W,)
            for (int64_t kh = 0; kh < g->KH; kh++)
                for (int64_t kw = 0; kw < g->KW; kw++) {
                    int64_t i0, i1, d, lo, hi;
                    IM2COL_NAME(shifted_rows)(&i0, &i1, &d, kh, kw, g);
                    valid_range(&lo, &hi, kw * g->dw - g->pw, 1, W, OW);
                    IM2COL_T *r = col + ((c * g->KH + kh) * g->KW + kw) * ld; // (OH*OW,)
                    if (lo > 0 || hi < OW)
                        for (int64_t oh = i0 / OW; oh * OW < i1; oh++) {
                            for (int64_t ow = 0; ow < lo; ow++) r[oh * OW + ow] = 0;
                            for (int64_t ow = hi; ow < OW; ow++) r[oh * OW + ow] = 0;
                        }
                    for (int64_t i = i0; i < i1; i++) plane[i + d] += r[i];
                }
        }
        return;
    }
    for (int64_t c = 0; c < g->C; c++) {
        IM2COL_T *plane = inp + c * H * W; // (H, W)
        for (int64_t kh = 0; kh < g->KH; kh++) {
            for (int64_t kw = 0; kw < g->KW; kw++) {
                const IM2COL_T *row = col + ((c * g->KH + kh) * g->KW + kw) * ld; // (OH, OW)
                int64_t iw0 = kw * g->dw - g->pw, lo, hi;
                valid_range(&lo, &hi, iw0, sw, W, OW);
                for (int64_t oh = 0; oh < OH; oh++) {
                    int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H || hi == lo) continue;
                    const IM2COL_T *r = row + oh * OW;
                    IM2COL_T *dst = plane + ih * W + iw0 + lo * sw;
                    if (sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow - lo] += r[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[(ow - lo) * sw] += r[ow];
                }
            }
        }
    }
}

#undef IM2COL_T
#undef IM2COL_NAME
