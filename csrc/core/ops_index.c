/* ops_index.c: take (gather by flat position) and its scatter-add backward, any dtype. */
#include "core/internal.h"

#include <string.h>

/* The int64 positions of index, contiguous (a new reference), each checked in [0, n). */
static ddl_status positions(ddl_tensor **out, const ddl_tensor *index, int64_t n) {
    *out = NULL;
    if (index->dtype != DDL_INT64)
        DDL_FAIL(DDL_E_TYPE, "take: index must be int64, got %s", ddl_dtype_name(index->dtype));
    DDL_TRY(ddl_tensor_contiguous(out, index));
    const int64_t *ix = (const int64_t *)ddl_tensor_data(*out); // (K,)
    int64_t k = ddl_tensor_numel(*out);
    for (int64_t i = 0; i < k; i++) {
        if (ix[i] < 0 || ix[i] >= n) {
            long long bad = (long long)ix[i];
            ddl_tensor_release(*out);
            *out = NULL;
            DDL_FAIL(DDL_E_INDEX, "take: position %lld is out of range for %lld elements", bad,
                     (long long)n);
        }
    }
    return DDL_OK;
}

ddl_status ddl_take(ddl_tensor **out, const ddl_tensor *src, const ddl_tensor *index) {
    *out = NULL;
    ddl_tensor *ic = NULL, *sc = NULL, *o = NULL;
    ddl_status st = positions(&ic, index, ddl_tensor_numel(src));
    if (!st) st = ddl_tensor_contiguous(&sc, src);
    if (!st) st = ddl_tensor_empty(&o, src->dtype, index->ndim, index->shape);
    if (!st) {
        size_t es = ddl_dtype_size(src->dtype);
        const char *s = (const char *)ddl_tensor_data(sc); // (numel(src),)
        char *d = (char *)ddl_tensor_data(o);              // (K,)
        const int64_t *ix = (const int64_t *)ddl_tensor_data(ic);
        int64_t k = ddl_tensor_numel(ic);
        for (int64_t i = 0; i < k; i++) memcpy(d + (size_t)i * es, s + (size_t)ix[i] * es, es);
        *out = o;
        o = NULL;
    }
    ddl_tensor_release(o);
    ddl_tensor_release(sc);
    ddl_tensor_release(ic);
    return st;
}

ddl_status ddl_take_backward(ddl_tensor *dsrc, const ddl_tensor *dout, const ddl_tensor *index) {
    if (dsrc->dtype != dout->dtype || (dsrc->dtype != DDL_FLOAT32 && dsrc->dtype != DDL_FLOAT64))
        DDL_FAIL(DDL_E_TYPE, "take_backward: dsrc and dout must both be float32 or float64");
    if (!ddl_tensor_is_contiguous(dsrc))
        DDL_FAIL(DDL_E_VALUE, "take_backward: dsrc must be contiguous");
    if (ddl_tensor_numel(dout) != ddl_tensor_numel(index))
        DDL_FAIL(DDL_E_VALUE, "take_backward: dout and index differ in size");
    ddl_tensor *ic = NULL, *gc = NULL;
    ddl_status st = positions(&ic, index, ddl_tensor_numel(dsrc));
    if (!st) st = ddl_tensor_contiguous(&gc, dout);
    if (!st) {
        const int64_t *ix = (const int64_t *)ddl_tensor_data(ic);
        int64_t k = ddl_tensor_numel(ic);
        if (dsrc->dtype == DDL_FLOAT32) {
            float *d = (float *)ddl_tensor_data(dsrc);           // (numel(src),)
            const float *g = (const float *)ddl_tensor_data(gc); // (K,)
            for (int64_t i = 0; i < k; i++) d[ix[i]] += g[i];
        } else {
            double *d = (double *)ddl_tensor_data(dsrc);
            const double *g = (const double *)ddl_tensor_data(gc);
            for (int64_t i = 0; i < k; i++) d[ix[i]] += g[i];
        }
    }
    ddl_tensor_release(gc);
    ddl_tensor_release(ic);
    return st;
}
