/* optim/group.h: what the fused optimizer files share privately: the checks of a parameter
 * group's parallel tensor arrays, the step counter, and the inlining and lerp macros. */
#ifndef DDL_OPTIM_GROUP_H
#define DDL_OPTIM_GROUP_H

#include "ddl/optim.h"

#include "core/internal.h"

#include <math.h>

/* ---- validation ------------------------------------------------------------------------- */

/* One tensor an update reads or writes for parameter i, and the name of its array. */
typedef struct {
    const ddl_tensor *t;
    const char *name;
} member;

static inline ddl_status check_group(const char *who, int n, const void *params,
                                     const void *grads) {
    if (n < 0) DDL_FAIL(DDL_E_VALUE, "%s: n must be >= 0, got %d", who, n);
    if (n > 0 && (params == NULL || grads == NULL))
        DDL_FAIL(DDL_E_VALUE, "%s: params and grads must not be NULL", who);
    return DDL_OK;
}

/* ms[0] is params[i]; every other member must match it: dtype, shape, contiguity, and no two
 * members may share memory (the kernels read and write them in one pass). */
static inline ddl_status check_members(const char *who, int i, const member *ms, int k) {
    const ddl_tensor *p = ms[0].t;
    char a[DDL_SHAPE_BUF], b[DDL_SHAPE_BUF];
    if (p == NULL) DDL_FAIL(DDL_E_VALUE, "%s: params[%d] is NULL but grads[%d] is not", who, i, i);
    if (p->dtype != DDL_FLOAT32 && p->dtype != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "%s: params[%d] is %s; optimizers update float32 or float64 tensors",
                 who, i, ddl_dtype_name(p->dtype));
    for (int j = 0; j < k; j++) {
        const ddl_tensor *t = ms[j].t;
        if (t == NULL)
            DDL_FAIL(DDL_E_VALUE, "%s: %s[%d] is NULL but params[%d] has a gradient", who,
                     ms[j].name, i, i);
        if (t->dtype != p->dtype)
            DDL_FAIL(DDL_E_TYPE, "%s: %s[%d] is %s but params[%d] is %s", who, ms[j].name, i,
                     ddl_dtype_name(t->dtype), i, ddl_dtype_name(p->dtype));
        if (t->ndim != p->ndim || memcmp(t->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim))
            DDL_FAIL(DDL_E_VALUE, "%s: %s[%d] has shape %s but params[%d] has shape %s", who,
                     ms[j].name, i, ddl_shape_str(a, sizeof a, t->ndim, t->shape), i,
                     ddl_shape_str(b, sizeof b, p->ndim, p->shape));
        if (!ddl_tensor_is_contiguous(t))
            DDL_FAIL(DDL_E_VALUE, "%s: %s[%d] (shape %s) is not contiguous", who, ms[j].name, i,
                     ddl_shape_str(a, sizeof a, t->ndim, t->shape));
        for (int l = 0; l < j; l++)
            if (ddl_tensor_may_overlap(t, ms[l].t))
                DDL_FAIL(DDL_E_VALUE, "%s: %s[%d] and %s[%d] share memory", who, ms[l].name, i,
                         ms[j].name, i);
    }
    return DDL_OK;
}

static inline ddl_status check_step(const char *who, int i, const ddl_tensor *s) {
    if (s == NULL)
        DDL_FAIL(DDL_E_VALUE, "%s: steps[%d] is NULL but params[%d] has a gradient", who, i, i);
    if (ddl_tensor_numel(s) != 1)
        DDL_FAIL(DDL_E_VALUE, "%s: steps[%d] must have one element, got %lld", who, i,
                 (long long)ddl_tensor_numel(s));
    if (s->dtype == DDL_BOOL)
        DDL_FAIL(DDL_E_TYPE, "%s: steps[%d] must be float32, float64 or int64, got bool", who, i);
    return DDL_OK;
}

/* steps[i] += 1 in its own dtype (a float32 count stops growing at 2^24, as in PyTorch);
 * returns the new count. */
static inline double advance_step(ddl_tensor *s) {
    void *p = ddl_tensor_data(s);
    ddl_store_elem(p, s->dtype, ddl_load_elem(p, s->dtype) + 1.0);
    return ddl_load_elem(p, s->dtype);
}

static inline void *data(ddl_tensor *const *ts, int i) {
    return ts ? ddl_tensor_data(ts[i]) : NULL;
}

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* torch.lerp(a, b, w): a + w (b - a) for |w| < 0.5, else b - (b - a)(1 - w); `lo` says which
 * (w is a loop invariant), w1 = 1 - w. */
#define LERP(a, b, w, w1, lo) ((lo) ? (a) + (w) * ((b) - (a)) : (b) - ((b) - (a)) * (w1))

#endif
