/* store.h: rendezvous key-value stores (TCP client/server, shared-directory file store, prefix).
 *
 * Overview
 * --------
 * A `ddl_store` is a small key-value store that the ranks of a job share to find each other
 * (what PyTorch calls a c10d Store and Gloo a rendezvous::Store). Every kind is one handle
 * type behind the same ddl_store_* calls:
 *   - TCP: one process runs a `ddl_tcp_server` (ddl_tcp_server_new(): a thread with a poll
 *     loop); every rank, the server's own process included, connects a client with
 *     ddl_store_new_tcp().
 *   - file: a directory on a filesystem every rank sees, one file per key
 *     (ddl_store_new_file(); ddl_store_file_remove() cleans it up).
 *   - prefix: every key of another store prefixed with "<prefix>/" (ddl_store_new_prefix()).
 *   - Redis: a Redis server through Gloo's RedisStore (ddl_store_new_redis(); set/get/wait/
 *     check only).
 *
 * Keys are NUL-terminated strings of at most DDL_STORE_MAX_KEY bytes (the empty key is
 * allowed). Values are arbitrary bytes, NULs included. `get` and `wait` block until the keys
 * exist or the timeout passes; a timeout_ms < 0 waits forever. Other calls use the handle's
 * own timeout (set at connect/open time, changed with ddl_store_set_timeout()) as a deadline
 * for their I/O and locks.
 *
 * Example (error handling shortened)
 * -------
 *     ddl_tcp_server *srv = NULL;
 *     ddl_store *s = NULL;
 *     int port = 0;
 *     ddl_tcp_server_new(&srv, "127.0.0.1", 0, &port);   // rank 0 only
 *     ddl_store_new_tcp(&s, "127.0.0.1", port, 30000);       // every rank
 *     ddl_store_set(s, "rank0/addr", "10.0.0.1:4242", 13);
 *     void *v; size_t n;
 *     if (ddl_store_get(s, "rank1/addr", &v, &n, 30000) == DDL_OK) { use(v, n); free(v); }
 *     ddl_store_release(s);
 *     ddl_tcp_server_free(srv);
 *
 * Ownership: constructors write a handle holding one reference to *out. ddl_store_retain()
 * adds one; ddl_store_release() drops one and frees the store with the last (NULL is a no-op).
 * Buffers returned through `void **` are malloc'd; the caller free()s them.
 *
 * Threads: every handle may be used from several threads at once. A TCP handle keeps a small
 * pool of connections, so a thread parked in `get` does not hold up the others. The file
 * store serializes its read-modify-write calls (add, compare_set, set, delete) across threads
 * and processes with flock() on a lock file in the directory.
 *
 * Errors: DDL_E_VALUE for bad arguments (NULL pointers, a key too long, an unresolvable host,
 * `add` on a value that is not a decimal integer or that would overflow); DDL_E_TIMEOUT when a
 * deadline passes (the message names the keys); DDL_E_COMM when the server is unreachable or
 * closes the connection (the message names its address) or a file operation fails (the
 * message names the path); DDL_E_NOMEM. Nothing aborts, exits, prints or raises SIGPIPE.
 * A failure at a system call or a peer also fills the thread's ddl_last_error_info() (core.h):
 * `op` the call ("get", "wait", "connect", "listen", ...), `peer` the TCP server's
 * "host:port" (empty for the file store), `sys_errno` the errno (0 for a deadline or an
 * answer the server sent). Argument errors leave the record empty.
 *
 * The TCP server never blocks on one client: reads and writes are non-blocking and buffered
 * per connection, a parked get/wait is answered when another client creates the key (or
 * dropped when its client goes away), and a client that closes its side (even half) or sends
 * a malformed frame is dropped while the others are served. The wire format, for writing
 * other clients, is in docs/store.md (and csrc/store/wire.h).
 *
 * Other kinds of store (the Redis one) plug in through the vtable in csrc/store/store_impl.h.
 *
 * Files: store.c (these entry points), tcp_server.c, tcp_client.c, wire.h (the format both
 * ends share), kv.c (the server's map), file.c, prefix.c, util.c (shared helpers). */
#ifndef DDL_STORE_H
#define DDL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DDL_STORE_MAX_KEY 4096                  /* bytes, without the NUL */
#define DDL_STORE_MAX_FRAME (64u * 1024 * 1024) /* bytes after a frame's length prefix */

typedef struct ddl_store ddl_store;
typedef struct ddl_tcp_server ddl_tcp_server;

/* ---- constructors ---------------------------------------------------------------------- */

/* Start a TCP store server listening on `host` (a name or address, resolved with getaddrinfo;
 * it binds that address only: "0.0.0.0" or "::" for every interface) and `port` (0 = any free
 * port). *bound_port (may be NULL) receives the port it listens on. The server runs on its
 * own thread until ddl_tcp_server_free(). Errors: DDL_E_VALUE (bad port, unresolvable
 * host), DDL_E_COMM (bind/listen failed, e.g. the port is taken), DDL_E_NOMEM.
 *
 * Guards (docs/security.md; read from the environment when the server starts): with
 * DDL_STORE_TOKEN set, a connection must pass a challenge-response handshake (HMAC-SHA256 of
 * a per-connection nonce) before any command, within DDL_STORE_AUTH_TIMEOUT_MS (10 s);
 * at most DDL_STORE_MAX_CONNS connections (1024); keys, values and buffers together within
 * DDL_STORE_MAX_MEMORY bytes (512 MiB: a request beyond it is answered with DDL_E_NOMEM, the
 * connection kept); a frame must arrive whole within DDL_STORE_FRAME_TIMEOUT_MS (30 s) of
 * its first byte. Idle connections between frames are kept. */
ddl_status ddl_tcp_server_new(ddl_tcp_server **out, const char *host, int port, int *bound_port);
/* Stop the server: closes every client connection (their pending calls fail with
 * DDL_E_COMM), joins its thread and frees everything. NULL is a no-op. */
void ddl_tcp_server_free(ddl_tcp_server *srv);

/* Connect a client to the TCP store at host:port, retrying with backoff (10 ms doubling to
 * 1 s) until timeout_ms passes (< 0: forever), so clients may start before the server.
 * timeout_ms also becomes the handle's timeout. Errors: DDL_E_VALUE (bad port, host not
 * resolvable), DDL_E_TIMEOUT (no server answered in time; the message has the last connect
 * error, sys_errno its errno). With DDL_STORE_TOKEN set, every connection proves the token
 * to the server (see ddl_tcp_server_new); a server that wants a token the client lacks or
 * refuses it answers DDL_E_COMM saying so. */
ddl_status ddl_store_new_tcp(ddl_store **out, const char *host, int port, int64_t timeout_ms);

/* A store over the Redis server at host:port (csrc/store/redis.cc, through Gloo's RedisStore):
 * set/get/wait/check only; the others fail with DDL_E_VALUE. Errors name the server in the
 * record's peer ("host:port") and the call in its op ("connect", "set", "get", "wait"). */
ddl_status ddl_store_new_redis(ddl_store **out, const char *host, int port);

/* Open (creating it and its parents if missing) the directory `path` as a store. A directory
 * used before is fine: keys left in it stay visible and may be overwritten. Handle timeout:
 * 300 s. Errors: DDL_E_VALUE (path empty or not a directory), DDL_E_COMM (mkdir failed). */
ddl_status ddl_store_new_file(ddl_store **out, const char *path);
/* Remove the store files (keys, temporaries, lock) from a file store's directory and the
 * directory itself when that leaves it empty; other files are left alone. For the last rank
 * of a job to clean up. Errors: DDL_E_COMM naming the path. */
ddl_status ddl_store_file_remove(const char *path);

/* A store whose keys are "<prefix>/<key>" in `base`; it takes a reference to base.
 * num_keys counts all of base's keys (as PyTorch's PrefixStore does). */
ddl_status ddl_store_new_prefix(ddl_store **out, const char *prefix, ddl_store *base);

/* ---- operations (every handle kind) ---------------------------------------------------- */

/* Set key to the len bytes at val (val may be NULL when len == 0), replacing any value. */
ddl_status ddl_store_set(ddl_store *s, const char *key, const void *val, size_t len);
/* Wait until key exists (timeout_ms < 0: forever), then return a malloc'd copy of its value in
 * *val (never NULL on success, even for an empty value) and its length in *len.
 * DDL_E_TIMEOUT names the key. */
ddl_status ddl_store_get(ddl_store *s, const char *key, void **val, size_t *len,
                         int64_t timeout_ms);
/* Atomically add delta to the integer stored (as decimal text) at key, a missing key counting
 * as 0; *result (may be NULL) gets the new value. DDL_E_VALUE if the value is not a decimal
 * int64 or the sum overflows. */
ddl_status ddl_store_add(ddl_store *s, const char *key, int64_t delta, int64_t *result);
/* PyTorch's compare_set: if key exists and equals `expected`, set it to `desired`; if key is
 * missing and elen == 0, create it with `desired`. *current (malloc'd, caller frees) gets the
 * value now stored, or `expected` when key is missing and elen > 0 (nothing is stored);
 * current and clen may be NULL when the caller does not need it. */
ddl_status ddl_store_compare_set(ddl_store *s, const char *key, const void *expected, size_t elen,
                                 const void *desired, size_t dlen, void **current, size_t *clen);
/* Wait until all n keys (n >= 1) exist; DDL_E_TIMEOUT names the missing ones. */
ddl_status ddl_store_wait(ddl_store *s, const char *const *keys, int n, int64_t timeout_ms);
/* *all_exist = whether all n keys (n >= 1) exist now (no waiting). */
ddl_status ddl_store_check(ddl_store *s, const char *const *keys, int n, int *all_exist);
/* Delete key; *deleted (may be NULL) = whether it existed. */
ddl_status ddl_store_delete(ddl_store *s, const char *key, int *deleted);
/* *n = number of keys in the store. */
ddl_status ddl_store_num_keys(ddl_store *s, int64_t *n);
/* The deadline (ms, < 0: none) for calls that do not take one: I/O, connecting, locks. */
ddl_status ddl_store_set_timeout(ddl_store *s, int64_t timeout_ms);
/* Cap, for the calling thread only, the network allowance of every TCP store call (the
 * handle's timeout, and what a GET/WAIT may take beyond its own wait) at ms (< 0: no cap);
 * returns the previous cap. For best-effort calls on a failure path, so that a frozen store
 * host costs at most ms per call instead of a whole timeout. */
int64_t ddl_store_set_thread_io_limit(int64_t ms);

/* Add a reference; returns s (NULL stays NULL). */
ddl_store *ddl_store_retain(ddl_store *s);
/* Drop a reference; the last one frees the store (a prefix store then releases its base).
 * NULL is a no-op. */
void ddl_store_release(ddl_store *s);

#ifdef __cplusplus
}
#endif

#endif
