/* features.c: MurmurHash3_x86_32 and the hashing trick of Spark's HashingTF (terms to columns
 * of a sparse term-frequency matrix), so a term lands in the same column everywhere. */
#include "core/internal.h"
#include "core/vec.h"
#include "ddl/ml.h"

#include <stdlib.h>

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t mix_k1(uint32_t k1) {
    k1 *= 0xcc9e2d51u;
    k1 = rotl32(k1, 15);
    return k1 * 0x1b873593u;
}

/* Appleby's MurmurHash3_x86_32, reading blocks as little-endian on any host (as Spark's
 * Murmur3_x86_32.hashUnsafeBytes2 does). */
uint32_t ddl_murmur3_32(const void *data, size_t len, uint32_t seed) {
    const uint8_t *p = data;
    uint32_t h1 = seed;
    size_t nblocks = len / 4;
    for (size_t i = 0; i < nblocks; i++, p += 4) {
        uint32_t k1 =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        h1 ^= mix_k1(k1);
        h1 = rotl32(h1, 13);
        h1 = h1 * 5 + 0xe6546b64u;
    }
    uint32_t k1 = 0;
    size_t rem = len & 3;
    if (rem >= 3) k1 ^= (uint32_t)p[2] << 16;
    if (rem >= 2) k1 ^= (uint32_t)p[1] << 8;
    if (rem >= 1) {
        k1 ^= p[0];
        h1 ^= mix_k1(k1);
    }
    h1 ^= (uint32_t)len;
    h1 ^= h1 >> 16;
    h1 *= 0x85ebca6bu;
    h1 ^= h1 >> 13;
    h1 *= 0xc2b2ae35u;
    h1 ^= h1 >> 16;
    return h1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

ddl_status ddl_hashing_tf(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                          const char *text, const int64_t *token_ends, const int64_t *doc_ends,
                          int64_t text_len, int64_t n_tokens, int64_t n_docs, int64_t num_features,
                          int binary, ddl_dtype dt) {
    if (dt != DDL_FLOAT32 && dt != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "hashing_tf: values must be float32 or float64, not %s",
                 ddl_dtype_name(dt));
    if (num_features < 1 || num_features > INT32_MAX)
        DDL_FAIL(DDL_E_VALUE, "hashing_tf: num_features must be in [1, 2^31 - 1], got %lld",
                 (long long)num_features);
    if (text_len < 0 || n_tokens < 0 || n_docs < 0)
        DDL_FAIL(DDL_E_VALUE, "hashing_tf: negative sizes");
    int64_t prev = 0, widest = 0;
    for (int64_t i = 0; i < n_tokens; prev = token_ends[i++])
        if (token_ends[i] < prev || token_ends[i] > text_len)
            DDL_FAIL(DDL_E_VALUE, "hashing_tf: token_ends[%lld] = %lld is not in [%lld, %lld]",
                     (long long)i, (long long)token_ends[i], (long long)prev, (long long)text_len);
    prev = 0;
    for (int64_t d = 0; d < n_docs; prev = doc_ends[d++]) {
        if (doc_ends[d] < prev || doc_ends[d] > n_tokens)
            DDL_FAIL(DDL_E_VALUE, "hashing_tf: doc_ends[%lld] = %lld is not in [%lld, %lld]",
                     (long long)d, (long long)doc_ends[d], (long long)prev, (long long)n_tokens);
        if (doc_ends[d] - prev > widest) widest = doc_ends[d] - prev;
    }

    ddl_status st = DDL_OK;
    ddl_vec ip = ddl_vec_make(sizeof(int64_t)), ix = ddl_vec_make(sizeof(int64_t)),
            vx = ddl_vec_make(dt == DDL_FLOAT32 ? sizeof(float) : sizeof(double));
    int64_t *cols = malloc(sizeof(int64_t) * (size_t)(widest ? widest : 1)); /* (widest) */
    ddl_tensor *outs[3] = {NULL, NULL, NULL};
    if (!cols || ddl_vec_reserve(&ip, (size_t)n_docs + 1) ||
        ddl_vec_reserve(&ix, (size_t)(n_tokens ? n_tokens : 1)) ||
        ddl_vec_reserve(&vx, (size_t)(n_tokens ? n_tokens : 1))) {
        st =
            ddl_fail(DDL_E_NOMEM, "hashing_tf: out of memory for %lld tokens", (long long)n_tokens);
        goto done;
    }
    int64_t *op = ip.p, *oi = ix.p, nnz = 0;
    op[0] = 0;
    int64_t tok = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t m = 0;
        for (; tok < doc_ends[d]; tok++) {
            int64_t from = tok ? token_ends[tok - 1] : 0;
            int32_t h = (int32_t)ddl_murmur3_32(text + from, (size_t)(token_ends[tok] - from), 42);
            int64_t c = (int64_t)h % num_features; /* Spark's Utils.nonNegativeMod */
            cols[m++] = c < 0 ? c + num_features : c;
        }
        qsort(cols, (size_t)m, sizeof *cols, cmp_i64);
        for (int64_t i = 0; i < m;) {
            int64_t j = i + 1;
            while (j < m && cols[j] == cols[i]) j++;
            double v = binary ? 1.0 : (double)(j - i);
            oi[nnz] = cols[i];
            if (dt == DDL_FLOAT32)
                ((float *)vx.p)[nnz] = (float)v;
            else
                ((double *)vx.p)[nnz] = v;
            nnz++;
            i = j;
        }
        op[d + 1] = nnz;
    }
    ip.n = (size_t)n_docs + 1;
    ix.n = vx.n = (size_t)nnz;
    st = ddl_vec_to_tensor(&outs[0], &ip, DDL_INT64);
    if (!st) st = ddl_vec_to_tensor(&outs[1], &ix, DDL_INT64);
    if (!st) st = ddl_vec_to_tensor(&outs[2], &vx, dt);
    if (!st) {
        *indptr = outs[0];
        *indices = outs[1];
        *values = outs[2];
    }
done:
    if (st)
        for (int i = 0; i < 3; i++) ddl_tensor_release(outs[i]);
    ddl_vec_free(&ip);
    ddl_vec_free(&ix);
    ddl_vec_free(&vx);
    free(cols);
    return st;
}
