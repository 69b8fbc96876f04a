/* store.c: the public ddl_store_* operations of store.h, for every kind of store: argument
 * checks, then one call through the store's vtable (store_impl.h); and its reference count. */
#include "store/store_impl.h"

#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

/* The checks every call shares: a store; a key, when it takes one, of at most
 * DDL_STORE_MAX_KEY bytes. `who` ("store get") starts the message. */
static ddl_status check_call(const char *who, const ddl_store *s, const char *const *key) {
    if (!s) DDL_FAIL(DDL_E_VALUE, "%s: store is NULL", who);
    if (!key) return DDL_OK;
    if (!*key) DDL_FAIL(DDL_E_VALUE, "%s: key is NULL", who);
    if (strnlen(*key, DDL_STORE_MAX_KEY + 1) > DDL_STORE_MAX_KEY)
        DDL_FAIL(DDL_E_VALUE, "%s: key is longer than %d bytes", who, DDL_STORE_MAX_KEY);
    return DDL_OK;
}

static ddl_status check_keys(const char *who, const ddl_store *s, const char *const *keys, int n) {
    DDL_TRY(check_call(who, s, NULL));
    if (!keys || n < 1) DDL_FAIL(DDL_E_VALUE, "%s: expected at least one key, got %d", who, n);
    for (int i = 0; i < n; i++) DDL_TRY(check_call(who, s, &keys[i]));
    return DDL_OK;
}

/* Timeouts reach the vtable as -1 (forever) or >= 0. */
static int64_t timeout_arg(int64_t timeout_ms) { return timeout_ms < 0 ? -1 : timeout_ms; }

ddl_status ddl_store_set(ddl_store *s, const char *key, const void *val, size_t len) {
    DDL_TRY(check_call("store set", s, &key));
    if (!val && len) DDL_FAIL(DDL_E_VALUE, "store set: value is NULL but its length is %zu", len);
    return s->vt->set(s, key, val ? val : "", len);
}

ddl_status ddl_store_get(ddl_store *s, const char *key, void **val, size_t *len,
                         int64_t timeout_ms) {
    DDL_TRY(check_call("store get", s, NULL));
    if (!val || !len) DDL_FAIL(DDL_E_VALUE, "store get: output pointers are NULL");
    *val = NULL, *len = 0;
    DDL_TRY(check_call("store get", s, &key));
    return s->vt->get(s, key, val, len, timeout_arg(timeout_ms));
}

ddl_status ddl_store_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    DDL_TRY(check_call("store add", s, &key));
    int64_t r = 0;
    DDL_TRY(s->vt->add(s, key, delta, &r));
    if (result) *result = r;
    return DDL_OK;
}

ddl_status ddl_store_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, void **current, size_t *clen) {
    DDL_TRY(check_call("store compare_set", s, &key));
    if ((!expected && elen) || (!desired && dlen))
        DDL_FAIL(DDL_E_VALUE, "store compare_set: a value is NULL but its length is not 0");
    void *cur = NULL;
    size_t cl = 0;
    if (current) *current = NULL;
    if (clen) *clen = 0;
    DDL_TRY(s->vt->compare_set(s, key, expected ? expected : "", elen, desired ? desired : "", dlen,
                               &cur, &cl));
    if (current)
        *current = cur;
    else
        free(cur);
    if (clen) *clen = cl;
    return DDL_OK;
}

ddl_status ddl_store_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    DDL_TRY(check_keys("store wait", s, keys, n));
    return s->vt->wait(s, keys, n, timeout_arg(timeout_ms));
}

ddl_status ddl_store_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    DDL_TRY(check_call("store check", s, NULL));
    if (!all_exist) DDL_FAIL(DDL_E_VALUE, "store check: output pointer is NULL");
    DDL_TRY(check_keys("store check", s, keys, n));
    return s->vt->check(s, keys, n, all_exist);
}

ddl_status ddl_store_delete(ddl_store *s, const char *key, int *deleted) {
    DDL_TRY(check_call("store delete", s, &key));
    int d = 0;
    DDL_TRY(s->vt->del(s, key, &d));
    if (deleted) *deleted = d;
    return DDL_OK;
}

ddl_status ddl_store_num_keys(ddl_store *s, int64_t *n) {
    DDL_TRY(check_call("store num_keys", s, NULL));
    if (!n) DDL_FAIL(DDL_E_VALUE, "store num_keys: output pointer is NULL");
    return s->vt->num_keys(s, n);
}

ddl_status ddl_store_set_timeout(ddl_store *s, int64_t timeout_ms) {
    DDL_TRY(check_call("store set_timeout", s, NULL));
    s->vt->set_timeout(s, timeout_arg(timeout_ms));
    return DDL_OK;
}

ddl_store *ddl_store_retain(ddl_store *s) {
    if (s) __atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void ddl_store_release(ddl_store *s) {
    if (s && __atomic_fetch_sub(&s->refs, 1, __ATOMIC_ACQ_REL) == 1) s->vt->destroy(s);
}
