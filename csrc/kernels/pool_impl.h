/* pool_impl.h: the per-plane loops of max, average and adaptive-average 2-d pooling (forward
 * and backward) for one element type; nn_pool.c includes it once per type after defining
 * POOL_T (float or double) and POOL_NAME(x) (the function name x for that type). No include
 * guard: each inclusion is one instantiation. */
#include <math.h>

/* Max pooling of planes [p0, p1) of x (P, H, W) into y (P, OH, OW), the argmax (within its
 * plane) in ix; NaN wins and the first maximum wins ties, as PyTorch. */
static void POOL_NAME(max_planes)(POOL_T *out, int64_t *indices, const POOL_T *inp, int64_t p0,
                                  int64_t p1, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                  int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                                  int64_t pw) {
    for (int64_t p = p0; p < p1; p++) {
        const POOL_T *x = inp + p * H * W; // (H, W)
        POOL_T *y = out + p * OH * OW;     // (OH, OW)
        int64_t *ix = indices + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * sh - ph, h1 = min64(h0 + KH, H);
            h0 = max64(h0, 0);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = ow * sw - pw, w1 = min64(w0 + KW, W);
                w0 = max64(w0, 0);
                POOL_T best = -INFINITY;
                int64_t arg = h0 * W + w0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        POOL_T v = x[ih * W + iw];
                        if (v > best || isnan(v)) { /* PyTorch's rule: NaN wins */
                            best = v;
                            arg = ih * W + iw;
                        }
                    }
                y[oh * OW + ow] = best;
                ix[oh * OW + ow] = arg;
            }
        }
    }
}

/* dinp[p, indices[p, i]] += dout[p, i] over planes [p0, p1). */
static void POOL_NAME(max_back_planes)(POOL_T *dinp, const POOL_T *dout, const int64_t *indices,
                                       int64_t p0, int64_t p1, int64_t HW, int64_t OHW) {
    for (int64_t p = p0; p < p1; p++) {
        POOL_T *dx = dinp + p * HW;        // (H, W)
        const POOL_T *dy = dout + p * OHW; // (OH, OW)
        const int64_t *ix = indices + p * OHW;
        for (int64_t i = 0; i < OHW; i++) dx[ix[i]] += dy[i];
    }
}

/* Average pooling (count_include_pad) of P planes, forward (back = 0: out from inp) or
 * backward (back = 1: dinp += the spread of dout); the sums in double. */
static void POOL_NAME(avg_planes)(int back, POOL_T *out, POOL_T *dinp, const POOL_T *inp,
                                  const POOL_T *dout, int64_t P, int64_t H, int64_t W, int64_t OH,
                                  int64_t OW, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                                  int64_t ph, int64_t pw) {
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                avg_window a = avg_window_at(oh, ow, H, W, KH, KW, sh, sw, ph, pw);
                const int64_t o = p * OH * OW + oh * OW + ow;
                if (back) {
                    POOL_T g = dout[o] / (POOL_T)a.count;
                    for (int64_t ih = a.h0; ih < a.h1; ih++)
                        for (int64_t iw = a.w0; iw < a.w1; iw++) dinp[p * H * W + ih * W + iw] += g;
                    continue;
                }
                double acc = 0.0;
                for (int64_t ih = a.h0; ih < a.h1; ih++)
                    for (int64_t iw = a.w0; iw < a.w1; iw++) acc += inp[p * H * W + ih * W + iw];
                out[o] = (POOL_T)(acc / (double)a.count);
            }
}

/* Adaptive average pooling of P planes to (OH, OW), forward or backward as avg_planes. */
static void POOL_NAME(adaptive_planes)(int back, POOL_T *out, POOL_T *dinp, const POOL_T *inp,
                                       const POOL_T *dout, int64_t P, int64_t H, int64_t W,
                                       int64_t OH, int64_t OW) {
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = bin_start(oh, H, OH), h1 = bin_end(oh, H, OH);
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t w0 = bin_start(ow, W, OW), w1 = bin_end(ow, W, OW);
                const int64_t o = p * OH * OW + oh * OW + ow;
                double cnt = (double)((h1 - h0) * (w1 - w0));
                if (back) {
                    POOL_T g = (POOL_T)(dout[o] / cnt);
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++) dinp[p * H * W + ih * W + iw] += g;
                    continue;
                }
                double acc = 0.0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) acc += inp[p * H * W + ih * W + iw];
                out[o] = (POOL_T)(acc / cnt);
            }
        }
}

#undef POOL_T
#undef POOL_NAME
