/* tcp_server_impl.h: the TCP store server's state, shared by tcp_server.c (the poll loop and
 * the requests) and tcp_waiters.c (the waiter index, peer names, the listening socket).
 * Private to csrc/store/. */
#ifndef DDL_STORE_TCP_SERVER_IMPL_H
#define DDL_STORE_TCP_SERVER_IMPL_H

#include "ddl/store.h"

#include "store/auth.h"
#include "store/kv.h"

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define WAIT_BUCKETS 1024 /* the waiter index: parked requests by the hash of their key */

typedef struct srv_conn {
    struct ddl_tcp_server *srv;
    int fd;
    int dead;
    int parked;            /* the frame at the head of `in` is a GET/WAIT waiting for keys */
    int64_t park_deadline; /* when a parked request times out (INT64_MAX: never) */
    char peer[64];
    uint8_t *in; /* (in_cap,) bytes received, not yet handled */
    size_t in_len, in_cap;
    uint8_t *out; /* (out_cap,) replies; out[out_off:out_len] not yet sent */
    size_t out_len, out_off, out_cap;
    int authed;  /* the token handshake is done (or the server has no token) */
    int closing; /* close once the queued replies are sent */
    uint8_t nonce[STORE_NONCE_LEN];
    int64_t accepted_ms, frame_start_ms; /* frame_start_ms: 0 when no frame is half read */
    size_t discard;                      /* bytes of an over-budget frame still to read and drop */
    int discard_reply;                   /* answer out-of-memory once they are */
    struct srv_conn *wnext, *wprev;      /* the waiter index chain, when windexed */
    int windexed;
    uint64_t whash;   /* hash of the key this parked request waits for */
    size_t wait_from; /* WAIT: offset in the frame body of the first key not yet seen */
} srv_conn;

struct ddl_tcp_server {
    pthread_t thread;
    int listen_fd;
    int wake[2]; /* a byte on wake[1] interrupts poll() for stop */
    atomic_int stop;
    kv_map map;
    srv_conn **conns; /* (nconns,) */
    size_t nconns, cap;
    int64_t accept_paused_to; /* out of fds: leave the listener alone until then */
    store_limits lim;
    char *token; /* NULL: no handshake */
    size_t mem;  /* bytes held: keys, values and connection buffers (lim.max_memory) */
    srv_conn *wb[WAIT_BUCKETS];
    srv_conn **ready; /* (nready,) parked requests whose key appeared: retry them */
    size_t nready, ready_cap;
    int wake_all; /* the ready list could not grow: retry every parked request */
};

/* The waiter index (tcp_waiters.c): a parked request is linked under the hash of the key it
 * waits for; waiters_wake moves those of a key that appeared to srv->ready. */
void waiter_unlink(srv_conn *c);
void waiter_link(srv_conn *c);
void waiters_wake(ddl_tcp_server *srv, const void *k, size_t kl);
/* "host:port" (or "[v6]:port") of a peer address. */
void tcp_format_peer(char *buf, size_t n, const struct sockaddr *sa);
/* A non-blocking socket listening on the first of res's addresses that binds, or -1 with the
 * errno of the last attempt in *err. */
int tcp_listen_on(const struct addrinfo *res, int *err);

#endif
