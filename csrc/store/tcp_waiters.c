/* tcp_waiters.c: the TCP store server's waiter index (parked GET/WAITs by the hash of their
 * key, so a SET wakes only its own waiters), and its socket helpers (peer names, listening). */
#include "store/tcp_server_impl.h"

#include "store/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void waiter_unlink(srv_conn *c) {
    if (!c->windexed) return;
    srv_conn **head = &c->srv->wb[c->whash & (WAIT_BUCKETS - 1)];
    if (c->wprev)
        c->wprev->wnext = c->wnext;
    else
        *head = c->wnext;
    if (c->wnext) c->wnext->wprev = c->wprev;
    c->wnext = c->wprev = NULL;
    c->windexed = 0;
}

void waiter_link(srv_conn *c) {
    waiter_unlink(c);
    srv_conn **head = &c->srv->wb[c->whash & (WAIT_BUCKETS - 1)];
    c->wprev = NULL;
    c->wnext = *head;
    if (*head) (*head)->wprev = c;
    *head = c;
    c->windexed = 1;
}

/* Key k appeared: the requests parked on it (and only those) become ready. */
void waiters_wake(ddl_tcp_server *srv, const void *k, size_t kl) {
    uint64_t h = store_hash(srv->map.seed, k, kl);
    for (srv_conn *c = srv->wb[h & (WAIT_BUCKETS - 1)], *nx; c; c = nx) {
        nx = c->wnext;
        if (c->whash != h) continue;
        waiter_unlink(c);
        if (srv->nready == srv->ready_cap) {
            size_t cap = srv->ready_cap ? srv->ready_cap * 2 : 16;
            srv_conn **p = realloc(srv->ready, cap * sizeof *p);
            if (!p) {
                srv->wake_all = 1;
                continue;
            }
            srv->ready = p, srv->ready_cap = cap;
        }
        srv->ready[srv->nready++] = c;
    }
}

void tcp_format_peer(char *buf, size_t n, const struct sockaddr *sa) {
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

/* A non-blocking socket listening on host:port (the first of its addresses that binds), or -1
 * with the errno of the last attempt in *err. */
int tcp_listen_on(const struct addrinfo *res, int *err) {
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            *err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) return fd;
        *err = errno;
        close(fd);
    }
    return -1;
}
