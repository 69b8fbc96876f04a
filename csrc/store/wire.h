/* wire.h: the TCP store's wire format, one definition for both ends (tcp_server.c and
 * tcp_client.c): frame layout, limits, opcodes, byte order, and encoding/decoding of fields.
 *
 * All integers big-endian.
 *   request:  u32 n | u8 opcode | fields            n = bytes after the u32 (1 + fields)
 *   response: u32 n | u8 code   | fields            code 0 = ok, else -ddl_status and one
 *                                                   field holding the error message
 *   field:    u32 len | len bytes
 *
 *   opcode            request fields              ok response fields
 *   1 SET             key, value                  -
 *   2 GET             timeout, key                value       (parked until the key exists)
 *   3 ADD             key, delta (8-byte i64)     result (8-byte i64)
 *   4 COMPARE_SET     key, expected, desired      current value
 *   5 WAIT            timeout, key, ... (>= 1)    -           (parked until all exist)
 *   6 CHECK           key, key, ... (>= 1)        all_exist (1 byte, 0/1)
 *   7 DELETE          key                         deleted (1 byte, 0/1)
 *   8 NUM_KEYS        -                           count (8-byte i64)
 *   9 HELLO           -                           auth_required (1 byte), nonce (32 bytes)
 *  10 AUTH            mac (32 bytes)              -
 *
 * With a token (DDL_STORE_TOKEN) the server takes only HELLO and AUTH, in frames of at most
 * STORE_PREAUTH_FRAME bytes, until AUTH carries HMAC-SHA256(token, "ddl-store-auth-v1" ||
 * nonce) for this connection's nonce; any other request is answered with an error (code
 * -DDL_E_COMM, "requires a token") and the connection closed, as is a wrong mac. Without a
 * token HELLO answers auth_required 0 and AUTH is accepted as is.
 * A request the memory budget cannot take is answered with code -DDL_E_NOMEM (its bytes
 * read and dropped), the connection kept.
 *
 * `timeout` is an 8-byte i64 in ms (< 0: forever): a GET/WAIT still parked when it passes is
 * answered with code 6 (-DDL_E_TIMEOUT); for WAIT the message names the keys still missing.
 * The client allows the handle's own timeout on top of it for the network, then gives up
 * itself and closes the connection (so a late answer can never be mistaken for the next
 * request's).
 *
 * A frame with n == 0, n > DDL_STORE_MAX_FRAME, an unknown opcode, the wrong number of fields,
 * a field running past the frame, or a key longer than DDL_STORE_MAX_KEY or holding a NUL
 * byte makes the server close that one connection; it keeps serving the others. docs/store.md
 * tells the same for users (keep the two in step). */
#ifndef DDL_STORE_WIRE_H
#define DDL_STORE_WIRE_H

#include "ddl/store.h"

#include <stddef.h>
#include <stdint.h>

enum {
    OP_SET = 1,
    OP_GET = 2,
    OP_ADD = 3,
    OP_COMPARE_SET = 4,
    OP_WAIT = 5,
    OP_CHECK = 6,
    OP_DELETE = 7,
    OP_NUM_KEYS = 8,
    OP_HELLO = 9,
    OP_AUTH = 10,
};

#define WIRE_LEN_BYTES 4 /* the u32 length prefix of a frame */
/* Largest response body a client accepts: a value at the frame limit, plus code and slack. */
#define WIRE_MAX_RESPONSE ((size_t)DDL_STORE_MAX_FRAME + 1024)

static inline void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put_be64(uint8_t *p, int64_t v) {
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(u >> (56 - 8 * i));
}
static inline int64_t get_be64(const uint8_t *p) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | p[i];
    return (int64_t)u;
}

/* One field: n bytes at p. */
typedef struct {
    const uint8_t *p;
    size_t n;
} wire_field;

/* The body size n (after the length prefix) of a frame holding nf fields: 1 + sum(4 + len). */
size_t wire_body_len(const wire_field *f, int nf);
/* Write a whole frame, WIRE_LEN_BYTES + body bytes, to dst: length, head (opcode or code),
 * then the fields. body is wire_body_len(f, nf). */
void wire_write(uint8_t *dst, size_t body, int head, const wire_field *f, int nf);
/* The next field of a frame between *p and end: 1 got one (and *p moves past it), 0 at the
 * end, -1 malformed. */
int wire_next_field(const uint8_t **p, const uint8_t *end, wire_field *f);
/* Exactly nf fields between p and end: 0, or -1. */
int wire_fields_exact(const uint8_t *p, const uint8_t *end, wire_field *f, int nf);

#endif
