/* util.h: helpers the store kinds share: clocks and backoff, argument checks of the
 * constructors, keys quoted for messages, the `add` counter's arithmetic, hashing, and the
 * structured detail of a failure. Private to csrc/store. */
#ifndef DDL_STORE_UTIL_H
#define DDL_STORE_UTIL_H

#include "ddl/store.h"

#include "core/internal.h"

#include <stddef.h>
#include <stdint.h>

struct addrinfo;

/* ---- time --------------------------------------------------------------------------------- */

/* Monotonic clock, ms. */
int64_t store_now_ms(void);
/* Absolute deadline timeout_ms from now (< 0: never, as INT64_MAX). */
int64_t store_deadline(int64_t timeout_ms);
/* Milliseconds left until deadline as a poll() timeout (-1: none). */
int store_poll_ms(int64_t deadline);
void store_sleep_ms(int64_t ms);
/* One step of a polling loop: 0 when deadline has passed; else sleep *nap ms (less when the
 * deadline is nearer), double *nap up to max and return 1. */
int store_nap(int64_t deadline, int64_t *nap, int64_t max);

/* The vtable `var` of a store kind named `kind` whose functions are p##_set, p##_get, ...
 * p##_destroy (the members of ddl_store_vtable, store_impl.h). */
#define STORE_VTABLE(var, kind, p)                                                                 \
    static const ddl_store_vtable var = {                                                          \
        .name = kind,                                                                              \
        .set = p##_set,                                                                            \
        .get = p##_get,                                                                            \
        .add = p##_add,                                                                            \
        .compare_set = p##_compare_set,                                                            \
        .wait = p##_wait,                                                                          \
        .check = p##_check,                                                                        \
        .del = p##_del,                                                                            \
        .num_keys = p##_num_keys,                                                                  \
        .set_timeout = p##_set_timeout,                                                            \
        .destroy = p##_destroy,                                                                    \
    }

/* ---- checks and messages ------------------------------------------------------------------ */

/* *out = NULL, or DDL_E_VALUE "<who>: output pointer is NULL" from the calling function. */
#define STORE_CHECK_OUT(out, who)                                                                  \
    do {                                                                                           \
        if (!(out)) DDL_FAIL(DDL_E_VALUE, "%s: output pointer is NULL", who);                      \
        *(out) = NULL;                                                                             \
    } while (0)

/* A non-empty host and a port in [1, 65535] ([0, 65535] with allow_zero). */
ddl_status store_check_address(const char *who, const char *host, int port, int allow_zero);
/* getaddrinfo for a TCP host:port with the given ai_flags; returns its code. */
int store_lookup(const char *host, int port, int flags, struct addrinfo **res);

const char *store_errstr(int e, char *buf, size_t n);

/* A key quoted for messages: printable ASCII kept, other bytes as \xNN, long keys cut. */
#define STORE_KEY_STR 96
const char *store_key_str(char buf[STORE_KEY_STR], const char *key, size_t len);
/* "key 'a'" / "keys 'a', 'b'" for a list of keys (at most four, then "and N more"). */
void store_keys_str(char *buf, size_t n, const char *const *keys, int nk);

/* Fill this thread's error record (ddl_error_detail) after a ddl_fail: the errno of the
 * failing system call (0: none), the store call ("get"), the peer ("host:port"; NULL: none).
 * Returns st, so that `return store_detail(ddl_fail(...), ...)` reports both. */
ddl_status store_detail(ddl_status st, int sys_errno, const char *op, const char *peer);

/* ---- values ------------------------------------------------------------------------------- */

/* The new counter of `add`: the old value (decimal text, when has_old) plus delta.
 * DDL_E_VALUE when the old value is not a decimal int64 or the sum overflows. */
ddl_status store_add_apply(int64_t *result, const void *old, size_t oldlen, int has_old,
                           int64_t delta);
/* A zeroed object of `size` bytes (calloc) and a strdup of str in *copy, both or neither:
 * NULL when out of memory. For constructors. */
void *store_new(size_t size, const char *str, char **copy);
/* A malloc'd copy of n bytes (at least 1 byte allocated), or NULL. */
void *store_memdup(const void *p, size_t n);
/* Seeded FNV-1a with a final mix: good low bits for table indexes. */
uint64_t store_hash(uint64_t seed, const void *p, size_t n);
/* 64 random bits (getrandom, else clock and pid). */
uint64_t store_random_u64(void);

#endif
