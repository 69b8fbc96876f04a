/* auth.c: the TCP store's token handshake (SHA-256, HMAC-SHA256, nonces, constant-time
 * comparison), its limits read from the environment, and the per-thread network cap. */
#include "store/auth.h"

#include "ddl/store.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t len; /* bytes hashed */
    uint8_t buf[64];
    size_t nbuf;
} sha256_ctx;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], s[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, c->h, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = s[7] + (rotr(s[4], 6) ^ rotr(s[4], 11) ^ rotr(s[4], 25)) +
                      ((s[4] & s[5]) ^ (~s[4] & s[6])) + K[i] + w[i];
        uint32_t t2 = (rotr(s[0], 2) ^ rotr(s[0], 13) ^ rotr(s[0], 22)) +
                      ((s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]));
        memmove(s + 1, s, 7 * sizeof *s);
        s[4] += t1;
        s[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) c->h[i] += s[i];
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->len = 0, c->nbuf = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n) {
    c->len += n;
    while (n) {
        size_t k = 64 - c->nbuf < n ? 64 - c->nbuf : n;
        memcpy(c->buf + c->nbuf, p, k);
        c->nbuf += k, p += k, n -= k;
        if (c->nbuf == 64) {
            sha256_block(c, c->buf);
            c->nbuf = 0;
        }
    }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->len * 8;
    uint8_t pad = 0x80, zero = 0, lb[8];
    sha256_update(c, &pad, 1);
    while (c->nbuf != 56) sha256_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, lb, 8);
    for (int i = 0; i < 8; i++)
        out[4 * i] = (uint8_t)(c->h[i] >> 24), out[4 * i + 1] = (uint8_t)(c->h[i] >> 16),
                out[4 * i + 2] = (uint8_t)(c->h[i] >> 8), out[4 * i + 3] = (uint8_t)c->h[i];
}

/* ---- the handshake ---------------------------------------------------------------------- */

static const char CONTEXT[] = "ddl-store-auth-v1";

void store_auth_mac(uint8_t out[STORE_MAC_LEN], const char *token,
                    const uint8_t nonce[STORE_NONCE_LEN]) {
    uint8_t key[64] = {0}, ipad[64], opad[64], inner[32];
    size_t tl = strlen(token);
    sha256_ctx c;
    if (tl > 64) {
        sha256_init(&c);
        sha256_update(&c, (const uint8_t *)token, tl);
        sha256_final(&c, key);
    } else {
        memcpy(key, token, tl);
    }
    for (int i = 0; i < 64; i++) ipad[i] = key[i] ^ 0x36, opad[i] = key[i] ^ 0x5c;
    sha256_init(&c);
    sha256_update(&c, ipad, 64);
    sha256_update(&c, (const uint8_t *)CONTEXT, sizeof CONTEXT - 1);
    sha256_update(&c, nonce, STORE_NONCE_LEN);
    sha256_final(&c, inner);
    sha256_init(&c);
    sha256_update(&c, opad, 64);
    sha256_update(&c, inner, 32);
    sha256_final(&c, out);
}

int store_nonce(uint8_t out[STORE_NONCE_LEN]) {
    return getrandom(out, STORE_NONCE_LEN, GRND_NONBLOCK) == STORE_NONCE_LEN ? 0 : -1;
}

int store_ct_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= a[i] ^ b[i];
    return d == 0;
}

const char *store_token(void) {
    const char *t = getenv("DDL_STORE_TOKEN");
    return t && *t ? t : NULL;
}

/* ---- limits ------------------------------------------------------------------------------ */

static long long env_ll(const char *name, long long dflt, long long lo, long long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long long n = strtoll(v, &end, 10);
    return *end || n < lo || n > hi ? dflt : n;
}

store_limits store_limits_from_env(void) {
    store_limits l;
    l.max_conns = (size_t)env_ll("DDL_STORE_MAX_CONNS", 1024, 1, 1 << 20);
    l.max_memory = (size_t)env_ll("DDL_STORE_MAX_MEMORY", 512LL << 20, 1 << 20, 1LL << 46);
    l.frame_timeout_ms = env_ll("DDL_STORE_FRAME_TIMEOUT_MS", 30000, 100, 1LL << 40);
    l.auth_timeout_ms = env_ll("DDL_STORE_AUTH_TIMEOUT_MS", 10000, 100, 1LL << 40);
    return l;
}

/* ---- the per-thread network cap ---------------------------------------------------------- */

static _Thread_local int64_t io_limit = -1;

int64_t store_thread_io_limit(void) { return io_limit; }

int64_t ddl_store_set_thread_io_limit(int64_t ms) {
    int64_t old = io_limit;
    io_limit = ms < 0 ? -1 : ms;
    return old;
}
