/* store_impl.h: what a kind of store implements: the vtable behind the ddl_store_* calls and
 * the `struct ddl_store` header every store embeds. Private to the store layer and to the
 * layers above that define a store kind of their own (the Redis store); usable from C++.
 *
 * To add a kind: embed `ddl_store` first in your struct, fill a `ddl_store_vtable`, and set
 * the header with ddl_store_init() (one reference). The ddl_store_* entry points (store.c)
 * check their arguments before they call the vtable, so its functions may assume: s and
 * every key non-NULL, keys of at most DDL_STORE_MAX_KEY bytes, n >= 1 keys, output pointers
 * non-NULL, value pointers non-NULL (possibly "" with length 0), timeouts < 0 as -1 or >= 0.
 * They report failures with ddl_fail() (and ddl_error_detail() for a system call or a peer). */
#ifndef DDL_STORE_IMPL_H
#define DDL_STORE_IMPL_H

#include "ddl/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Field order is relied on by positional initializers (the Redis store's): append only. */
typedef struct ddl_store_vtable {
    const char *name; /* "tcp", "file", ... for messages */
    ddl_status (*set)(ddl_store *s, const char *key, const void *val, size_t len);
    ddl_status (*get)(ddl_store *s, const char *key, void **val, size_t *len, int64_t timeout_ms);
    ddl_status (*add)(ddl_store *s, const char *key, int64_t delta, int64_t *result);
    ddl_status (*compare_set)(ddl_store *s, const char *key, const void *expected, size_t elen,
                              const void *desired, size_t dlen, void **current, size_t *clen);
    ddl_status (*wait)(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms);
    ddl_status (*check)(ddl_store *s, const char *const *keys, int n, int *all_exist);
    ddl_status (*del)(ddl_store *s, const char *key, int *deleted);
    ddl_status (*num_keys)(ddl_store *s, int64_t *n);
    void (*set_timeout)(ddl_store *s, int64_t timeout_ms);
    void (*destroy)(ddl_store *s); /* frees everything, s included */
} ddl_store_vtable;

/* refs is changed only with __atomic builtins (usable from C and C++ alike). */
struct ddl_store {
    const ddl_store_vtable *vt;
    int refs;
};

/* Set a new store's header: its vtable and the caller's one reference. */
static inline void ddl_store_init(ddl_store *s, const ddl_store_vtable *vt) {
    s->vt = vt;
    s->refs = 1;
}

#ifdef __cplusplus
}
#endif

#endif
