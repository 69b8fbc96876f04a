/* util.c: helpers the store kinds share (see util.h): clocks and backoff, argument checks,
 * keys quoted for messages, the add counter, hashing, and a failure's structured detail. */
#include "store/util.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- time --------------------------------------------------------------------------------- */

int64_t store_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t store_deadline(int64_t timeout_ms) {
    if (timeout_ms < 0) return INT64_MAX;
    int64_t now = store_now_ms();
    return timeout_ms > INT64_MAX - now ? INT64_MAX : now + timeout_ms;
}

int store_poll_ms(int64_t deadline) {
    if (deadline == INT64_MAX) return -1;
    int64_t left = deadline - store_now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

void store_sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int store_nap(int64_t deadline, int64_t *nap, int64_t max) {
    int64_t left = deadline == INT64_MAX ? *nap : deadline - store_now_ms();
    if (left <= 0) return 0;
    store_sleep_ms(*nap < left ? *nap : left);
    *nap = *nap * 2 > max ? max : *nap * 2;
    return 1;
}

/* ---- checks and messages ------------------------------------------------------------------ */

ddl_status store_check_address(const char *who, const char *host, int port, int allow_zero) {
    if (!host || !host[0]) DDL_FAIL(DDL_E_VALUE, "%s: host is empty", who);
    if (port < (allow_zero ? 0 : 1) || port > 65535)
        DDL_FAIL(DDL_E_VALUE, "%s: port must be in [%d, 65535], got %d", who, allow_zero ? 0 : 1,
                 port);
    return DDL_OK;
}

int store_lookup(const char *host, int port, int flags, struct addrinfo **res) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags | AI_NUMERICSERV;
    *res = NULL;
    return getaddrinfo(host, ps, &hints, res);
}

const char *store_errstr(int e, char *buf, size_t n) { return strerror_r(e, buf, n); }

const char *store_key_str(char buf[STORE_KEY_STR], const char *key, size_t len) {
    size_t k = 0;
    buf[k++] = '\'';
    for (size_t i = 0; i < len; i++) {
        if (k + 8 > STORE_KEY_STR) {
            memcpy(buf + k, "...", 3);
            k += 3;
            break;
        }
        unsigned char ch = (unsigned char)key[i];
        if (ch >= 32 && ch < 127 && ch != '\\' && ch != '\'')
            buf[k++] = (char)ch;
        else
            k += (size_t)snprintf(buf + k, STORE_KEY_STR - k, "\\x%02x", ch);
    }
    buf[k++] = '\'';
    buf[k] = 0;
    return buf;
}

void store_keys_str(char *buf, size_t n, const char *const *keys, int nk) {
    size_t k = (size_t)snprintf(buf, n, nk == 1 ? "key " : "keys ");
    for (int i = 0; i < nk && k < n; i++) {
        if (i == 4) {
            snprintf(buf + k, n - k, " and %d more", nk - 4);
            return;
        }
        char q[STORE_KEY_STR];
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "",
                              store_key_str(q, keys[i], strlen(keys[i])));
    }
}

ddl_status store_detail(ddl_status st, int sys_errno, const char *op, const char *peer) {
    ddl_error_info *d = ddl_error_detail();
    d->sys_errno = sys_errno;
    if (op) snprintf(d->op, sizeof d->op, "%s", op);
    if (peer) snprintf(d->peer, sizeof d->peer, "%s", peer);
    return st;
}

/* ---- values ------------------------------------------------------------------------------- */

/* Parse a decimal int64 ("-12", "+7"); -1 when not one. */
static int parse_i64(const char *p, size_t n, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    if (n && (p[0] == '-' || p[0] == '+')) neg = p[0] == '-', i = 1;
    if (i == n || n - i > 19) return -1;
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (limit - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = neg ? (v ? -(int64_t)(v - 1) - 1 : 0) : (int64_t)v;
    return 0;
}

ddl_status store_add_apply(int64_t *result, const void *old, size_t oldlen, int has_old,
                           int64_t delta) {
    int64_t cur = 0;
    char q[STORE_KEY_STR];
    if (has_old && parse_i64(old, oldlen, &cur) < 0)
        DDL_FAIL(DDL_E_VALUE, "its value %s is not a decimal integer",
                 store_key_str(q, old, oldlen < 64 ? oldlen : 64));
    if (__builtin_add_overflow(cur, delta, result))
        DDL_FAIL(DDL_E_VALUE, "%" PRId64 " + %" PRId64 " overflows int64", cur, delta);
    return DDL_OK;
}

void *store_new(size_t size, const char *str, char **copy) {
    void *p = calloc(1, size);
    *copy = strdup(str);
    if (p && *copy) return p;
    free(p);
    free(*copy);
    *copy = NULL;
    return NULL;
}

void *store_memdup(const void *p, size_t n) {
    void *r = malloc(n ? n : 1);
    if (r && n) memcpy(r, p, n);
    return r;
}

uint64_t store_hash(uint64_t seed, const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ seed; /* FNV-1a, seeded */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdull, h ^= h >> 33; /* spread into the low bits */
    return h;
}

uint64_t store_random_u64(void) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint64_t)store_now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32;
    return r;
}
