/* tcp_client.c: the TCP store client (ddl_store_new_tcp): connecting with backoff, a small
 * pool of connections per handle, and one request/response round trip (wire.h) per call. */
#include "store/auth.h"
#include "store/store_impl.h"
#include "store/util.h"
#include "store/wire.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL_MAX 4 /* idle connections kept per handle */

typedef struct {
    ddl_store base;
    pthread_mutex_t mu; /* guards idle/nidle */
    int idle[POOL_MAX];
    int nidle;
    char *host;
    int port;
    char addr[300];     /* "host:port" for messages and the error detail */
    int64_t timeout_ms; /* read and written with __atomic */
} tcp_client;

static int64_t tcp_timeout(tcp_client *c) {
    return __atomic_load_n(&c->timeout_ms, __ATOMIC_RELAXED);
}

/* ---- connecting --------------------------------------------------------------------------- */

/* Wait for events on fd until deadline: 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, store_poll_ms(deadline));
        if (r > 0) return 1;
        if (r == 0) {
            if (deadline != INT64_MAX && store_now_ms() >= deadline) return 0;
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
    return err == ERR_RESOLVE_AGAIN ? gai_strerror(EAI_AGAIN) : store_errstr(err, buf, n);
}

/* Connect fd (non-blocking) to one address within deadline: 0, or -1 with errno set. */
static int connect_one(int fd, const struct addrinfo *ai, int64_t deadline) {
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
    if (r == 0 && is_self_connect(fd)) r = -1, errno = ECONNREFUSED;
    return r;
}

/* One pass over host's addresses: 0 connected (*fd_out), 1 failed with *err (an errno or
 * ERR_RESOLVE_AGAIN) worth a retry, or a negative status (message and detail set, `op` and
 * `addr` naming the call and the server) for a host that does not resolve. */
static int connect_pass(const char *host, int port, const char *op, const char *addr,
                        int64_t deadline, int *fd_out, int *err) {
    struct addrinfo *res = NULL;
    int g = store_lookup(host, port, 0, &res);
    if (g == EAI_AGAIN || g == EAI_SYSTEM) {
        *err = g == EAI_SYSTEM ? errno : ERR_RESOLVE_AGAIN;
        return 1;
    }
    if (g)
        return store_detail(
            ddl_fail(DDL_E_VALUE, "store: cannot resolve host '%s': %s", host, gai_strerror(g)), 0,
            op, addr);
    int result = 1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            *err = errno;
            continue;
        }
        if (connect_one(fd, ai, deadline) < 0) {
            *err = errno;
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

static ddl_status handshake(int fd, const char *who, const char *addr, int64_t deadline);

/* An idle connection of the pool, or a new one; `who` names the call for the error. */
static ddl_status pool_take(tcp_client *c, const char *who, int64_t deadline, int *fd) {
    pthread_mutex_lock(&c->mu);
    if (c->nidle) {
        *fd = c->idle[--c->nidle];
        pthread_mutex_unlock(&c->mu);
        return DDL_OK;
    }
    pthread_mutex_unlock(&c->mu);
    /* the server has answered before: one pass, no retrying a server that went away */
    int err = 0, r = connect_pass(c->host, c->port, who, c->addr, deadline, fd, &err);
    if (r < 0) return (ddl_status)r;
    if (r > 0) {
        char eb[128];
        return store_detail(ddl_fail(DDL_E_COMM, "store: cannot reach the store server %s: %s",
                                     c->addr, connect_err_str(err, eb, sizeof eb)),
                            err == ERR_RESOLVE_AGAIN ? 0 : err, who, c->addr);
    }
    return handshake(*fd, who, c->addr, deadline);
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

/* ---- one round trip ----------------------------------------------------------------------- */

/* I/O results; *err gets the errno of IO_ERROR, and of IO_CLOSED by a reset (0: orderly). */
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
        if (r < 0 && (errno == EPIPE || errno == ECONNRESET)) return *err = errno, IO_CLOSED;
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
        if (errno == ECONNRESET) return *err = errno, IO_CLOSED;
        return *err = errno, IO_ERROR;
    }
    return IO_OK;
}

/* The token handshake on a new connection, when DDL_STORE_TOKEN is set: HELLO (the server
 * says whether it wants a token and gives this connection's nonce), then AUTH with the mac.
 * DDL_OK, or a status with fd closed. */
static ddl_status handshake(int fd, const char *who, const char *addr, int64_t deadline) {
    const char *token = store_token();
    if (!token) return DDL_OK;
    uint8_t req[WIRE_LEN_BYTES + 1 + 4 + STORE_MAC_LEN], body[512], hdr[WIRE_LEN_BYTES];
    const char *why = NULL;
    int err = 0;
    for (int step = 0; step < 2; step++) {
        size_t reqlen;
        if (step == 0) {
            wire_write(req, 1, OP_HELLO, NULL, 0);
            reqlen = WIRE_LEN_BYTES + 1;
        } else {
            uint8_t mac[STORE_MAC_LEN];
            const uint8_t *p = body + 1, *end = body + get_be32(hdr);
            wire_field f[2];
            if (wire_fields_exact(p, end, f, 2) < 0 || f[0].n != 1 || f[1].n != STORE_NONCE_LEN) {
                why = "a malformed answer to HELLO";
                break;
            }
            if (!f[0].p[0]) return DDL_OK; /* the server has no token: nothing to prove */
            store_auth_mac(mac, token, f[1].p);
            wire_field m = {mac, STORE_MAC_LEN};
            size_t n = wire_body_len(&m, 1);
            wire_write(req, n, OP_AUTH, &m, 1);
            reqlen = WIRE_LEN_BYTES + n;
        }
        int r = send_all(fd, req, reqlen, deadline, &err);
        if (r == IO_OK) r = recv_all(fd, hdr, sizeof hdr, deadline, &err);
        uint32_t n = r == IO_OK ? get_be32(hdr) : 0;
        if (r == IO_OK && (n == 0 || n > sizeof body)) {
            why = "a malformed answer";
            break;
        }
        if (r == IO_OK) r = recv_all(fd, body, n, deadline, &err);
        if (r != IO_OK) {
            why = r == IO_TIMEOUT ? "no answer in time" : "the connection closed";
            break;
        }
        if (body[0] != 0) { /* refused: quote the server */
            const uint8_t *p = body + 1;
            wire_field m = {(const uint8_t *)"", 0};
            if (wire_next_field(&p, body + n, &m) != 1) m.n = 0;
            close(fd);
            return store_detail(ddl_fail(DDL_E_COMM, "store %s: %.*s (store server %s)", who,
                                         (int)m.n, (const char *)m.p, addr),
                                0, who, addr);
        }
        if (step == 1) return DDL_OK;
    }
    close(fd);
    return store_detail(ddl_fail(DDL_E_COMM,
                                 "store %s: the token handshake with the store server %s "
                                 "failed: %s",
                                 who, addr, why ? why : "?"),
                        err, who, addr);
}

/* A request frame for op with nf fields (malloc'd). DDL_E_VALUE when over the frame limit. */
static ddl_status frame_build(uint8_t **out, size_t *len, const char *who, int op,
                              const wire_field *f, int nf) {
    size_t n = 1;
    for (int i = 0; i < nf; i++) {
        if (f[i].n > DDL_STORE_MAX_FRAME || n + 4 + f[i].n > DDL_STORE_MAX_FRAME)
            DDL_FAIL(DDL_E_VALUE, "store %s: the request is larger than the %u-byte frame limit",
                     who, DDL_STORE_MAX_FRAME);
        n += 4 + f[i].n;
    }
    uint8_t *b = malloc(WIRE_LEN_BYTES + n);
    if (!b) DDL_FAIL(DDL_E_NOMEM, "store %s: out of memory for a %zu-byte request", who, n);
    wire_write(b, n, op, f, nf);
    *out = b, *len = WIRE_LEN_BYTES + n;
    return DDL_OK;
}

/* Send a request and read the whole response body (malloc'd, *n bytes: code + fields) within
 * deadline. On failure the connection is closed (mid-request its stream can no longer be
 * trusted) and the message names `label` ("store get key 'x'") and the server. */
static ddl_status exchange(tcp_client *c, const char *who, const char *label, int fd,
                           const uint8_t *req, size_t reqlen, int64_t deadline, int64_t allowed_ms,
                           int capped, uint8_t **body, uint32_t *n) {
    uint8_t hdr[WIRE_LEN_BYTES];
    int err = 0, r = send_all(fd, req, reqlen, deadline, &err);
    if (r == IO_OK) r = recv_all(fd, hdr, sizeof hdr, deadline, &err);
    *n = r == IO_OK ? get_be32(hdr) : 0;
    if (r == IO_OK && (*n == 0 || *n > WIRE_MAX_RESPONSE)) {
        close(fd);
        return store_detail(ddl_fail(DDL_E_COMM,
                                     "%s: malformed response (length %u) from the store server %s",
                                     label, *n, c->addr),
                            0, who, c->addr);
    }
    if (r == IO_OK && !(*body = malloc(*n))) {
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for a %u-byte response", label, *n);
    }
    if (r == IO_OK) r = recv_all(fd, *body, *n, deadline, &err);
    if (r == IO_OK) return DDL_OK;
    char eb[128];
    close(fd);
    free(*body);
    *body = NULL;
    ddl_status st;
    if (r == IO_TIMEOUT && capped) /* not "the key is missing": the server does not answer */
        st = ddl_fail(DDL_E_COMM,
                      "%s: no answer from the store server %s within %" PRId64
                      " ms (the cap on a failure path's calls): its host may be stopped",
                      label, c->addr, allowed_ms);
    else if (r == IO_TIMEOUT)
        st = ddl_fail(DDL_E_TIMEOUT, "%s: no answer from the store server %s within %" PRId64 " ms",
                      label, c->addr, allowed_ms);
    else if (r == IO_CLOSED)
        st = ddl_fail(DDL_E_COMM, "%s: the store server %s closed the connection", label, c->addr);
    else
        st = ddl_fail(DDL_E_COMM, "%s: connection to the store server %s failed: %s", label,
                      c->addr, store_errstr(err, eb, sizeof eb));
    return store_detail(st, err, who, c->addr);
}

/* The status and message of an error answer body[0:n] (code != 0, then a message field). */
static ddl_status answer_error(tcp_client *c, const char *who, const char *what, const char *label,
                               int op, int64_t wait_ms, const uint8_t *body, size_t n) {
    int code = body[0];
    const uint8_t *p = body + 1;
    wire_field m = {(const uint8_t *)"", 0};
    if (wire_next_field(&p, body + n, &m) != 1) m.n = 0;
    ddl_status st = code >= 1 && code <= -(int)DDL_E_INTERNAL ? (ddl_status)-code : DDL_E_COMM;
    if (st == DDL_E_TIMEOUT && op == OP_WAIT && m.n)
        ddl_fail(st,
                 "store %s: timed out after %" PRId64 " ms waiting for %s (%.*s; store "
                 "server %s)",
                 who, wait_ms, what, (int)m.n, (const char *)m.p, c->addr);
    else if (st == DDL_E_TIMEOUT)
        ddl_fail(st, "store %s: timed out after %" PRId64 " ms waiting for %s (store server %s)",
                 who, wait_ms, what, c->addr);
    else
        ddl_fail(st, "%s: %.*s (store server %s)", label, (int)m.n, (const char *)m.p, c->addr);
    return store_detail(st, 0, who, c->addr);
}

/* One round trip of request op with fields f[0:nf]. `who` ("get", ...) and `what`
 * ("key 'x'") word the messages; wait_ms >= 0 is how long the server may park a GET/WAIT
 * (< 0: forever). With res == NULL the answer's fields are not looked at; otherwise the
 * answer must hold exactly one field (of want_len bytes when want_len >= 0): *res points into
 * *body, malloc'd for the caller to free. */
static ddl_status tcp_call(tcp_client *c, const char *who, const char *what, int op,
                           const wire_field *f, int nf, int64_t wait_ms, long want_len,
                           uint8_t **body, wire_field *res) {
    uint8_t *req = NULL, *b = NULL;
    size_t reqlen = 0;
    uint32_t n = 0;
    if (body) *body = NULL;
    DDL_TRY(frame_build(&req, &reqlen, who, op, f, nf));
    int64_t io = tcp_timeout(c), cap = store_thread_io_limit();
    int capped = cap >= 0 && (io < 0 || io > cap);
    if (capped) io = cap; /* a failure path's best-effort call */
    int parks = op == OP_GET || op == OP_WAIT;
    /* a parked request may take its own timeout, plus the handle's for the network */
    int64_t deadline =
        io < 0 || (parks && wait_ms < 0) ? INT64_MAX : store_deadline(io + (parks ? wait_ms : 0));
    int fd = -1;
    ddl_status st = pool_take(c, who, deadline, &fd);
    char label[600]; /* "store get key 'x'" */
    snprintf(label, sizeof label, "store %s%s%s", who, what[0] ? " " : "", what);
    if (!st)
        st = exchange(c, who, label, fd, req, reqlen, deadline, (parks ? wait_ms : 0) + io, capped,
                      &b, &n);
    free(req);
    if (st) return st;
    pool_put(c, fd);
    if (b[0] != 0) {
        st = answer_error(c, who, what, label, op, wait_ms, b, n);
    } else if (res) {
        const uint8_t *p = b + 1;
        if (wire_next_field(&p, b + n, res) != 1 || p != b + n ||
            (want_len >= 0 && res->n != (size_t)want_len))
            st = store_detail(ddl_fail(DDL_E_COMM,
                                       "store %s: malformed response from the store server %s", who,
                                       c->addr),
                              0, who, c->addr);
    }
    if (st || !res) {
        free(b);
        return st;
    }
    *body = b;
    return DDL_OK;
}

#define KEY_FIELD(key) ((wire_field){(const uint8_t *)(key), strlen(key)})

/* tcp_call for a request about one key (its message names the key). */
static ddl_status tcp_key_call(tcp_client *c, const char *who, const char *key, int op,
                               const wire_field *f, int nf, int64_t wait_ms, long want_len,
                               uint8_t **body, wire_field *res) {
    char what[STORE_KEY_STR + 8], q[STORE_KEY_STR];
    snprintf(what, sizeof what, "key %s", store_key_str(q, key, strlen(key)));
    return tcp_call(c, who, what, op, f, nf, wait_ms, want_len, body, res);
}

/* tcp_call for WAIT and CHECK: [timeout,] key, key, ... */
static ddl_status tcp_keys_call(tcp_client *c, const char *who, int op, const char *const *keys,
                                int n, int64_t wait_ms, long want_len, uint8_t **body,
                                wire_field *res) {
    int lead = op == OP_WAIT;
    wire_field *f = malloc((size_t)(n + lead) * sizeof *f);
    if (!f) DDL_FAIL(DDL_E_NOMEM, "store %s: out of memory", who);
    uint8_t t[8];
    put_be64(t, wait_ms);
    if (lead) f[0] = (wire_field){t, 8};
    for (int i = 0; i < n; i++) f[lead + i] = KEY_FIELD(keys[i]);
    char what[512];
    store_keys_str(what, sizeof what, keys, n);
    ddl_status st = tcp_call(c, who, what, op, f, n + lead, wait_ms, want_len, body, res);
    free(f);
    return st;
}

/* A response's value field as the caller's malloc'd buffer: moved to the start of body. */
static void take_value(uint8_t *body, const wire_field *v, void **out, size_t *len) {
    memmove(body, v->p, v->n);
    *out = body, *len = v->n;
}

/* ---- the vtable --------------------------------------------------------------------------- */

static ddl_status tcp_set(ddl_store *s, const char *key, const void *val, size_t len) {
    wire_field f[2] = {KEY_FIELD(key), {val, len}};
    return tcp_key_call((tcp_client *)s, "set", key, OP_SET, f, 2, -1, -1, NULL, NULL);
}

static ddl_status tcp_get(ddl_store *s, const char *key, void **val, size_t *len,
                          int64_t timeout_ms) {
    uint8_t t[8], *b;
    put_be64(t, timeout_ms);
    wire_field f[2] = {{t, 8}, KEY_FIELD(key)}, v;
    DDL_TRY(tcp_key_call((tcp_client *)s, "get", key, OP_GET, f, 2, timeout_ms, -1, &b, &v));
    take_value(b, &v, val, len);
    return DDL_OK;
}

static ddl_status tcp_add(ddl_store *s, const char *key, int64_t delta, int64_t *result) {
    uint8_t d[8], *b;
    put_be64(d, delta);
    wire_field f[2] = {KEY_FIELD(key), {d, 8}}, v;
    DDL_TRY(tcp_key_call((tcp_client *)s, "add", key, OP_ADD, f, 2, -1, 8, &b, &v));
    *result = get_be64(v.p);
    free(b);
    return DDL_OK;
}

static ddl_status tcp_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                  const void *desired, size_t dlen, void **current, size_t *clen) {
    uint8_t *b;
    wire_field f[3] = {KEY_FIELD(key), {expected, elen}, {desired, dlen}}, v;
    DDL_TRY(
        tcp_key_call((tcp_client *)s, "compare_set", key, OP_COMPARE_SET, f, 3, -1, -1, &b, &v));
    take_value(b, &v, current, clen);
    return DDL_OK;
}

static ddl_status tcp_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms) {
    return tcp_keys_call((tcp_client *)s, "wait", OP_WAIT, keys, n, timeout_ms, -1, NULL, NULL);
}

static ddl_status tcp_check(ddl_store *s, const char *const *keys, int n, int *all_exist) {
    uint8_t *b;
    wire_field v;
    DDL_TRY(tcp_keys_call((tcp_client *)s, "check", OP_CHECK, keys, n, -1, 1, &b, &v));
    *all_exist = v.p[0] != 0;
    free(b);
    return DDL_OK;
}

static ddl_status tcp_del(ddl_store *s, const char *key, int *deleted) {
    uint8_t *b;
    wire_field f[1] = {KEY_FIELD(key)}, v;
    DDL_TRY(tcp_key_call((tcp_client *)s, "delete", key, OP_DELETE, f, 1, -1, 1, &b, &v));
    *deleted = v.p[0] != 0;
    free(b);
    return DDL_OK;
}

static ddl_status tcp_num_keys(ddl_store *s, int64_t *n) {
    uint8_t *b;
    wire_field v;
    DDL_TRY(tcp_call((tcp_client *)s, "num_keys", "", OP_NUM_KEYS, NULL, 0, -1, 8, &b, &v));
    *n = get_be64(v.p);
    free(b);
    return DDL_OK;
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

STORE_VTABLE(tcp_vtable, "tcp", tcp);

ddl_status ddl_store_new_tcp(ddl_store **out, const char *host, int port, int64_t timeout_ms) {
    STORE_CHECK_OUT(out, "store connect");
    DDL_TRY(store_check_address("store connect", host, port, 0));
    if (strlen(host) > 255) DDL_FAIL(DDL_E_VALUE, "store connect: host name longer than 255");
    char addr[300];
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    int64_t deadline = store_deadline(timeout_ms), backoff = 10;
    int fd = -1, err = ECONNREFUSED;
    for (;;) {
        int r = connect_pass(host, port, "connect", addr, deadline, &fd, &err);
        if (r < 0) return (ddl_status)r;
        if (r == 0) break;
        if (store_nap(deadline, &backoff, 1000)) continue;
        if (err == ERR_RESOLVE_AGAIN)
            return store_detail(
                ddl_fail(DDL_E_VALUE,
                         "store connect: cannot resolve host '%s': %s (retried for %" PRId64 " ms)",
                         host, gai_strerror(EAI_AGAIN), timeout_ms),
                0, "connect", addr);
        char eb[128];
        return store_detail(ddl_fail(DDL_E_TIMEOUT,
                                     "store connect: no store server answered at %s:%d within "
                                     "%" PRId64 " ms (last error: %s)",
                                     host, port, timeout_ms, store_errstr(err, eb, sizeof eb)),
                            err, "connect", addr);
    }
    DDL_TRY(handshake(fd, "connect", addr, deadline));
    char *h;
    tcp_client *c = store_new(sizeof *c, host, &h);
    if (!c) {
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "store connect: out of memory");
    }
    ddl_store_init(&c->base, &tcp_vtable);
    pthread_mutex_init(&c->mu, NULL);
    c->host = h;
    c->port = port;
    memcpy(c->addr, addr, sizeof addr);
    c->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
    c->idle[0] = fd;
    c->nidle = 1;
    *out = &c->base;
    return DDL_OK;
}
