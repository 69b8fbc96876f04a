/* prefix.c: the prefix store (ddl_store_new_prefix): every key of a base store, as
 * "<prefix>/<key>"; num_keys counts the whole base store (as PyTorch's PrefixStore does). */
#include "store/store_impl.h"
#include "store/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ddl_store base;
    ddl_store *inner; /* one reference */
    char *prefix;
    size_t plen;
} prefix_store;

/* "<prefix>/<key>" (malloc'd). */
static ddl_status pfx_key(prefix_store *p, const char *key, char **out) {
    size_t kl = strlen(key);
    if (p->plen + 1 + kl > DDL_STORE_MAX_KEY)
        DDL_FAIL(DDL_E_VALUE, "prefix store: key with its prefix is longer than %d bytes",
                 DDL_STORE_MAX_KEY);
    char *k = malloc(p->plen + kl + 2);
    if (!k) DDL_FAIL(DDL_E_NOMEM, "prefix store: out of memory");
    memcpy(k, p->prefix, p->plen);
    k[p->plen] = '/';
    memcpy(k + p->plen + 1, key, kl + 1);
    *out = k;
    return DDL_OK;
}

static void free_keys(char **k, int n) {
    for (int i = 0; i < n; i++) free(k[i]);
    free(k);
}

static ddl_status pfx_keys(prefix_store *p, const char *const *keys, int n, char ***out) {
    char **k = calloc((size_t)n, sizeof *k);
    if (!k) DDL_FAIL(DDL_E_NOMEM, "prefix store: out of memory");
    for (int i = 0; i < n; i++) {
        ddl_status st = pfx_key(p, keys[i], &k[i]);
        if (st) {
            free_keys(k, i);
            return st;
        }
    }
    *out = k;
    return DDL_OK;
}

/* Forward one call to the base store with key (or keys[0:n]) prefixed: `pk` / `pks` name the
 * prefixed key(s) and `p_` the prefix store inside CALL. */
#define PFX_CALL(s, key, CALL)                                                                     \
    do {                                                                                           \
        prefix_store *p_ = (prefix_store *)(s);                                                    \
        char *pk;                                                                                  \
        DDL_TRY(pfx_key(p_, key, &pk));                                                            \
        ddl_status st_ = (CALL);                                                                   \
        free(pk);                                                                                  \
        return st_;                                                                                \
    } while (0)
#define PFX_CALL_KEYS(s, keys, n, CALL)                                                            \
    do {                                                                                           \
        prefix_store *p_ = (prefix_store *)(s);                                                    \
        char **k_;                                                                                 \
        DDL_TRY(pfx_keys(p_, keys, n, &k_));                                                       \
        const char *const *pks = (const char *const *)k_;                                          \
        ddl_status st_ = (CALL);                                                                   \
        free_keys(k_, n);                                                                          \
        return st_;                                                                                \
    } while (0)

static ddl_status pfx_set(ddl_store *s, const char *key, const void *val, size_t len) {
    PFX_CALL(s, key, ddl_store_set(p_->inner, pk, val, len));
}
static ddl_status pfx_get(ddl_store *s, const char *key, void **val, size_t *len,
                          int64_t timeout_ms) {
    PFX_CALL(s, key, ddl_store_get(p_->inner, pk, val, len, timeout_ms));
}
static ddl_status pfx_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    PFX_CALL(s, key, ddl_store_add(p_->inner, pk, delta, result));
}
static ddl_status pfx_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                  const void *desired, size_t dlen, void **current, size_t *clen) {
    PFX_CALL(s, key,
             ddl_store_compare_set(p_->inner, pk, expected, elen, desired, dlen, current, clen));
}
static ddl_status pfx_del(ddl_store *s, const char *key, int *deleted) {
    PFX_CALL(s, key, ddl_store_delete(p_->inner, pk, deleted));
}
static ddl_status pfx_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    PFX_CALL_KEYS(s, keys, n, ddl_store_wait(p_->inner, pks, n, timeout_ms));
}
static ddl_status pfx_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    PFX_CALL_KEYS(s, keys, n, ddl_store_check(p_->inner, pks, n, all_exist));
}

static ddl_status pfx_num_keys(ddl_store *s, int64_t *n) {
    return ddl_store_num_keys(((prefix_store *)s)->inner, n);
}

static void pfx_set_timeout(ddl_store *s, int64_t ms) {
    ddl_store_set_timeout(((prefix_store *)s)->inner, ms);
}

static void pfx_destroy(ddl_store *s) {
    prefix_store *p = (prefix_store *)s;
    ddl_store_release(p->inner);
    free(p->prefix);
    free(p);
}

STORE_VTABLE(prefix_vtable, "prefix", pfx);

ddl_status ddl_store_new_prefix(ddl_store **out, const char *prefix, ddl_store *base) {
    STORE_CHECK_OUT(out, "prefix store");
    if (!base) DDL_FAIL(DDL_E_VALUE, "prefix store: base store is NULL");
    if (!prefix) DDL_FAIL(DDL_E_VALUE, "prefix store: prefix is NULL");
    size_t pl = strlen(prefix);
    if (pl >= DDL_STORE_MAX_KEY)
        DDL_FAIL(DDL_E_VALUE, "prefix store: prefix is longer than %d bytes",
                 DDL_STORE_MAX_KEY - 1);
    char *pc;
    prefix_store *p = store_new(sizeof *p, prefix, &pc);
    if (!p) DDL_FAIL(DDL_E_NOMEM, "prefix store: out of memory");
    ddl_store_init(&p->base, &prefix_vtable);
    p->inner = ddl_store_retain(base);
    p->prefix = pc;
    p->plen = pl;
    *out = &p->base;
    return DDL_OK;
}
