/* vec.h: a growable malloc'd array, handed over to a 1-D tensor when complete (the parser
 * and the hasher build CSR arrays of unknown length with it). Internal to the core and the layers above. */
#ifndef DDL_CORE_VEC_H
#define DDL_CORE_VEC_H

#include "core/internal.h"

#include <stdlib.h>

typedef struct {
    void *p;
    size_t n, cap, elem; /* elements used, allocated, and the size of one */
} ddl_vec;

static inline ddl_vec ddl_vec_make(size_t elem) {
    ddl_vec v = {NULL, 0, 0, elem};
    return v;
}

/* Room for `extra` more elements; -1 when out of memory (v unchanged). */
static inline int ddl_vec_reserve(ddl_vec *v, size_t extra) {
    if (v->n + extra <= v->cap) return 0;
    size_t c = v->cap ? v->cap : 1024;
    while (c < v->n + extra) {
        if (c > DDL_MAX_NBYTES / v->elem / 2) return -1;
        c *= 2;
    }
    void *q = realloc(v->p, c * v->elem);
    if (!q) return -1;
    v->p = q;
    v->cap = c;
    return 0;
}

static inline void ddl_vec_free(ddl_vec *v) {
    free(v->p);
    v->p = NULL;
    v->n = v->cap = 0;
}

/* A 1-D tensor of dtype dt that takes over v's buffer (v is left empty either way). */
static inline ddl_status ddl_vec_to_tensor(ddl_tensor **out, ddl_vec *v, ddl_dtype dt) {
    size_t n = v->n;
    void *p = v->p;
    if (!p || n < v->cap) { /* trim the slack; keep at least one element so p is never NULL */
        void *q = realloc(p, (n ? n : 1) * v->elem);
        if (q)
            p = q;
        else if (!p)
            DDL_FAIL(DDL_E_NOMEM, "out of memory");
    }
    v->p = NULL;
    v->n = v->cap = 0;
    ddl_storage *s;
    ddl_status st = ddl_storage_borrow(&s, p, n * v->elem, NULL, NULL); /* hands p over */
    if (st) {
        free(p);
        return st;
    }
    int64_t shape[1] = {(int64_t)n}, strides[1] = {1};
    st = ddl_tensor_from_storage(out, s, dt, 1, shape, strides, 0);
    ddl_storage_release(s);
    return st;
}

#endif
