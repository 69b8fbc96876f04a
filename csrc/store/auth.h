/* auth.h: what guards the TCP store: the shared token's challenge-response (HMAC-SHA256 over
 * a per-connection nonce), and the server's limits (connections, memory, frame and
 * handshake timeouts), each from the environment with a default. See docs/security.md. */
#ifndef DDL_STORE_AUTH_H
#define DDL_STORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define STORE_NONCE_LEN 32
#define STORE_MAC_LEN 32
/* Before the handshake a connection may send only frames this small (HELLO and AUTH). */
#define STORE_PREAUTH_FRAME 256

/* The job's token: DDL_STORE_TOKEN, or NULL when unset or empty. */
const char *store_token(void);
/* out = HMAC-SHA256(token, "ddl-store-auth-v1" || nonce): what the client proves it knows. */
void store_auth_mac(uint8_t out[STORE_MAC_LEN], const char *token,
                    const uint8_t nonce[STORE_NONCE_LEN]);
/* 32 random bytes (getrandom; never blocks). 0, or -1 when the kernel gave none. */
int store_nonce(uint8_t out[STORE_NONCE_LEN]);
/* Constant-time comparison of n bytes: 1 equal. */
int store_ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

typedef struct {
    size_t max_conns;         /* DDL_STORE_MAX_CONNS (default 1024) */
    size_t max_memory;        /* DDL_STORE_MAX_MEMORY bytes: keys + values + buffers (512 MiB) */
    int64_t frame_timeout_ms; /* DDL_STORE_FRAME_TIMEOUT_MS: a frame's first to last byte (30 s) */
    int64_t auth_timeout_ms;  /* DDL_STORE_AUTH_TIMEOUT_MS: connect to handshake done (10 s) */
} store_limits;

store_limits store_limits_from_env(void);

/* The thread's cap on a call's network allowance (ddl_store_set_thread_io_limit), or -1. */
int64_t store_thread_io_limit(void);

#endif
