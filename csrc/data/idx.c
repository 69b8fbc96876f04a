/* idx.c: dataset plumbing in C: IDX files (MNIST / Fashion-MNIST, gzip or raw) and row
 * gathering for batch assembly. */
#include "core/internal.h"
#include "ddl/data.h"

#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

/* Read a whole (maybe gzip-compressed) file into a malloc'd buffer. */
static ddl_status read_all(unsigned char **buf, size_t *len, const char *path) {
    gzFile f = gzopen(path, "rb");
    if (!f) DDL_FAIL(DDL_E_VALUE, "%s: cannot open (%s)", path, strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 20, n = 0;
    unsigned char *p = malloc(cap);
    if (!p) {
        gzclose(f);
        DDL_FAIL(DDL_E_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            unsigned char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                gzclose(f);
                DDL_FAIL(DDL_E_NOMEM, "%s: out of memory reading %zu bytes", path, cap * 2);
            }
            p = q;
            cap *= 2;
        }
        size_t want = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        int got = gzread(f, p + n, (unsigned)want);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            ddl_fail(DDL_E_VALUE, "%s: corrupt or truncated gzip data (%s)", path, msg);
            free(p);
            gzclose(f);
            return DDL_E_VALUE;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    /* a gzip stream cut short reads as EOF without error in some zlib versions: check */
    int zerr = Z_OK;
    gzerror(f, &zerr);
    gzclose(f);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        free(p);
        DDL_FAIL(DDL_E_VALUE, "%s: corrupt or truncated gzip data", path);
    }
    *buf = p;
    *len = n;
    return DDL_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

ddl_status ddl_idx_load(ddl_tensor **out, const char *path) {
    unsigned char *buf = NULL;
    size_t len = 0;
    DDL_TRY(read_all(&buf, &len, path));
    ddl_status st = DDL_OK;
    int64_t shape[DDL_MAX_DIMS];
    if (len < 4 || buf[0] != 0 || buf[1] != 0) {
        st = ddl_fail(DDL_E_VALUE, "%s: not an IDX file (bad magic number)", path);
        goto done;
    }
    int type = buf[2], ndim = buf[3];
    if (type != 0x08) {
        st = ddl_fail(DDL_E_VALUE,
                      "%s: IDX element type 0x%02x is not supported (only unsigned "
                      "bytes, 0x08)",
                      path, type);
        goto done;
    }
    if (ndim < 1 || ndim > DDL_MAX_DIMS - 1) {
        st = ddl_fail(DDL_E_VALUE, "%s: IDX file with %d dims", path, ndim);
        goto done;
    }
    if (len < 4 + 4 * (size_t)ndim) {
        st = ddl_fail(DDL_E_VALUE, "%s: truncated IDX header", path);
        goto done;
    }
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = be32(buf + 4 + 4 * i);
        count *= (uint64_t)shape[i];
    }
    size_t header = 4 + 4 * (size_t)ndim;
    if (len - header != count) {
        st = ddl_fail(DDL_E_VALUE,
                      "%s: %s IDX data: the header promises %llu bytes, the file "
                      "holds %zu",
                      path, len - header < count ? "truncated" : "oversized",
                      (unsigned long long)count, len - header);
        goto done;
    }
    /* images (ndim > 1) become float32 in [0, 1]; labels (ndim == 1) int64 */
    st = ddl_tensor_empty(out, ndim == 1 ? DDL_INT64 : DDL_FLOAT32, ndim, shape);
    if (st) goto done;
    const unsigned char *src = buf + header;
    if (ndim == 1) {
        int64_t *dst = ddl_tensor_data(*out);
        for (uint64_t i = 0; i < count; i++) dst[i] = src[i];
    } else {
        float *dst = ddl_tensor_data(*out);
        for (uint64_t i = 0; i < count; i++) dst[i] = (float)src[i] * (1.0f / 255.0f);
    }
done:
    free(buf);
    return st;
}

ddl_status ddl_gather_rows(ddl_tensor **out, const ddl_tensor *src, const int64_t *idx, int64_t n) {
    if (src->ndim < 1) DDL_FAIL(DDL_E_VALUE, "gather_rows: source must have at least 1 dim");
    int64_t rows = src->shape[0];
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= rows)
            DDL_FAIL(DDL_E_INDEX,
                     "gather_rows: index %lld at position %lld is out of range for "
                     "%lld rows",
                     (long long)idx[i], (long long)i, (long long)rows);
    ddl_tensor *c;
    DDL_TRY(ddl_tensor_contiguous(&c, src));
    int64_t shape[DDL_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = n;
    ddl_status st = ddl_tensor_empty(out, src->dtype, src->ndim, shape);
    if (!st) {
        size_t row = (size_t)(rows ? ddl_tensor_numel(c) / rows : 0) * ddl_dtype_size(src->dtype);
        const char *s = ddl_tensor_data(c);
        char *d = ddl_tensor_data(*out);
        for (int64_t i = 0; i < n; i++) memcpy(d + (size_t)i * row, s + (size_t)idx[i] * row, row);
    }
    ddl_tensor_release(c);
    return st;
}
