/* store.c: rendezvous key-value stores behind store.h: the TCP server and client, the file
 * store on a shared directory, and the prefix store. */
#include "ddl/store.h"

#include "core/internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum {
    OP_SET = 1,
    OP_GET = 2,
    OP_ADD = 3,
    OP_COMPARE_SET = 4,
    OP_WAIT = 5,
    OP_CHECK = 6,
    OP_DELETE = 7,
    OP_NUM_KEYS = 8,
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute deadline for a timeout (< 0: never). */
static int64_t deadline_after(int64_t timeout_ms) {
    if (timeout_ms < 0) return INT64_MAX;
    int64_t now = now_ms();
    return timeout_ms > INT64_MAX - now ? INT64_MAX : now + timeout_ms;
}

/* Milliseconds left until deadline as a poll() timeout (-1: none). */
static int poll_ms(int64_t deadline) {
    if (deadline == INT64_MAX) return -1;
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static const char *errstr(int e, char *buf, size_t n) { return strerror_r(e, buf, n); }

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put_be64(uint8_t *p, int64_t v) {
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(u >> (56 - 8 * i));
}
static int64_t get_be64(const uint8_t *p) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | p[i];
    return (int64_t)u;
}

/* A key quoted for messages: printable ASCII kept, other bytes as \xNN, long keys cut. */
#define KEY_STR 96
static const char *key_str(char *buf, const char *key, size_t len) {
    size_t k = 0;
    buf[k++] = '\'';
    for (size_t i = 0; i < len; i++) {
        if (k + 8 > KEY_STR) {
            memcpy(buf + k, "...", 3);
            k += 3;
            break;
        }
        unsigned char ch = (unsigned char)key[i];
        if (ch >= 32 && ch < 127 && ch != '\\' && ch != '\'')
            buf[k++] = (char)ch;
        else
            k += (size_t)snprintf(buf + k, KEY_STR - k, "\\x%02x", ch);
    }
    buf[k++] = '\'';
    buf[k] = 0;
    return buf;
}

/* "keys 'a', 'b'" for a list of keys (at most a few, then "and N more"). */
static void keys_str(char *buf, size_t n, const char *const *keys, int nk) {
    size_t k = (size_t)snprintf(buf, n, nk == 1 ? "key " : "keys ");
    for (int i = 0; i < nk && k < n; i++) {
        if (i == 4) {
            snprintf(buf + k, n - k, " and %d more", nk - 4);
            return;
        }
        char q[KEY_STR];
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "",
                              key_str(q, keys[i], strlen(keys[i])));
    }
}

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

/* The new counter for `add`: old value (has_old) plus delta. */
static ddl_status add_apply(int64_t *result, const void *old, size_t oldlen, int has_old,
                            int64_t delta) {
    int64_t cur = 0;
    char q[KEY_STR];
    if (has_old && parse_i64(old, oldlen, &cur) < 0)
        DDL_FAIL(DDL_E_VALUE, "its value %s is not a decimal integer",
                 key_str(q, old, oldlen < 64 ? oldlen : 64));
    if (__builtin_add_overflow(cur, delta, result))
        DDL_FAIL(DDL_E_VALUE, "%" PRId64 " + %" PRId64 " overflows int64", cur, delta);
    return DDL_OK;
}

static void *memdup_(const void *p, size_t n) {
    void *r = malloc(n ? n : 1);
    if (r && n) memcpy(r, p, n);
    return r;
}

/* ---- generic entry points ---------------------------------------------------------------- */

static ddl_status check_key(const char *who, const char *key) {
    if (!key) DDL_FAIL(DDL_E_VALUE, "%s: key is NULL", who);
    if (strnlen(key, DDL_STORE_MAX_KEY + 1) > DDL_STORE_MAX_KEY)
        DDL_FAIL(DDL_E_VALUE, "%s: key is longer than %d bytes", who, DDL_STORE_MAX_KEY);
    return DDL_OK;
}

static ddl_status check_keys(const char *who, const char *const *keys, int n) {
    if (!keys || n < 1) DDL_FAIL(DDL_E_VALUE, "%s: expected at least one key, got %d", who, n);
    for (int i = 0; i < n; i++) DDL_TRY(check_key(who, keys[i]));
    return DDL_OK;
}

#define CHECK_STORE(s, who)                                                                      \
    do {                                                                                         \
        if (!(s)) DDL_FAIL(DDL_E_VALUE, "%s: store is NULL", who);                              \
    } while (0)

ddl_status ddl_store_set(ddl_store *s, const char *key, const void *val, size_t len) {
    CHECK_STORE(s, "store set");
    DDL_TRY(check_key("store set", key));
    if (!val && len) DDL_FAIL(DDL_E_VALUE, "store set: value is NULL but its length is %zu", len);
    return s->vt->set(s, key, val, len);
}

ddl_status ddl_store_get(ddl_store *s, const char *key, void **val, size_t *len,
                         int64_t timeout_ms) {
    CHECK_STORE(s, "store get");
    if (!val || !len) DDL_FAIL(DDL_E_VALUE, "store get: output pointers are NULL");
    *val = NULL, *len = 0;
    DDL_TRY(check_key("store get", key));
    return s->vt->get(s, key, val, len, timeout_ms);
}

ddl_status ddl_store_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    CHECK_STORE(s, "store add");
    DDL_TRY(check_key("store add", key));
    int64_t r = 0;
    DDL_TRY(s->vt->add(s, key, delta, &r));
    if (result) *result = r;
    return DDL_OK;
}

ddl_status ddl_store_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, void **current, size_t *clen) {
    CHECK_STORE(s, "store compare_set");
    DDL_TRY(check_key("store compare_set", key));
    if ((!expected && elen) || (!desired && dlen))
        DDL_FAIL(DDL_E_VALUE, "store compare_set: a value is NULL but its length is not 0");
    void *cur = NULL;
    size_t cl = 0;
    if (current) *current = NULL;
    if (clen) *clen = 0;
    DDL_TRY(s->vt->compare_set(s, key, expected ? expected : "", elen, desired ? desired : "",
                               dlen, &cur, &cl));
    if (current)
        *current = cur;
    else
        free(cur);
    if (clen) *clen = cl;
    return DDL_OK;
}

ddl_status ddl_store_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    CHECK_STORE(s, "store wait");
    DDL_TRY(check_keys("store wait", keys, n));
    return s->vt->wait(s, keys, n, timeout_ms);
}

ddl_status ddl_store_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    CHECK_STORE(s, "store check");
    if (!all_exist) DDL_FAIL(DDL_E_VALUE, "store check: output pointer is NULL");
    DDL_TRY(check_keys("store check", keys, n));
    return s->vt->check(s, keys, n, all_exist);
}

ddl_status ddl_store_delete(ddl_store *s, const char *key, int *deleted) {
    CHECK_STORE(s, "store delete");
    DDL_TRY(check_key("store delete", key));
    int d = 0;
    DDL_TRY(s->vt->del(s, key, &d));
    if (deleted) *deleted = d;
    return DDL_OK;
}

ddl_status ddl_store_num_keys(ddl_store *s, int64_t *n) {
    CHECK_STORE(s, "store num_keys");
    if (!n) DDL_FAIL(DDL_E_VALUE, "store num_keys: output pointer is NULL");
    return s->vt->num_keys(s, n);
}

ddl_status ddl_store_set_timeout(ddl_store *s, int64_t timeout_ms) {
    CHECK_STORE(s, "store set_timeout");
    s->vt->set_timeout(s, timeout_ms < 0 ? -1 : timeout_ms);
    return DDL_OK;
}

ddl_store *ddl_store_retain(ddl_store *s) {
    if (s) __atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void ddl_store_release(ddl_store *s) {
    if (s && __atomic_fetch_sub(&s->refs, 1, __ATOMIC_ACQ_REL) == 1) s->vt->destroy(s);
}

/* ---- the server's key-value map ----------------------------------------------------------- */

typedef struct kv_entry {
    struct kv_entry *next;
    uint64_t hash;
    uint8_t *val; /* malloc'd, at least 1 byte */
    size_t vlen;
    uint32_t klen;
    char key[]; /* klen bytes */
} kv_entry;

typedef struct {
    kv_entry **b; /* (nb,) chains */
    size_t nb, n;
    uint64_t seed;
} kv_map;

static uint64_t hash_bytes(uint64_t seed, const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ seed; /* FNV-1a, seeded */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdull, h ^= h >> 33; /* spread into the low bits */
    return h;
}

static kv_entry *kv_find(const kv_map *m, const void *k, size_t kl) {
    if (!m->nb) return NULL;
    uint64_t h = hash_bytes(m->seed, k, kl);
    for (kv_entry *e = m->b[h & (m->nb - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) return e;
    return NULL;
}

/* Set k to a copy of v; *created says whether k is new. -1 when out of memory (map as it was). */
static int kv_put(kv_map *m, const void *k, size_t kl, const void *v, size_t vl, int *created) {
    kv_entry *e = kv_find(m, k, kl);
    uint8_t *copy = memdup_(v, vl);
    if (!copy) return -1;
    *created = !e;
    if (e) {
        free(e->val);
        e->val = copy, e->vlen = vl;
        return 0;
    }
    if (m->n >= m->nb) { /* grow to keep chains short */
        size_t nb = m->nb ? m->nb * 2 : 64;
        kv_entry **b = calloc(nb, sizeof *b);
        if (!b) goto oom;
        for (size_t i = 0; i < m->nb; i++)
            for (kv_entry *x = m->b[i], *nx; x; x = nx) {
                nx = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        free(m->b);
        m->b = b, m->nb = nb;
    }
    e = malloc(sizeof *e + kl);
    if (!e) goto oom;
    e->hash = hash_bytes(m->seed, k, kl);
    e->klen = (uint32_t)kl;
    memcpy(e->key, k, kl);
    e->val = copy, e->vlen = vl;
    e->next = m->b[e->hash & (m->nb - 1)];
    m->b[e->hash & (m->nb - 1)] = e;
    m->n++;
    return 0;
oom:
    free(copy);
    return -1;
}

static int kv_del(kv_map *m, const void *k, size_t kl) {
    if (!m->nb) return 0;
    uint64_t h = hash_bytes(m->seed, k, kl);
    for (kv_entry **pe = &m->b[h & (m->nb - 1)]; *pe; pe = &(*pe)->next) {
        kv_entry *e = *pe;
        if (e->hash == h && e->klen == kl && memcmp(e->key, k, kl) == 0) {
            *pe = e->next;
            free(e->val);
            free(e);
            m->n--;
            return 1;
        }
    }
    return 0;
}

static void kv_free(kv_map *m) {
    for (size_t i = 0; i < m->nb; i++)
        for (kv_entry *e = m->b[i], *nx; e; e = nx) {
            nx = e->next;
            free(e->val);
            free(e);
        }
    free(m->b);
    m->b = NULL, m->nb = m->n = 0;
}

/* ---- TCP server -------------------------------------------------------------------------- */

/* A connection may buffer one whole frame plus some of the next before it is cut off. */
#define IN_LIMIT ((size_t)DDL_STORE_MAX_FRAME + 4 + 65536)
#define READ_CHUNK ((size_t)65536)
#define SHRINK_ABOVE ((size_t)1 << 20)

typedef struct {
    int fd;
    int dead;
    int parked;           /* the frame at the head of `in` is a GET/WAIT waiting for keys */
    int64_t park_deadline; /* when a parked request times out (INT64_MAX: never) */
    char peer[64];
    uint8_t *in; /* (in_cap,) bytes received, not yet handled */
    size_t in_len, in_cap;
    uint8_t *out; /* (out_cap,) replies; out[out_off:out_len] not yet sent */
    size_t out_len, out_off, out_cap;
} srv_conn;

struct ddl_tcp_server {
    pthread_t thread;
    int listen_fd;
    int wake[2]; /* a byte on wake[1] interrupts poll() for stop */
    atomic_int stop;
    kv_map map;
    srv_conn **conns; /* (nconns,) */
    size_t nconns, cap;
    int changed;              /* a key was created since parked requests were last retried */
    int64_t accept_paused_to; /* out of fds: leave the listener alone until then */
};

static void conn_drop(srv_conn *c) {
    if (c->dead) return;
    c->dead = 1;
    close(c->fd);
    c->fd = -1;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_off = c->out_cap = 0;
}

static int out_reserve(srv_conn *c, size_t extra) {
    if (c->out_cap - c->out_len >= extra) return 0;
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap - c->out_len < extra) cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (!p) return -1;
    c->out = p, c->out_cap = cap;
    return 0;
}

/* Reply = code + fields. Returns -1 (connection dropped) when out of memory. */
static int reply(srv_conn *c, int code, int nf, const void *const *fp, const size_t *fl) {
    size_t n = 1;
    for (int i = 0; i < nf; i++) n += 4 + fl[i];
    if (out_reserve(c, 4 + n) < 0) {
        conn_drop(c);
        return -1;
    }
    uint8_t *p = c->out + c->out_len;
    put_be32(p, (uint32_t)n);
    p[4] = (uint8_t)code;
    p += 5;
    for (int i = 0; i < nf; i++) {
        put_be32(p, (uint32_t)fl[i]);
        if (fl[i]) memcpy(p + 4, fp[i], fl[i]);
        p += 4 + fl[i];
    }
    c->out_len += 4 + n;
    return 0;
}

static int reply0(srv_conn *c) { return reply(c, 0, 0, NULL, NULL); }
static int reply1(srv_conn *c, const void *p, size_t n) { return reply(c, 0, 1, &p, &n); }
static int reply_i64(srv_conn *c, int64_t v) {
    uint8_t b[8];
    put_be64(b, v);
    return reply1(c, b, 8);
}
static int reply_u8(srv_conn *c, int v) {
    uint8_t b = (uint8_t)v;
    return reply1(c, &b, 1);
}
static int reply_err(srv_conn *c, ddl_status st, const char *msg) {
    const void *p = msg;
    size_t n = strlen(msg);
    return reply(c, -(int)st, 1, &p, &n);
}

typedef struct {
    const uint8_t *p;
    uint32_t n;
} field;

/* The next field of a frame: 1 got one, 0 at the end, -1 malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, field *f) {
    if (*p == end) return 0;
    if (end - *p < 4) return -1;
    uint32_t n = get_be32(*p);
    if (n > (size_t)(end - *p) - 4) return -1;
    f->p = *p + 4, f->n = n;
    *p += 4 + (size_t)n;
    return 1;
}

/* Exactly nf fields, or -1. */
static int fields_exact(const uint8_t *p, const uint8_t *end, field *f, int nf) {
    for (int i = 0; i < nf; i++)
        if (next_field(&p, end, &f[i]) != 1) return -1;
    return p == end ? 0 : -1;
}

static int key_ok(const field *k) { return k->n <= DDL_STORE_MAX_KEY && !memchr(k->p, 0, k->n); }

enum { H_BAD = -1, H_DONE = 0, H_PARKED = 1 };

/* Handle the frame body b[0:n] (opcode + fields). H_DONE with a reply queued (or the
 * connection dropped when out of memory), H_PARKED, or H_BAD for a malformed frame. */
static int handle(ddl_tcp_server *srv, srv_conn *c, const uint8_t *b, size_t n) {
    const uint8_t *p = b + 1, *end = b + n;
    field f[3];
    kv_map *m = &srv->map;
    int created = 0;
    switch (b[0]) {
    case OP_SET:
        if (fields_exact(p, end, f, 2) < 0 || !key_ok(&f[0])) return H_BAD;
        if (kv_put(m, f[0].p, f[0].n, f[1].p, f[1].n, &created) < 0) {
            reply_err(c, DDL_E_NOMEM, "the store server is out of memory");
            return H_DONE;
        }
        srv->changed |= created;
        reply0(c);
        return H_DONE;
    case OP_GET: {
        if (fields_exact(p, end, f, 2) < 0 || f[0].n != 8 || !key_ok(&f[1])) return H_BAD;
        kv_entry *e = kv_find(m, f[1].p, f[1].n);
        if (e) {
            reply1(c, e->val, e->vlen);
            return H_DONE;
        }
        break; /* park */
    }
    case OP_ADD: {
        if (fields_exact(p, end, f, 2) < 0 || !key_ok(&f[0]) || f[1].n != 8) return H_BAD;
        kv_entry *e = kv_find(m, f[0].p, f[0].n);
        int64_t r;
        if (add_apply(&r, e ? e->val : NULL, e ? e->vlen : 0, e != NULL, get_be64(f[1].p))) {
            reply_err(c, DDL_E_VALUE, ddl_last_error());
            return H_DONE;
        }
        char txt[24];
        int tl = snprintf(txt, sizeof txt, "%" PRId64, r);
        if (kv_put(m, f[0].p, f[0].n, txt, (size_t)tl, &created) < 0) {
            reply_err(c, DDL_E_NOMEM, "the store server is out of memory");
            return H_DONE;
        }
        srv->changed |= created;
        reply_i64(c, r);
        return H_DONE;
    }
    case OP_COMPARE_SET: {
        if (fields_exact(p, end, f, 3) < 0 || !key_ok(&f[0])) return H_BAD;
        kv_entry *e = kv_find(m, f[0].p, f[0].n);
        if (!e && f[1].n) { /* PyTorch: a missing key with a non-empty expectation */
            reply1(c, f[1].p, f[1].n);
            return H_DONE;
        }
        if (!e || (e->vlen == f[1].n && memcmp(e->val, f[1].p, f[1].n) == 0)) {
            if (kv_put(m, f[0].p, f[0].n, f[2].p, f[2].n, &created) < 0) {
                reply_err(c, DDL_E_NOMEM, "the store server is out of memory");
                return H_DONE;
            }
            srv->changed |= created;
            reply1(c, f[2].p, f[2].n);
            return H_DONE;
        }
        reply1(c, e->val, e->vlen);
        return H_DONE;
    }
    case OP_WAIT:
    case OP_CHECK: {
        const uint8_t *q = p;
        field k;
        int r, nk = 0, all = 1;
        if (b[0] == OP_WAIT && (next_field(&q, end, &k) != 1 || k.n != 8)) return H_BAD;
        const uint8_t *keys = q;
        while ((r = next_field(&q, end, &k)) == 1) {
            if (!key_ok(&k)) return H_BAD;
            nk++;
        }
        if (r < 0 || nk == 0) return H_BAD;
        for (q = keys; all && next_field(&q, end, &k) == 1;) all = kv_find(m, k.p, k.n) != NULL;
        if (b[0] == OP_CHECK) {
            reply_u8(c, all);
            return H_DONE;
        }
        if (all) {
            reply0(c);
            return H_DONE;
        }
        break; /* park */
    }
    case OP_DELETE:
        if (fields_exact(p, end, f, 1) < 0 || !key_ok(&f[0])) return H_BAD;
        reply_u8(c, kv_del(m, f[0].p, f[0].n));
        return H_DONE;
    case OP_NUM_KEYS:
        if (p != end) return H_BAD;
        reply_i64(c, (int64_t)m->n);
        return H_DONE;
    default: return H_BAD;
    }
    /* GET/WAIT for keys not there yet: the timeout is the first field */
    if (!c->parked) {
        int64_t t = get_be64(p + 4);
        c->park_deadline = deadline_after(t);
    }
    return H_PARKED;
}

static void conn_flush(srv_conn *c) {
    while (!c->dead && c->out_off < c->out_len) {
        ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0)
            c->out_off += (size_t)r;
        else if (r < 0 && errno == EINTR)
            continue;
        else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        else
            conn_drop(c);
    }
    if (c->dead) return;
    c->out_off = c->out_len = 0;
    if (c->out_cap > SHRINK_ABOVE) { /* after a big reply, give the memory back */
        free(c->out);
        c->out = NULL, c->out_cap = 0;
    }
}

static void conn_consume(srv_conn *c, size_t n) {
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    if (c->in_len == 0 && c->in_cap > SHRINK_ABOVE) {
        free(c->in);
        c->in = NULL, c->in_cap = 0;
    }
}

/* Handle complete frames in order while nothing is waiting to be sent (backpressure: a
 * client that does not read its replies gets no more of them). */
static void conn_process(ddl_tcp_server *srv, srv_conn *c) {
    while (!c->dead && c->out_len == 0 && c->in_len >= 4) {
        uint32_t n = get_be32(c->in);
        if (n == 0 || n > DDL_STORE_MAX_FRAME) {
            conn_drop(c);
            return;
        }
        if (c->in_len - 4 < n) return;
        int r = handle(srv, c, c->in + 4, n);
        if (r == H_BAD) {
            conn_drop(c);
            return;
        }
        if (r == H_PARKED) {
            c->parked = 1;
            return;
        }
        c->parked = 0;
        if (c->dead) return;
        conn_consume(c, 4 + (size_t)n);
        conn_flush(c);
    }
}

static void conn_read(srv_conn *c) {
    for (int rounds = 0; rounds < 16 && !c->dead; rounds++) { /* then let others have a turn */
        if (c->in_len >= IN_LIMIT) { /* more than a frame buffered: not our client */
            conn_drop(c);
            return;
        }
        size_t want = IN_LIMIT - c->in_len < READ_CHUNK ? IN_LIMIT - c->in_len : READ_CHUNK;
        if (c->in_cap - c->in_len < want) {
            size_t cap = c->in_cap ? c->in_cap : READ_CHUNK;
            while (cap - c->in_len < want) cap *= 2;
            if (cap > IN_LIMIT) cap = IN_LIMIT;
            uint8_t *p = realloc(c->in, cap);
            if (!p) {
                conn_drop(c);
                return;
            }
            c->in = p, c->in_cap = cap;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, want, MSG_DONTWAIT);
        if (r > 0) {
            c->in_len += (size_t)r;
            if ((size_t)r < want) return;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else { /* closed (even half: we never answer a client that has hung up) or failed */
            conn_drop(c);
            return;
        }
    }
}

static void format_peer(char *buf, size_t n, const struct sockaddr *sa) {
    char a[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
        port = ntohs(s4->sin_port);
        snprintf(buf, n, "%s:%d", a, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
        port = ntohs(s6->sin6_port);
        snprintf(buf, n, "[%s]:%d", a, port);
    } else {
        snprintf(buf, n, "?");
    }
}

static void server_accept(ddl_tcp_server *srv) {
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                srv->accept_paused_to = now_ms() + 100; /* else poll() would spin on it */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        srv_conn *c = calloc(1, sizeof *c);
        if (c && srv->nconns == srv->cap) {
            size_t cap = srv->cap ? srv->cap * 2 : 16;
            srv_conn **p = realloc(srv->conns, cap * sizeof *p);
            if (p)
                srv->conns = p, srv->cap = cap;
            else
                free(c), c = NULL;
        }
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        format_peer(c->peer, sizeof c->peer, (struct sockaddr *)&ss);
        srv->conns[srv->nconns++] = c;
    }
}

/* The timeout answer of a parked frame b[0:n]: for WAIT, which keys are still missing. */
static void timeout_msg(const kv_map *m, const uint8_t *b, size_t n, char *buf, size_t cap) {
    const uint8_t *p = b + 1, *end = b + n;
    field k;
    size_t len = (size_t)snprintf(buf, cap, "timed out");
    if (b[0] != OP_WAIT || next_field(&p, end, &k) != 1) return;
    len = (size_t)snprintf(buf, cap, "missing ");
    for (int i = 0; next_field(&p, end, &k) == 1 && len < cap; i++) {
        if (kv_find(m, k.p, k.n)) continue;
        char q[KEY_STR];
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", len > 8 ? ", " : "",
                                key_str(q, (const char *)k.p, k.n));
    }
}

/* Time out parked requests whose deadline passed; returns the poll() timeout until the next. */
static int server_expire(ddl_tcp_server *srv) {
    int64_t now = now_ms(), next = INT64_MAX;
    for (size_t i = 0; i < srv->nconns; i++) {
        srv_conn *c = srv->conns[i];
        if (c->dead || !c->parked) continue;
        if (c->park_deadline <= now) {
            char msg[512];
            c->parked = 0;
            timeout_msg(&srv->map, c->in + 4, get_be32(c->in), msg, sizeof msg);
            if (reply_err(c, DDL_E_TIMEOUT, msg) < 0) continue;
            conn_consume(c, 4 + (size_t)get_be32(c->in));
            conn_flush(c);
            conn_process(srv, c);
            if (c->dead || !c->parked) continue;
        }
        if (c->park_deadline < next) next = c->park_deadline;
    }
    if (srv->accept_paused_to && srv->accept_paused_to < next) next = srv->accept_paused_to;
    if (next == INT64_MAX) return -1;
    return next <= now ? 0 : next - now > INT_MAX ? INT_MAX : (int)(next - now);
}

/* Retry parked requests while keys keep appearing. */
static void server_wake_parked(ddl_tcp_server *srv) {
    while (srv->changed) {
        srv->changed = 0;
        for (size_t i = 0; i < srv->nconns; i++) {
            srv_conn *c = srv->conns[i];
            if (!c->dead && c->parked) conn_process(srv, c);
        }
    }
}

static void server_compact(ddl_tcp_server *srv) {
    size_t k = 0;
    for (size_t i = 0; i < srv->nconns; i++) {
        if (srv->conns[i]->dead)
            free(srv->conns[i]);
        else
            srv->conns[k++] = srv->conns[i];
    }
    srv->nconns = k;
}

static void *server_main(void *arg) {
    ddl_tcp_server *srv = arg;
    struct pollfd *pfd = NULL;
    size_t pcap = 0;
    while (!atomic_load(&srv->stop)) {
        int timeout = server_expire(srv);
        server_wake_parked(srv);
        server_compact(srv);
        size_t n = 2 + srv->nconns;
        if (n > pcap) {
            struct pollfd *p = realloc(pfd, n * sizeof *p);
            if (!p && pcap < 2) {
                sleep_ms(10);
                continue;
            }
            if (!p) { /* serve the ones that fit; try again soon */
                n = pcap;
                timeout = 10;
            } else {
                pfd = p, pcap = n;
            }
        }
        if (srv->accept_paused_to && now_ms() >= srv->accept_paused_to) srv->accept_paused_to = 0;
        pfd[0] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = srv->accept_paused_to ? -1 : srv->listen_fd,
                                 .events = POLLIN};
        size_t npolled = n - 2;
        for (size_t i = 0; i < npolled; i++) {
            srv_conn *c = srv->conns[i];
            pfd[2 + i] = (struct pollfd){
                .fd = c->fd, .events = (short)(POLLIN | (c->out_len > c->out_off ? POLLOUT : 0))};
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0) {
            if (errno != EINTR) sleep_ms(10);
            continue;
        }
        if (pfd[0].revents) {
            char buf[64];
            while (read(srv->wake[0], buf, sizeof buf) > 0) {
            }
        }
        if (pfd[1].revents & POLLIN) server_accept(srv);
        for (size_t i = 0; i < npolled; i++) {
            srv_conn *c = srv->conns[i];
            short re = pfd[2 + i].revents;
            if (!re || c->dead) continue;
            if (re & POLLOUT) conn_flush(c);
            if (!c->dead && (re & (POLLIN | POLLHUP | POLLERR))) conn_read(c);
            if (!c->dead) conn_process(srv, c);
        }
    }
    free(pfd);
    return NULL;
}

static void server_free(ddl_tcp_server *srv) {
    for (size_t i = 0; i < srv->nconns; i++) {
        conn_drop(srv->conns[i]);
        free(srv->conns[i]);
    }
    free(srv->conns);
    kv_free(&srv->map);
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    if (srv->wake[0] >= 0) close(srv->wake[0]);
    if (srv->wake[1] >= 0) close(srv->wake[1]);
    free(srv);
}

static uint64_t random_u64(void) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint64_t)now_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32;
    return r;
}

static ddl_status check_port(const char *who, int port, int allow_zero) {
    if (port < (allow_zero ? 0 : 1) || port > 65535)
        DDL_FAIL(DDL_E_VALUE, "%s: port must be in [%d, 65535], got %d", who, allow_zero ? 0 : 1,
                 port);
    return DDL_OK;
}

ddl_status ddl_tcp_server_new(ddl_tcp_server **out, const char *host, int port,
                                     int *bound_port) {
    if (!out) DDL_FAIL(DDL_E_VALUE, "tcpstore server: output pointer is NULL");
    *out = NULL;
    if (!host || !host[0]) DDL_FAIL(DDL_E_VALUE, "tcpstore server: host is empty");
    DDL_TRY(check_port("tcpstore server", port, 1));
    char ps[16], eb[128];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g)
        DDL_FAIL(DDL_E_VALUE, "tcpstore server: cannot resolve host '%s': %s", host,
                 g == EAI_SYSTEM ? errstr(errno, eb, sizeof eb) : gai_strerror(g));
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        DDL_FAIL(DDL_E_COMM, "tcpstore server: cannot listen on %s:%d: %s", host, port,
                 errstr(err, eb, sizeof eb));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int bound = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    ddl_tcp_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "tcpstore server: out of memory");
    }
    srv->listen_fd = fd;
    srv->wake[0] = srv->wake[1] = -1;
    srv->map.seed = random_u64();
    atomic_init(&srv->stop, 0);
    if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        err = errno;
        server_free(srv);
        DDL_FAIL(DDL_E_COMM, "tcpstore server: pipe: %s", errstr(err, eb, sizeof eb));
    }
    /* the server thread takes no signals: they belong to the application's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&srv->thread, NULL, server_main, srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        server_free(srv);
        DDL_FAIL(DDL_E_COMM, "tcpstore server: cannot start its thread: %s",
                 errstr(e, eb, sizeof eb));
    }
    if (bound_port) *bound_port = bound;
    *out = srv;
    return DDL_OK;
}

void ddl_tcp_server_free(ddl_tcp_server *srv) {
    if (!srv) return;
    atomic_store(&srv->stop, 1);
    char b = 1;
    while (write(srv->wake[1], &b, 1) < 0 && errno == EINTR) {
    }
    pthread_join(srv->thread, NULL);
    server_free(srv);
}

/* ---- TCP client ---------------------------------------------------------------------------- */

#define POOL_MAX 4 /* idle connections kept per handle */

typedef struct {
    ddl_store base;
    pthread_mutex_t mu; /* guards idle/nidle */
    int idle[POOL_MAX];
    int nidle;
    char *host;
    int port;
    char addr[300];     /* "host:port" for messages */
    int64_t timeout_ms; /* read and written with __atomic */
} tcp_client;

static int64_t tcp_timeout(tcp_client *c) {
    return __atomic_load_n(&c->timeout_ms, __ATOMIC_RELAXED);
}

/* Wait for events on fd until deadline: 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, poll_ms(deadline));
        if (r > 0) return 1;
        if (r == 0) {
            if (deadline != INT64_MAX && now_ms() >= deadline) return 0;
            continue;
        }
        if (errno != EINTR) return -1;
    }
}

/* Whether a connection to a local port reached itself (TCP simultaneous open, possible when
 * retrying a port in the ephemeral range that nothing listens on yet). */
static int is_self_connect(int fd) {
    struct sockaddr_storage a, b;
    socklen_t al = sizeof a, bl = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &al) < 0 ||
        getpeername(fd, (struct sockaddr *)&b, &bl) < 0)
        return 0;
    return al == bl && memcmp(&a, &b, al) == 0;
}

/* *err of connect_pass for a name lookup that may work later (DNS not answering yet) */
#define ERR_RESOLVE_AGAIN (-1)

static const char *connect_err_str(int err, char *buf, size_t n) {
    return err == ERR_RESOLVE_AGAIN ? gai_strerror(EAI_AGAIN) : errstr(err, buf, n);
}

/* One pass over host's addresses: 0 connected (*fd_out), 1 failed with *err (an errno or
 * ERR_RESOLVE_AGAIN) worth a retry, or a negative status (message set) for a host that does
 * not resolve. */
static int connect_pass(const char *host, int port, int64_t deadline, int *fd_out, int *err) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g == EAI_AGAIN || g == EAI_SYSTEM) {
        *err = g == EAI_SYSTEM ? errno : ERR_RESOLVE_AGAIN;
        return 1;
    }
    if (g) return ddl_fail(DDL_E_VALUE, "store: cannot resolve host '%s': %s", host, gai_strerror(g));
    int result = 1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
        if (fd < 0) {
            *err = errno;
            continue;
        }
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r < 0 && (errno == EINPROGRESS || errno == EINTR)) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int e = 0;
            socklen_t el = sizeof e;
            if (w == 0)
                e = ETIMEDOUT;
            else if (w < 0)
                e = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
                e = errno;
            r = e ? -1 : 0;
            errno = e;
        }
        if (r < 0 || is_self_connect(fd)) {
            *err = r < 0 ? errno : ECONNREFUSED;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *fd_out = fd;
        result = 0;
        break;
    }
    freeaddrinfo(res);
    return result;
}

static ddl_status pool_take(tcp_client *c, int64_t deadline, int *fd) {
    pthread_mutex_lock(&c->mu);
    if (c->nidle) {
        *fd = c->idle[--c->nidle];
        pthread_mutex_unlock(&c->mu);
        return DDL_OK;
    }
    pthread_mutex_unlock(&c->mu);
    /* the server has answered before: one pass, no retrying a server that went away */
    int err = 0, r = connect_pass(c->host, c->port, deadline, fd, &err);
    if (r < 0) return (ddl_status)r;
    if (r > 0) {
        char eb[128];
        DDL_FAIL(DDL_E_COMM, "store: cannot reach the store server %s: %s", c->addr,
                 connect_err_str(err, eb, sizeof eb));
    }
    return DDL_OK;
}

static void pool_put(tcp_client *c, int fd) {
    pthread_mutex_lock(&c->mu);
    if (c->nidle < POOL_MAX) {
        c->idle[c->nidle++] = fd;
        fd = -1;
    }
    pthread_mutex_unlock(&c->mu);
    if (fd >= 0) close(fd);
}

/* I/O results */
enum { IO_OK = 0, IO_TIMEOUT = 1, IO_CLOSED = 2, IO_ERROR = 3 };

static int send_all(int fd, const uint8_t *p, size_t n, int64_t deadline, int *err) {
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            p += r, n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, POLLOUT, deadline);
            if (w == 0) return IO_TIMEOUT;
            if (w < 0) return *err = errno, IO_ERROR;
            continue;
        }
        if (r < 0 && (errno == EPIPE || errno == ECONNRESET)) return IO_CLOSED;
        return *err = errno, IO_ERROR;
    }
    return IO_OK;
}

static int recv_all(int fd, uint8_t *p, size_t n, int64_t deadline, int *err) {
    while (n) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r, n -= (size_t)r;
            continue;
        }
        if (r == 0) return IO_CLOSED;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w == 0) return IO_TIMEOUT;
            if (w < 0) return *err = errno, IO_ERROR;
            continue;
        }
        if (errno == ECONNRESET) return IO_CLOSED;
        return *err = errno, IO_ERROR;
    }
    return IO_OK;
}

typedef struct {
    const void *p;
    size_t n;
} span;

/* A request frame for op with nf fields (malloc'd). DDL_E_VALUE when over the frame limit. */
static ddl_status frame_build(uint8_t **out, size_t *len, const char *who, int op, const span *f,
                              int nf) {
    size_t n = 1;
    for (int i = 0; i < nf; i++) {
        if (f[i].n > DDL_STORE_MAX_FRAME || n + 4 + f[i].n > DDL_STORE_MAX_FRAME)
            DDL_FAIL(DDL_E_VALUE, "store %s: the request is larger than the %u-byte frame limit",
                     who, DDL_STORE_MAX_FRAME);
        n += 4 + f[i].n;
    }
    uint8_t *b = malloc(4 + n);
    if (!b) DDL_FAIL(DDL_E_NOMEM, "store %s: out of memory for a %zu-byte request", who, n);
    put_be32(b, (uint32_t)n);
    b[4] = (uint8_t)op;
    uint8_t *p = b + 5;
    for (int i = 0; i < nf; i++) {
        put_be32(p, (uint32_t)f[i].n);
        if (f[i].n) memcpy(p + 4, f[i].p, f[i].n);
        p += 4 + f[i].n;
    }
    *out = b, *len = 4 + n;
    return DDL_OK;
}

/* One round trip. On success *resp (malloc'd) holds the response's fields (after the ok code)
 * and *rlen their size. `who` ("get", ...) and `what` ("key 'x'") word the messages;
 * wait_ms >= 0 marks a request the server parks (its timeout). */
static ddl_status tcp_call(tcp_client *c, const char *who, const char *what, int op,
                           const span *f, int nf, int64_t wait_ms, uint8_t **resp, size_t *rlen) {
    uint8_t *req = NULL, *body = NULL;
    size_t reqlen = 0;
    *resp = NULL, *rlen = 0;
    DDL_TRY(frame_build(&req, &reqlen, who, op, f, nf));
    int64_t io = tcp_timeout(c);
    int parks = op == OP_GET || op == OP_WAIT;
    /* a parked request may take its own timeout, plus the handle's for the network */
    int64_t deadline =
        io < 0 || (parks && wait_ms < 0) ? INT64_MAX : deadline_after(io + (parks ? wait_ms : 0));
    int fd = -1, err = 0, r;
    ddl_status st = pool_take(c, deadline, &fd);
    if (st) {
        free(req);
        return st;
    }
    uint8_t hdr[4];
    r = send_all(fd, req, reqlen, deadline, &err);
    free(req);
    if (r == IO_OK) r = recv_all(fd, hdr, 4, deadline, &err);
    uint32_t n = r == IO_OK ? get_be32(hdr) : 0;
    char label[600]; /* "store get key 'x'" */
    snprintf(label, sizeof label, "store %s%s%s", who, what[0] ? " " : "", what);
    if (r == IO_OK && (n == 0 || n > DDL_STORE_MAX_FRAME + 1024)) {
        close(fd);
        DDL_FAIL(DDL_E_COMM, "%s: malformed response (length %u) from the store server %s", label,
                 n, c->addr);
    }
    if (r == IO_OK && !(body = malloc(n))) {
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for a %u-byte response", label, n);
    }
    if (r == IO_OK) r = recv_all(fd, body, n, deadline, &err);
    if (r != IO_OK) {
        char eb[128];
        close(fd); /* mid-request: its stream can no longer be trusted */
        free(body);
        if (r == IO_TIMEOUT)
            DDL_FAIL(DDL_E_TIMEOUT, "%s: no answer from the store server %s within %" PRId64 " ms",
                     label, c->addr, (parks ? wait_ms : 0) + io);
        if (r == IO_CLOSED)
            DDL_FAIL(DDL_E_COMM, "%s: the store server %s closed the connection", label, c->addr);
        DDL_FAIL(DDL_E_COMM, "%s: connection to the store server %s failed: %s", label, c->addr,
                 errstr(err, eb, sizeof eb));
    }
    pool_put(c, fd);
    if (body[0] != 0) { /* an error answer: -status and a message */
        int code = body[0];
        const uint8_t *p = body + 1;
        field m = {(const uint8_t *)"", 0};
        if (next_field(&p, body + n, &m) != 1) m.n = 0;
        st = code >= 1 && code <= -(int)DDL_E_INTERNAL ? (ddl_status)-code : DDL_E_COMM;
        if (st == DDL_E_TIMEOUT && op == OP_WAIT && m.n)
            ddl_fail(st,
                     "store %s: timed out after %" PRId64 " ms waiting for %s (%.*s; store "
                     "server %s)",
                     who, wait_ms, what, (int)m.n, (const char *)m.p, c->addr);
        else if (st == DDL_E_TIMEOUT)
            ddl_fail(st, "store %s: timed out after %" PRId64 " ms waiting for %s (store server %s)",
                     who, wait_ms, what, c->addr);
        else
            ddl_fail(st, "%s: %.*s (store server %s)", label, (int)m.n, (const char *)m.p,
                     c->addr);
        free(body);
        return st;
    }
    memmove(body, body + 1, n - 1); /* drop the code: fields from body[0] */
    *resp = body, *rlen = n - 1;
    return DDL_OK;
}

/* The one field of a response, or a malformed-response error. */
static ddl_status one_field(tcp_client *c, const char *who, const uint8_t *b, size_t n, field *f,
                            long want_len) {
    const uint8_t *p = b;
    if (next_field(&p, b + n, f) != 1 || p != b + n || (want_len >= 0 && f->n != want_len))
        DDL_FAIL(DDL_E_COMM, "store %s: malformed response from the store server %s", who,
                 c->addr);
    return DDL_OK;
}

#define KEY_WHAT(buf, key) (snprintf(buf, sizeof buf, "key %s", key_str(q_, key, strlen(key))), buf)

static ddl_status tcp_set(ddl_store *s, const char *key, const void *val, size_t len) {
    tcp_client *c = (tcp_client *)s;
    char what[KEY_STR + 8], q_[KEY_STR];
    span f[2] = {{key, strlen(key)}, {val, len}};
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "set", KEY_WHAT(what, key), OP_SET, f, 2, -1, &r, &rl));
    free(r);
    return DDL_OK;
}

static ddl_status tcp_get(ddl_store *s, const char *key, void **val, size_t *len,
                          int64_t timeout_ms) {
    tcp_client *c = (tcp_client *)s;
    char what[KEY_STR + 8], q_[KEY_STR];
    uint8_t t[8];
    put_be64(t, timeout_ms < 0 ? -1 : timeout_ms);
    span f[2] = {{t, 8}, {key, strlen(key)}};
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "get", KEY_WHAT(what, key), OP_GET, f, 2, timeout_ms < 0 ? -1 : timeout_ms,
                     &r, &rl));
    field v;
    ddl_status st = one_field(c, "get", r, rl, &v, -1);
    if (st) {
        free(r);
        return st;
    }
    memmove(r, v.p, v.n); /* the value, at the start of the malloc'd buffer */
    *val = r, *len = v.n;
    return DDL_OK;
}

static ddl_status tcp_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    tcp_client *c = (tcp_client *)s;
    char what[KEY_STR + 8], q_[KEY_STR];
    uint8_t d[8];
    put_be64(d, delta);
    span f[2] = {{key, strlen(key)}, {d, 8}};
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "add", KEY_WHAT(what, key), OP_ADD, f, 2, -1, &r, &rl));
    field v;
    ddl_status st = one_field(c, "add", r, rl, &v, 8);
    if (!st) *result = get_be64(v.p);
    free(r);
    return st;
}

static ddl_status tcp_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                  const void *desired, size_t dlen, void **current, size_t *clen) {
    tcp_client *c = (tcp_client *)s;
    char what[KEY_STR + 8], q_[KEY_STR];
    span f[3] = {{key, strlen(key)}, {expected, elen}, {desired, dlen}};
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "compare_set", KEY_WHAT(what, key), OP_COMPARE_SET, f, 3, -1, &r, &rl));
    field v;
    ddl_status st = one_field(c, "compare_set", r, rl, &v, -1);
    if (st) {
        free(r);
        return st;
    }
    memmove(r, v.p, v.n);
    *current = r, *clen = v.n;
    return DDL_OK;
}

/* WAIT and CHECK: [timeout,] key, key, ... */
static ddl_status tcp_keys_call(tcp_client *c, const char *who, int op, const char *const *keys,
                                int n, int64_t wait_ms, uint8_t **r, size_t *rl) {
    int lead = op == OP_WAIT;
    span *f = malloc((size_t)(n + lead) * sizeof *f);
    if (!f) DDL_FAIL(DDL_E_NOMEM, "store %s: out of memory", who);
    uint8_t t[8];
    put_be64(t, wait_ms);
    if (lead) f[0] = (span){t, 8};
    for (int i = 0; i < n; i++) f[lead + i] = (span){keys[i], strlen(keys[i])};
    char what[512];
    keys_str(what, sizeof what, keys, n);
    ddl_status st = tcp_call(c, who, what, op, f, n + lead, wait_ms, r, rl);
    free(f);
    return st;
}

static ddl_status tcp_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    tcp_client *c = (tcp_client *)s;
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_keys_call(c, "wait", OP_WAIT, keys, n, timeout_ms < 0 ? -1 : timeout_ms, &r, &rl));
    free(r);
    return DDL_OK;
}

static ddl_status tcp_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    tcp_client *c = (tcp_client *)s;
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_keys_call(c, "check", OP_CHECK, keys, n, -1, &r, &rl));
    field v;
    ddl_status st = one_field(c, "check", r, rl, &v, 1);
    if (!st) *all_exist = v.p[0] != 0;
    free(r);
    return st;
}

static ddl_status tcp_del(ddl_store *s, const char *key, int *deleted) {
    tcp_client *c = (tcp_client *)s;
    char what[KEY_STR + 8], q_[KEY_STR];
    span f[1] = {{key, strlen(key)}};
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "delete", KEY_WHAT(what, key), OP_DELETE, f, 1, -1, &r, &rl));
    field v;
    ddl_status st = one_field(c, "delete", r, rl, &v, 1);
    if (!st) *deleted = v.p[0] != 0;
    free(r);
    return st;
}

static ddl_status tcp_num_keys(ddl_store *s, int64_t *n) {
    tcp_client *c = (tcp_client *)s;
    uint8_t *r;
    size_t rl;
    DDL_TRY(tcp_call(c, "num_keys", "", OP_NUM_KEYS, NULL, 0, -1, &r, &rl));
    field v;
    ddl_status st = one_field(c, "num_keys", r, rl, &v, 8);
    if (!st) *n = get_be64(v.p);
    free(r);
    return st;
}

static void tcp_set_timeout(ddl_store *s, int64_t ms) {
    __atomic_store_n(&((tcp_client *)s)->timeout_ms, ms, __ATOMIC_RELAXED);
}

static void tcp_destroy(ddl_store *s) {
    tcp_client *c = (tcp_client *)s;
    for (int i = 0; i < c->nidle; i++) close(c->idle[i]);
    pthread_mutex_destroy(&c->mu);
    free(c->host);
    free(c);
}

static const ddl_store_vtable tcp_vtable = {
    .name = "tcp", .set = tcp_set, .get = tcp_get, .add = tcp_add,
    .compare_set = tcp_compare_set, .wait = tcp_wait, .check = tcp_check, .del = tcp_del,
    .num_keys = tcp_num_keys, .set_timeout = tcp_set_timeout, .destroy = tcp_destroy,
};

ddl_status ddl_store_new_tcp(ddl_store **out, const char *host, int port, int64_t timeout_ms) {
    if (!out) DDL_FAIL(DDL_E_VALUE, "store connect: output pointer is NULL");
    *out = NULL;
    if (!host || !host[0]) DDL_FAIL(DDL_E_VALUE, "store connect: host is empty");
    if (strlen(host) > 255) DDL_FAIL(DDL_E_VALUE, "store connect: host name longer than 255");
    DDL_TRY(check_port("store connect", port, 0));
    int64_t deadline = deadline_after(timeout_ms), backoff = 10;
    int fd = -1, err = ECONNREFUSED;
    for (;;) {
        int r = connect_pass(host, port, deadline, &fd, &err);
        if (r < 0) return (ddl_status)r;
        if (r == 0) break;
        int64_t left = deadline == INT64_MAX ? backoff : deadline - now_ms();
        if (left <= 0 && err == ERR_RESOLVE_AGAIN)
            DDL_FAIL(DDL_E_VALUE,
                     "store connect: cannot resolve host '%s': %s (retried for %" PRId64 " ms)",
                     host, gai_strerror(EAI_AGAIN), timeout_ms);
        if (left <= 0) {
            char eb[128];
            DDL_FAIL(DDL_E_TIMEOUT,
                     "store connect: no store server answered at %s:%d within %" PRId64
                     " ms (last error: %s)",
                     host, port, timeout_ms, errstr(err, eb, sizeof eb));
        }
        sleep_ms(backoff < left ? backoff : left);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
    tcp_client *c = calloc(1, sizeof *c);
    char *h = strdup(host);
    if (!c || !h) {
        free(c);
        free(h);
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "store connect: out of memory");
    }
    c->base.vt = &tcp_vtable;
    c->base.refs = 1;
    pthread_mutex_init(&c->mu, NULL);
    c->host = h;
    c->port = port;
    snprintf(c->addr, sizeof c->addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    c->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
    c->idle[0] = fd;
    c->nidle = 1;
    *out = &c->base;
    return DDL_OK;
}

/* ---- file store ----------------------------------------------------------------------------- */

/* Keys of up to HEX_MAX bytes are files "k-<hex of key>"; longer ones (their hex would pass
 * NAME_MAX) are "h-<128-bit hash of key, hex>". */
#define HEX_MAX 100
#define FILE_TIMEOUT_MS 300000

typedef struct {
    ddl_store base;
    char *dir;
    int64_t timeout_ms; /* __atomic */
} file_store;

static void hash128(const char *key, size_t n, uint64_t h[2]) {
    /* two independently seeded 64-bit hashes of the key; long keys are rare and trusted */
    h[0] = hash_bytes(0x243f6a8885a308d3ull, key, n);
    h[1] = hash_bytes(0x13198a2e03707344ull, key, n) ^ (uint64_t)n * 0x9e3779b97f4a7c15ull;
    h[1] ^= h[1] >> 31, h[1] *= 0xc4ceb9fe1a85ec53ull, h[1] ^= h[1] >> 29;
}

/* dir/<name for key> (malloc'd), or NULL when out of memory. */
static char *key_path(const char *dir, const char *key) {
    size_t kl = strlen(key), dl = strlen(dir);
    char *p = malloc(dl + 2 + 2 + 2 * HEX_MAX + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    char *q = p + dl;
    *q++ = '/';
    if (kl <= HEX_MAX) {
        *q++ = 'k', *q++ = '-';
        for (size_t i = 0; i < kl; i++) q += sprintf(q, "%02x", (unsigned char)key[i]);
        *q = 0;
    } else {
        uint64_t h[2];
        hash128(key, kl, h);
        sprintf(q, "h-%016" PRIx64 "%016" PRIx64, h[0], h[1]);
    }
    return p;
}

static int is_key_name(const char *name) {
    if ((name[0] != 'k' && name[0] != 'h') || name[1] != '-') return 0;
    size_t n = strlen(name + 2);
    if (name[0] == 'h' ? n != 32 : n % 2 != 0 || n > 2 * HEX_MAX) return 0;
    for (const char *p = name + 2; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

static int is_store_file(const char *name) {
    return is_key_name(name) || strcmp(name, ".lock") == 0 || strncmp(name, ".tmp-", 5) == 0;
}

/* Read a whole file: 0 ok (*buf malloc'd), 1 missing, or a status. */
static int read_file(const char *path, void **buf, size_t *len) {
    char eb[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return ddl_fail(DDL_E_COMM, "file store: cannot open %s: %s", path,
                        errstr(errno, eb, sizeof eb));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return ddl_fail(DDL_E_COMM, "file store: cannot stat %s: %s", path, errstr(e, eb, sizeof eb));
    }
    size_t cap = (size_t)st.st_size + 1, n = 0; /* files are never changed after rename() */
    uint8_t *b = malloc(cap);
    if (!b) {
        close(fd);
        return ddl_fail(DDL_E_NOMEM, "file store: out of memory reading %s", path);
    }
    for (;;) {
        if (n == cap) {
            uint8_t *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                close(fd);
                return ddl_fail(DDL_E_NOMEM, "file store: out of memory reading %s", path);
            }
            b = nb, cap *= 2;
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r > 0) {
            n += (size_t)r;
        } else if (r == 0) {
            break;
        } else if (errno != EINTR) {
            int e = errno;
            free(b);
            close(fd);
            return ddl_fail(DDL_E_COMM, "file store: cannot read %s: %s", path,
                            errstr(e, eb, sizeof eb));
        }
    }
    close(fd);
    *buf = b, *len = n;
    return 0;
}

static uint64_t tmp_seed;
static pthread_once_t tmp_once = PTHREAD_ONCE_INIT;
static void tmp_init(void) { tmp_seed = random_u64(); }

/* Write val to path atomically: a unique temp file in the same directory, then rename(). */
static ddl_status write_file(const char *dir, const char *path, const void *val, size_t len) {
    static uint64_t counter;
    char eb[128];
    pthread_once(&tmp_once, tmp_init);
    size_t dl = strlen(dir);
    char *tmp = malloc(dl + 80);
    if (!tmp) DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    /* pid alone may repeat across hosts sharing the filesystem: add a per-process random */
    snprintf(tmp, dl + 80, "%s/.tmp-%ld-%016" PRIx64 "-%" PRIu64, dir, (long)getpid(), tmp_seed,
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        ddl_fail(DDL_E_COMM, "file store: cannot create %s: %s", tmp, errstr(errno, eb, sizeof eb));
        free(tmp);
        return DDL_E_COMM;
    }
    const uint8_t *p = val;
    size_t left = len;
    int e = 0;
    while (left && !e) {
        ssize_t r = write(fd, p, left);
        if (r > 0)
            p += r, left -= (size_t)r;
        else if (r < 0 && errno != EINTR)
            e = errno;
    }
    if (close(fd) < 0 && !e) e = errno; /* NFS reports write errors at close */
    if (!e && rename(tmp, path) < 0) e = errno;
    if (e) {
        unlink(tmp);
        ddl_fail(DDL_E_COMM, "file store: cannot write %s: %s", path, errstr(e, eb, sizeof eb));
        free(tmp);
        return DDL_E_COMM;
    }
    free(tmp);
    return DDL_OK;
}

/* Take the directory's lock (flock on dir/.lock, across threads and processes) within the
 * handle's timeout; *fd is to be passed to fs_unlock. */
static ddl_status fs_lock(file_store *f, const char *who, int *fd) {
    char eb[128];
    size_t dl = strlen(f->dir);
    char *path = malloc(dl + 8);
    if (!path) DDL_FAIL(DDL_E_NOMEM, "file store %s: out of memory", who);
    snprintf(path, dl + 8, "%s/.lock", f->dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0) {
        ddl_fail(DDL_E_COMM, "file store %s: cannot open %s: %s", who, path,
                 errstr(errno, eb, sizeof eb));
        free(path);
        return DDL_E_COMM;
    }
    int64_t timeout = __atomic_load_n(&f->timeout_ms, __ATOMIC_RELAXED);
    int64_t deadline = deadline_after(timeout), nap = 1;
    ddl_status st = DDL_OK;
    for (;;) {
        if (flock(*fd, LOCK_EX | LOCK_NB) == 0) break;
        int e = errno;
        if (e == EINTR) continue;
        if (e != EWOULDBLOCK) {
            st = ddl_fail(DDL_E_COMM, "file store %s: cannot lock %s: %s", who, path,
                          errstr(e, eb, sizeof eb));
            break;
        }
        int64_t left = deadline == INT64_MAX ? nap : deadline - now_ms();
        if (left <= 0) {
            st = ddl_fail(DDL_E_TIMEOUT, "file store %s: could not lock %s within %" PRId64 " ms",
                          who, path, timeout);
            break;
        }
        sleep_ms(nap < left ? nap : left);
        nap = nap * 2 > 8 ? 8 : nap * 2;
    }
    free(path);
    if (st) {
        close(*fd);
        *fd = -1;
    }
    return st;
}

static void fs_unlock(int fd) {
    flock(fd, LOCK_UN);
    close(fd);
}

#define FS_PATH(f, path, key, who)                                                               \
    char *path = key_path((f)->dir, key);                                                       \
    if (!path) DDL_FAIL(DDL_E_NOMEM, "file store %s: out of memory", who)

static ddl_status fs_set(ddl_store *s, const char *key, const void *val, size_t len) {
    file_store *f = (file_store *)s;
    FS_PATH(f, path, key, "set");
    int lk;
    ddl_status st = fs_lock(f, "set", &lk);
    if (!st) {
        st = write_file(f->dir, path, val, len);
        fs_unlock(lk);
    }
    free(path);
    return st;
}

static ddl_status fs_get(ddl_store *s, const char *key, void **val, size_t *len,
                         int64_t timeout_ms) {
    file_store *f = (file_store *)s;
    FS_PATH(f, path, key, "get");
    int64_t deadline = deadline_after(timeout_ms), nap = 1;
    for (;;) {
        int r = read_file(path, val, len);
        if (r <= 0) {
            free(path);
            return (ddl_status)r;
        }
        int64_t left = deadline == INT64_MAX ? nap : deadline - now_ms();
        if (left <= 0) {
            char q[KEY_STR];
            free(path);
            DDL_FAIL(DDL_E_TIMEOUT,
                     "store get: timed out after %" PRId64 " ms waiting for key %s (file store %s)",
                     timeout_ms, key_str(q, key, strlen(key)), f->dir);
        }
        sleep_ms(nap < left ? nap : left);
        nap = nap * 2 > 32 ? 32 : nap * 2;
    }
}

static ddl_status fs_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    file_store *f = (file_store *)s;
    FS_PATH(f, path, key, "add");
    int lk;
    ddl_status st = fs_lock(f, "add", &lk);
    if (st) {
        free(path);
        return st;
    }
    void *old = NULL;
    size_t ol = 0;
    int r = read_file(path, &old, &ol);
    st = r < 0 ? (ddl_status)r : add_apply(result, old, ol, r == 0, delta);
    if (st && r >= 0) {
        char msg[256], q[KEY_STR];
        snprintf(msg, sizeof msg, "%s", ddl_last_error());
        ddl_fail(st, "store add key %s: %s (file store %s)", key_str(q, key, strlen(key)), msg,
                 f->dir);
    }
    if (!st) {
        char txt[24];
        int tl = snprintf(txt, sizeof txt, "%" PRId64, *result);
        st = write_file(f->dir, path, txt, (size_t)tl);
    }
    fs_unlock(lk);
    free(old);
    free(path);
    return st;
}

static ddl_status fs_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, void **current, size_t *clen) {
    file_store *f = (file_store *)s;
    FS_PATH(f, path, key, "compare_set");
    int lk;
    ddl_status st = fs_lock(f, "compare_set", &lk);
    if (st) {
        free(path);
        return st;
    }
    void *old = NULL;
    size_t ol = 0;
    int r = read_file(path, &old, &ol);
    if (r < 0) {
        st = (ddl_status)r;
    } else if (r == 1 && elen) { /* PyTorch: a missing key with a non-empty expectation */
        *current = memdup_(expected, elen), *clen = elen;
    } else if (r == 1 || (ol == elen && memcmp(old, expected, elen) == 0)) {
        st = write_file(f->dir, path, desired, dlen);
        if (!st) *current = memdup_(desired, dlen), *clen = dlen;
    } else {
        *current = old, *clen = ol;
        old = NULL;
    }
    fs_unlock(lk);
    free(old);
    free(path);
    if (!st && !*current) DDL_FAIL(DDL_E_NOMEM, "file store compare_set: out of memory");
    return st;
}

/* Whether all keys exist (*missing: index of the first one that does not, or -1). */
static ddl_status fs_exist(file_store *f, const char *const *keys, int n, int *missing) {
    char eb[128];
    *missing = -1;
    for (int i = 0; i < n; i++) {
        FS_PATH(f, path, keys[i], "wait");
        struct stat st;
        int r = stat(path, &st), e = errno;
        if (r < 0 && e != ENOENT) {
            ddl_fail(DDL_E_COMM, "file store: cannot stat %s: %s", path, errstr(e, eb, sizeof eb));
            free(path);
            return DDL_E_COMM;
        }
        free(path);
        if (r < 0) {
            *missing = i;
            return DDL_OK;
        }
    }
    return DDL_OK;
}

static ddl_status fs_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    file_store *f = (file_store *)s;
    int64_t deadline = deadline_after(timeout_ms), nap = 1;
    for (;;) {
        int missing;
        DDL_TRY(fs_exist(f, keys, n, &missing));
        if (missing < 0) return DDL_OK;
        int64_t left = deadline == INT64_MAX ? nap : deadline - now_ms();
        if (left <= 0) {
            char what[512];
            keys_str(what, sizeof what, keys + missing, n - missing);
            DDL_FAIL(DDL_E_TIMEOUT,
                     "store wait: timed out after %" PRId64 " ms waiting for %s (file store %s)",
                     timeout_ms, what, f->dir);
        }
        sleep_ms(nap < left ? nap : left);
        nap = nap * 2 > 32 ? 32 : nap * 2;
    }
}

static ddl_status fs_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    int missing;
    DDL_TRY(fs_exist((file_store *)s, keys, n, &missing));
    *all_exist = missing < 0;
    return DDL_OK;
}

static ddl_status fs_del(ddl_store *s, const char *key, int *deleted) {
    file_store *f = (file_store *)s;
    FS_PATH(f, path, key, "delete");
    int lk;
    ddl_status st = fs_lock(f, "delete", &lk);
    if (!st) {
        int r = unlink(path), e = errno;
        fs_unlock(lk);
        *deleted = r == 0;
        if (r < 0 && e != ENOENT) {
            char eb[128];
            ddl_fail(DDL_E_COMM, "file store delete: cannot remove %s: %s", path,
                     errstr(e, eb, sizeof eb));
            st = DDL_E_COMM;
        }
    }
    free(path);
    return st;
}

static ddl_status fs_num_keys(ddl_store *s, int64_t *n) {
    file_store *f = (file_store *)s;
    DIR *d = opendir(f->dir);
    if (!d) {
        char eb[128];
        DDL_FAIL(DDL_E_COMM, "file store num_keys: cannot read %s: %s", f->dir,
                 errstr(errno, eb, sizeof eb));
    }
    int64_t k = 0;
    for (struct dirent *e; (e = readdir(d));) k += is_key_name(e->d_name);
    closedir(d);
    *n = k;
    return DDL_OK;
}

static void fs_set_timeout(ddl_store *s, int64_t ms) {
    __atomic_store_n(&((file_store *)s)->timeout_ms, ms, __ATOMIC_RELAXED);
}

static void fs_destroy(ddl_store *s) {
    free(((file_store *)s)->dir);
    free(s);
}

static const ddl_store_vtable file_vtable = {
    .name = "file", .set = fs_set, .get = fs_get, .add = fs_add,
    .compare_set = fs_compare_set, .wait = fs_wait, .check = fs_check, .del = fs_del,
    .num_keys = fs_num_keys, .set_timeout = fs_set_timeout, .destroy = fs_destroy,
};

/* mkdir -p */
static ddl_status make_dirs(const char *path) {
    char eb[128];
    char *p = strdup(path);
    if (!p) DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != 0) continue;
        char ch = *q;
        *q = 0;
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            ddl_fail(DDL_E_COMM, "file store: cannot create directory %s: %s", p,
                     errstr(errno, eb, sizeof eb));
            free(p);
            return DDL_E_COMM;
        }
        *q = ch;
        if (!ch) break;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) < 0)
        DDL_FAIL(DDL_E_COMM, "file store: cannot stat %s: %s", path, errstr(errno, eb, sizeof eb));
    if (!S_ISDIR(st.st_mode)) DDL_FAIL(DDL_E_VALUE, "file store: %s is not a directory", path);
    return DDL_OK;
}

ddl_status ddl_store_new_file(ddl_store **out, const char *path) {
    if (!out) DDL_FAIL(DDL_E_VALUE, "file store: output pointer is NULL");
    *out = NULL;
    if (!path || !path[0]) DDL_FAIL(DDL_E_VALUE, "file store: path is empty");
    if (strlen(path) > PATH_MAX - 300) DDL_FAIL(DDL_E_VALUE, "file store: path is too long");
    DDL_TRY(make_dirs(path));
    file_store *f = calloc(1, sizeof *f);
    char *dir = strdup(path);
    if (!f || !dir) {
        free(f);
        free(dir);
        DDL_FAIL(DDL_E_NOMEM, "file store: out of memory");
    }
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
    f->base.vt = &file_vtable;
    f->base.refs = 1;
    f->dir = dir;
    f->timeout_ms = FILE_TIMEOUT_MS;
    *out = &f->base;
    return DDL_OK;
}

ddl_status ddl_store_file_remove(const char *path) {
    char eb[128];
    if (!path || !path[0]) DDL_FAIL(DDL_E_VALUE, "file store remove: path is empty");
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) return DDL_OK;
        DDL_FAIL(DDL_E_COMM, "file store remove: cannot read %s: %s", path,
                 errstr(errno, eb, sizeof eb));
    }
    size_t pl = strlen(path);
    ddl_status st = DDL_OK;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_store_file(e->d_name)) continue;
        size_t n = pl + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            st = ddl_fail(DDL_E_NOMEM, "file store remove: out of memory");
            break;
        }
        snprintf(p, n, "%s/%s", path, e->d_name);
        if (unlink(p) < 0 && errno != ENOENT && !st)
            st = ddl_fail(DDL_E_COMM, "file store remove: cannot remove %s: %s", p,
                          errstr(errno, eb, sizeof eb));
        free(p);
    }
    closedir(d);
    if (!st && rmdir(path) < 0 && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
        DDL_FAIL(DDL_E_COMM, "file store remove: cannot remove %s: %s", path,
                 errstr(errno, eb, sizeof eb));
    return st;
}

/* ---- prefix store ------------------------------------------------------------------------- */

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

static ddl_status pfx_keys(prefix_store *p, const char *const *keys, int n, char ***out) {
    char **k = calloc((size_t)n, sizeof *k);
    if (!k) DDL_FAIL(DDL_E_NOMEM, "prefix store: out of memory");
    for (int i = 0; i < n; i++) {
        ddl_status st = pfx_key(p, keys[i], &k[i]);
        if (st) {
            for (int j = 0; j < i; j++) free(k[j]);
            free(k);
            return st;
        }
    }
    *out = k;
    return DDL_OK;
}

static void free_keys(char **k, int n) {
    for (int i = 0; i < n; i++) free(k[i]);
    free(k);
}

#define PFX_CALL(s, key, CALL)                                                                   \
    do {                                                                                         \
        prefix_store *p_ = (prefix_store *)(s);                                                  \
        char *pk;                                                                                \
        DDL_TRY(pfx_key(p_, key, &pk));                                                          \
        ddl_status st_ = (CALL);                                                                 \
        free(pk);                                                                                \
        return st_;                                                                              \
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
    prefix_store *p = (prefix_store *)s;
    char **k;
    DDL_TRY(pfx_keys(p, keys, n, &k));
    ddl_status st = ddl_store_wait(p->inner, (const char *const *)k, n, timeout_ms);
    free_keys(k, n);
    return st;
}

static ddl_status pfx_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    prefix_store *p = (prefix_store *)s;
    char **k;
    DDL_TRY(pfx_keys(p, keys, n, &k));
    ddl_status st = ddl_store_check(p->inner, (const char *const *)k, n, all_exist);
    free_keys(k, n);
    return st;
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

static const ddl_store_vtable prefix_vtable = {
    .name = "prefix", .set = pfx_set, .get = pfx_get, .add = pfx_add,
    .compare_set = pfx_compare_set, .wait = pfx_wait, .check = pfx_check, .del = pfx_del,
    .num_keys = pfx_num_keys, .set_timeout = pfx_set_timeout, .destroy = pfx_destroy,
};

ddl_status ddl_store_new_prefix(ddl_store **out, const char *prefix, ddl_store *base) {
    if (!out) DDL_FAIL(DDL_E_VALUE, "prefix store: output pointer is NULL");
    *out = NULL;
    if (!base) DDL_FAIL(DDL_E_VALUE, "prefix store: base store is NULL");
    if (!prefix) DDL_FAIL(DDL_E_VALUE, "prefix store: prefix is NULL");
    size_t pl = strlen(prefix);
    if (pl >= DDL_STORE_MAX_KEY)
        DDL_FAIL(DDL_E_VALUE, "prefix store: prefix is longer than %d bytes", DDL_STORE_MAX_KEY - 1);
    prefix_store *p = calloc(1, sizeof *p);
    char *pc = strdup(prefix);
    if (!p || !pc) {
        free(p);
        free(pc);
        DDL_FAIL(DDL_E_NOMEM, "prefix store: out of memory");
    }
    p->base.vt = &prefix_vtable;
    p->base.refs = 1;
    p->inner = ddl_store_retain(base);
    p->prefix = pc;
    p->plen = pl;
    *out = &p->base;
    return DDL_OK;
}
