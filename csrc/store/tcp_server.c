/* tcp_server.c: the TCP store server (ddl_tcp_server_new/_free): one thread with a poll()
 * loop over non-blocking, per-connection buffered sockets, answering the frames of wire.h from
 * the map of kv.h. A GET/WAIT for a missing key is parked until the key appears, its client
 * goes away, or its deadline passes; a client that closes its side (even half) is dropped. */
#include "ddl/store.h"

#include "store/auth.h"
#include "store/kv.h"
#include "store/util.h"
#include "store/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connection may buffer one whole frame plus some of the next before it is cut off. */
#define IN_LIMIT ((size_t)DDL_STORE_MAX_FRAME + WIRE_LEN_BYTES + 65536)
#define READ_CHUNK ((size_t)65536)
#define SHRINK_ABOVE ((size_t)1 << 20)
#define KEY_COST 64 /* what a key costs the memory budget beyond its bytes */

#include "store/tcp_server_impl.h"

static void conn_drop(srv_conn *c) {
    if (c->dead) return;
    waiter_unlink(c);
    c->srv->mem -= c->in_cap + c->out_cap;
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
    c->srv->mem += cap - c->out_cap;
    c->out = p, c->out_cap = cap;
    return 0;
}

static int reply_err(srv_conn *c, ddl_status st, const char *msg);

/* Queue a reply frame: code and fields. Returns -1 (connection dropped) when out of memory. */
static int reply(srv_conn *c, int code, int nf, const wire_field *f) {
    size_t n = wire_body_len(f, nf);
    if (n > 4096 && c->out_cap - c->out_len < WIRE_LEN_BYTES + n &&
        c->srv->mem + WIRE_LEN_BYTES + n > c->srv->lim.max_memory) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the store server's memory budget (%zu bytes, DDL_STORE_MAX_MEMORY) cannot "
                 "hold a %zu-byte answer now",
                 c->srv->lim.max_memory, n);
        return reply_err(c, DDL_E_NOMEM, msg);
    }
    if (out_reserve(c, WIRE_LEN_BYTES + n) < 0) {
        conn_drop(c);
        return -1;
    }
    wire_write(c->out + c->out_len, n, code, f, nf);
    c->out_len += WIRE_LEN_BYTES + n;
    return 0;
}

static int reply0(srv_conn *c) { return reply(c, 0, 0, NULL); }
static int reply1(srv_conn *c, const void *p, size_t n) {
    wire_field f = {p, n};
    return reply(c, 0, 1, &f);
}
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
    wire_field f = {(const uint8_t *)msg, strlen(msg)};
    return reply(c, -(int)st, 1, &f);
}

static int key_ok(const wire_field *k) {
    return k->n <= DDL_STORE_MAX_KEY && !memchr(k->p, 0, k->n);
}

/* Set key k to v for a request: 0 done (a new key wakes the parked requests), or -1 with an
 * out-of-memory answer queued. */
static int put(ddl_tcp_server *srv, srv_conn *c, const wire_field *k, const void *v, size_t vl) {
    int created = 0;
    kv_entry *e = kv_find(&srv->map, k->p, k->n);
    size_t old = e ? e->vlen : 0, add = e ? 0 : k->n + KEY_COST;
    if (vl + add > old && srv->mem + vl + add - old > srv->lim.max_memory) {
        char msg[300], q[STORE_KEY_STR];
        snprintf(msg, sizeof msg,
                 "the store server's memory budget (%zu bytes, DDL_STORE_MAX_MEMORY) is full: "
                 "%zu bytes for key %s not stored",
                 srv->lim.max_memory, vl, store_key_str(q, (const char *)k->p, k->n));
        reply_err(c, DDL_E_NOMEM, msg);
        return -1;
    }
    if (kv_put(&srv->map, k->p, k->n, v, vl, &created) < 0) {
        reply_err(c, DDL_E_NOMEM, "the store server is out of memory");
        return -1;
    }
    srv->mem = srv->mem + vl + add - old;
    if (created) waiters_wake(srv, k->p, k->n);
    return 0;
}

enum { H_BAD = -1, H_DONE = 0, H_PARKED = 1 };

/* Handle the frame body b[0:n] (opcode + fields). H_DONE with a reply queued (or the
 * connection dropped when out of memory), H_PARKED, or H_BAD for a malformed frame. */
static int handle(ddl_tcp_server *srv, srv_conn *c, const uint8_t *b, size_t n) {
    const uint8_t *p = b + 1, *end = b + n;
    wire_field f[3];
    kv_map *m = &srv->map;
    if (b[0] == OP_HELLO) {
        if (p != end) return H_BAD;
        uint8_t need = srv->token != NULL;
        wire_field hf[2] = {{&need, 1}, {c->nonce, STORE_NONCE_LEN}};
        reply(c, 0, 2, hf);
        return H_DONE;
    }
    if (b[0] == OP_AUTH) {
        if (wire_fields_exact(p, end, f, 1) < 0 || f[0].n != STORE_MAC_LEN) return H_BAD;
        uint8_t mac[STORE_MAC_LEN];
        if (srv->token) store_auth_mac(mac, srv->token, c->nonce);
        if (!srv->token || store_ct_equal(mac, f[0].p, STORE_MAC_LEN)) {
            c->authed = 1;
            reply0(c);
        } else {
            reply_err(c, DDL_E_COMM,
                      "wrong store token: this client's DDL_STORE_TOKEN is not the server's");
            c->closing = 1;
        }
        return H_DONE;
    }
    if (!c->authed) {
        reply_err(c, DDL_E_COMM,
                  "this store server requires a token: set DDL_STORE_TOKEN to the job's token "
                  "(ddl.run exports it to its workers)");
        c->closing = 1;
        return H_DONE;
    }
    switch (b[0]) {
    case OP_SET:
        if (wire_fields_exact(p, end, f, 2) < 0 || !key_ok(&f[0])) return H_BAD;
        if (put(srv, c, &f[0], f[1].p, f[1].n) == 0) reply0(c);
        return H_DONE;
    case OP_GET: {
        if (wire_fields_exact(p, end, f, 2) < 0 || f[0].n != 8 || !key_ok(&f[1])) return H_BAD;
        kv_entry *e = kv_find(m, f[1].p, f[1].n);
        if (e) {
            reply1(c, e->val, e->vlen);
            return H_DONE;
        }
        c->whash = store_hash(m->seed, f[1].p, f[1].n);
        break; /* park */
    }
    case OP_ADD: {
        if (wire_fields_exact(p, end, f, 2) < 0 || !key_ok(&f[0]) || f[1].n != 8) return H_BAD;
        kv_entry *e = kv_find(m, f[0].p, f[0].n);
        int64_t r;
        if (store_add_apply(&r, e ? e->val : NULL, e ? e->vlen : 0, e != NULL, get_be64(f[1].p))) {
            reply_err(c, DDL_E_VALUE, ddl_last_error());
            return H_DONE;
        }
        char txt[24];
        int tl = snprintf(txt, sizeof txt, "%" PRId64, r);
        if (put(srv, c, &f[0], txt, (size_t)tl) == 0) reply_i64(c, r);
        return H_DONE;
    }
    case OP_COMPARE_SET: {
        if (wire_fields_exact(p, end, f, 3) < 0 || !key_ok(&f[0])) return H_BAD;
        kv_entry *e = kv_find(m, f[0].p, f[0].n);
        if (!e && f[1].n) { /* PyTorch: a missing key with a non-empty expectation */
            reply1(c, f[1].p, f[1].n);
            return H_DONE;
        }
        if (!e || (e->vlen == f[1].n && memcmp(e->val, f[1].p, f[1].n) == 0)) {
            if (put(srv, c, &f[0], f[2].p, f[2].n) == 0) reply1(c, f[2].p, f[2].n);
            return H_DONE;
        }
        reply1(c, e->val, e->vlen);
        return H_DONE;
    }
    case OP_WAIT:
    case OP_CHECK: {
        const uint8_t *q = p;
        wire_field k;
        int r, nk = 0, all = 1;
        if (b[0] == OP_WAIT && (wire_next_field(&q, end, &k) != 1 || k.n != 8)) return H_BAD;
        const uint8_t *keys = q;
        while ((r = wire_next_field(&q, end, &k)) == 1) {
            if (!key_ok(&k)) return H_BAD;
            nk++;
        }
        if (r < 0 || nk == 0) return H_BAD;
        /* a WAIT woken again resumes at the first key it had not seen (keys are not
         * checked twice: a parked WAIT costs O(its keys) in all, not per SET) */
        q = b[0] == OP_WAIT && c->parked ? b + c->wait_from : keys;
        for (const uint8_t *at = q; all && wire_next_field(&q, end, &k) == 1; at = q) {
            all = kv_find(m, k.p, k.n) != NULL;
            if (!all) c->wait_from = (size_t)(at - b), c->whash = store_hash(m->seed, k.p, k.n);
        }
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
    case OP_DELETE: {
        if (wire_fields_exact(p, end, f, 1) < 0 || !key_ok(&f[0])) return H_BAD;
        kv_entry *e = kv_find(m, f[0].p, f[0].n);
        if (e) srv->mem -= e->vlen + e->klen + KEY_COST;
        reply_u8(c, kv_del(m, f[0].p, f[0].n));
        return H_DONE;
    }
    case OP_NUM_KEYS:
        if (p != end) return H_BAD;
        reply_i64(c, (int64_t)m->n);
        return H_DONE;
    default: return H_BAD;
    }
    /* GET/WAIT for keys not there yet: the timeout is the first field */
    if (!c->parked) {
        int64_t t = get_be64(p + 4);
        c->park_deadline = store_deadline(t);
    }
    return H_PARKED;
}

static void conn_flush(srv_conn *c) {
    while (!c->dead && c->out_off < c->out_len) {
        ssize_t r =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
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
    if (c->closing) { /* an error that ends the connection has been sent */
        conn_drop(c);
        return;
    }
    if (c->out_cap > SHRINK_ABOVE) { /* after a big reply, give the memory back */
        c->srv->mem -= c->out_cap;
        free(c->out);
        c->out = NULL, c->out_cap = 0;
    }
}

static void conn_consume(srv_conn *c, size_t n) {
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    c->frame_start_ms = c->in_len ? store_now_ms() : 0;
    if (c->in_len == 0 && c->in_cap > SHRINK_ABOVE) {
        c->srv->mem -= c->in_cap;
        free(c->in);
        c->in = NULL, c->in_cap = 0;
    }
}

/* Handle complete frames in order while nothing is waiting to be sent (backpressure: a
 * client that does not read its replies gets no more of them). */
static void conn_process(ddl_tcp_server *srv, srv_conn *c) {
    while (!c->dead && !c->closing && c->out_len == 0 && c->in_len >= 4) {
        uint32_t n = get_be32(c->in);
        if (n == 0 || n > DDL_STORE_MAX_FRAME || (!c->authed && n > STORE_PREAUTH_FRAME)) {
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
            waiter_link(c); /* woken only when its key appears */
            return;
        }
        c->parked = 0;
        waiter_unlink(c);
        if (c->dead) return;
        conn_consume(c, 4 + (size_t)n);
        conn_flush(c);
    }
}

/* Read and drop the rest of a frame the memory budget could not take, then answer it. */
static int conn_discard(srv_conn *c) {
    static _Thread_local uint8_t sink[READ_CHUNK];
    while (c->discard) {
        ssize_t r =
            recv(c->fd, sink, c->discard < READ_CHUNK ? c->discard : READ_CHUNK, MSG_DONTWAIT);
        if (r > 0) {
            c->discard -= (size_t)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 1;
        } else {
            conn_drop(c);
            return 1;
        }
    }
    if (c->discard_reply) {
        char msg[200];
        c->discard_reply = 0;
        snprintf(msg, sizeof msg,
                 "the store server's memory budget (%zu bytes, DDL_STORE_MAX_MEMORY) cannot "
                 "take this request now: it was dropped",
                 c->srv->lim.max_memory);
        if (reply_err(c, DDL_E_NOMEM, msg) == 0) conn_flush(c);
        c->frame_start_ms = 0;
    }
    return 0;
}

/* Whether buffering the frame at the head of c->in whole would pass the memory budget; if
 * so the connection drops it (reading it to its end) and answers out-of-memory. */
static int over_budget(srv_conn *c) {
    if (c->in_len < 4 || c->parked) return 0;
    size_t need = 4 + (size_t)get_be32(c->in);
    if (need <= c->in_cap || need <= c->in_len) return 0;
    if (c->srv->mem + (need - c->in_cap) <= c->srv->lim.max_memory) return 0;
    c->discard = need - c->in_len;
    c->discard_reply = 1;
    c->in_len = 0;
    return 1;
}

static void conn_read(srv_conn *c) {
    for (int rounds = 0; rounds < 16 && !c->dead; rounds++) { /* then let others have a turn */
        if (c->discard && conn_discard(c)) return;
        if (c->dead) return;
        if (c->in_len >= IN_LIMIT || (!c->authed && c->in_len > 4 * STORE_PREAUTH_FRAME)) {
            conn_drop(c); /* more than a frame buffered (or a stranger talking): not our client */
            return;
        }
        if (over_budget(c)) continue;
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
            c->srv->mem += cap - c->in_cap;
            c->in = p, c->in_cap = cap;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, want, MSG_DONTWAIT);
        if (r > 0) {
            if (!c->frame_start_ms) c->frame_start_ms = store_now_ms();
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

/* Answer a connection that will not be served with one error frame, best effort, and close. */
static void refuse(int fd, const char *msg) {
    uint8_t buf[300];
    wire_field f = {(const uint8_t *)msg, strlen(msg)};
    size_t n = wire_body_len(&f, 1);
    if (WIRE_LEN_BYTES + n <= sizeof buf) {
        wire_write(buf, n, -(int)DDL_E_COMM, &f, 1);
        ssize_t w = send(fd, buf, WIRE_LEN_BYTES + n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

static void server_accept(ddl_tcp_server *srv) {
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                srv->accept_paused_to = store_now_ms() + 100; /* else poll() would spin on it */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (srv->nconns >= srv->lim.max_conns) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "the store server has %zu connections, its limit (DDL_STORE_MAX_CONNS)",
                     srv->lim.max_conns);
            refuse(fd, msg);
            continue;
        }
        srv_conn *c = calloc(1, sizeof *c);
        if (c && srv->token && store_nonce(c->nonce) < 0) free(c), c = NULL;
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
        c->srv = srv;
        c->authed = srv->token == NULL;
        c->accepted_ms = store_now_ms();
        tcp_format_peer(c->peer, sizeof c->peer, (struct sockaddr *)&ss);
        srv->conns[srv->nconns++] = c;
    }
}

/* The timeout answer of a parked frame b[0:n]: for WAIT, which keys are still missing. */
static void timeout_msg(const kv_map *m, const uint8_t *b, size_t n, char *buf, size_t cap) {
    const uint8_t *p = b + 1, *end = b + n;
    wire_field k;
    size_t len = (size_t)snprintf(buf, cap, "timed out");
    if (b[0] != OP_WAIT || wire_next_field(&p, end, &k) != 1) return;
    len = (size_t)snprintf(buf, cap, "missing ");
    for (int i = 0; wire_next_field(&p, end, &k) == 1 && len < cap; i++) {
        if (kv_find(m, k.p, k.n)) continue;
        char q[STORE_KEY_STR];
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", len > 8 ? ", " : "",
                                store_key_str(q, (const char *)k.p, k.n));
    }
}

/* Time out parked requests whose deadline passed; returns the poll() timeout until the next. */
static int server_expire(ddl_tcp_server *srv) {
    int64_t now = store_now_ms(), next = INT64_MAX;
    for (size_t i = 0; i < srv->nconns; i++) {
        srv_conn *c = srv->conns[i];
        if (c->dead) continue;
        /* a stranger that does not complete the handshake, or a frame trickled in (slowloris) */
        int64_t auth_end = c->authed ? INT64_MAX : c->accepted_ms + srv->lim.auth_timeout_ms;
        int64_t frame_end = c->parked || !c->frame_start_ms
                                ? INT64_MAX
                                : c->frame_start_ms + srv->lim.frame_timeout_ms;
        if (auth_end <= now || frame_end <= now) {
            conn_drop(c);
            continue;
        }
        if (auth_end < next) next = auth_end;
        if (frame_end < next) next = frame_end;
        if (!c->parked) continue;
        if (c->park_deadline <= now) {
            char msg[512];
            c->parked = 0;
            waiter_unlink(c);
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
    while (srv->nready || srv->wake_all) {
        while (srv->nready) {
            srv_conn *c = srv->ready[--srv->nready];
            if (!c->dead && c->parked) conn_process(srv, c);
        }
        if (srv->wake_all) { /* out of memory for the ready list: the slow way, once */
            srv->wake_all = 0;
            for (size_t i = 0; i < srv->nconns; i++) {
                srv_conn *c = srv->conns[i];
                if (!c->dead && c->parked) conn_process(srv, c);
            }
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
                store_sleep_ms(10);
                continue;
            }
            if (!p) { /* serve the ones that fit; try again soon */
                n = pcap;
                timeout = 10;
            } else {
                pfd = p, pcap = n;
            }
        }
        if (srv->accept_paused_to && store_now_ms() >= srv->accept_paused_to)
            srv->accept_paused_to = 0;
        pfd[0] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};
        pfd[1] =
            (struct pollfd){.fd = srv->accept_paused_to ? -1 : srv->listen_fd, .events = POLLIN};
        size_t npolled = n - 2;
        for (size_t i = 0; i < npolled; i++) {
            srv_conn *c = srv->conns[i];
            pfd[2 + i] = (struct pollfd){
                .fd = c->fd, .events = (short)(POLLIN | (c->out_len > c->out_off ? POLLOUT : 0))};
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0) {
            if (errno != EINTR) store_sleep_ms(10);
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
    free(srv->ready);
    free(srv->token);
    kv_free(&srv->map);
    if (srv->listen_fd >= 0) close(srv->listen_fd);
    if (srv->wake[0] >= 0) close(srv->wake[0]);
    if (srv->wake[1] >= 0) close(srv->wake[1]);
    free(srv);
}

ddl_status ddl_tcp_server_new(ddl_tcp_server **out, const char *host, int port, int *bound_port) {
    STORE_CHECK_OUT(out, "tcpstore server");
    DDL_TRY(store_check_address("tcpstore server", host, port, 1));
    char eb[128], addr[300];
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    struct addrinfo *res = NULL;
    int g = store_lookup(host, port, AI_PASSIVE, &res), err = 0;
    if (g) {
        err = g == EAI_SYSTEM ? errno : 0;
        return store_detail(ddl_fail(DDL_E_VALUE, "tcpstore server: cannot resolve host '%s': %s",
                                     host,
                                     err ? store_errstr(err, eb, sizeof eb) : gai_strerror(g)),
                            err, "listen", addr);
    }
    int fd = tcp_listen_on(res, &err);
    freeaddrinfo(res);
    if (fd < 0)
        return store_detail(ddl_fail(DDL_E_COMM, "tcpstore server: cannot listen on %s:%d: %s",
                                     host, port, store_errstr(err, eb, sizeof eb)),
                            err, "listen", addr);
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
    srv->map.seed = store_random_u64();
    srv->lim = store_limits_from_env();
    const char *token = store_token();
    if (token && !(srv->token = strdup(token))) {
        server_free(srv);
        DDL_FAIL(DDL_E_NOMEM, "tcpstore server: out of memory");
    }
    atomic_init(&srv->stop, 0);
    if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        err = errno;
        server_free(srv);
        return store_detail(
            ddl_fail(DDL_E_COMM, "tcpstore server: pipe: %s", store_errstr(err, eb, sizeof eb)),
            err, "listen", addr);
    }
    /* the server thread takes no signals: they belong to the application's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&srv->thread, NULL, server_main, srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        server_free(srv);
        return store_detail(ddl_fail(DDL_E_COMM, "tcpstore server: cannot start its thread: %s",
                                     store_errstr(e, eb, sizeof eb)),
                            e, "listen", addr);
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
