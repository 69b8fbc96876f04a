/* im2col_impl.h: conv2d's im2col and its adjoint col2im_add for one element type; nn_conv.c
 * includes it once per type after defining IM2COL_T (float or double) and IM2COL_NAME(x) (the
 * function name x for that type). No include guard: each inclusion is one instantiation. */
#include <string.h>

/* One sample's im2col: col[(c, kh, kw), (oh, ow)] = inp[c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw],
 * zero in the padding; col's rows are `ld` floats apart (ld >= OH*OW: several samples side by
 * side). */
static void IM2COL_NAME(im2col)(IM2COL_T *col, int64_t ld, const IM2COL_T *inp,
                                const conv_geom *g) {
    // col (C*KH*KW, ld), inp (C, H, W)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
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

/* The adjoint of im2col: inp[c, ih, iw] += col[...] over every window position that reads it. */
static void IM2COL_NAME(col2im_add)(IM2COL_T *inp, const IM2COL_T *col, int64_t ld,
                                    const conv_geom *g) {
    // inp (C, H, W), col (C*KH*KW, ld)
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, sw = g->sw;
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
