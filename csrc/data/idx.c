/* idx.c: dataset plumbing in C: IDX files (MNIST / Fashion-MNIST, gzip or raw) and row
 * gathering for batch assembly. */
#include "core/internal.h"
#include "ddl/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Deflate expands at most ~1032:1; a gzip member claiming more than this per compressed byte
 * (plus slack for the header) is refused before anything is allocated. */
#define GZIP_MAX_RATIO 1100
#define IDX_MAX_DIMS (DDL_MAX_DIMS - 1)

/* Read exactly n bytes (a short read is an error the caller names); *got the count read. */
static ddl_status read_exact(gzFile f, unsigned char *p, size_t n, size_t *got, const char *path) {
    *got = 0;
    while (*got < n) {
        size_t want = n - *got > (1u << 30) ? (1u << 30) : n - *got;
        int r = gzread(f, p + *got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            DDL_FAIL(DDL_E_VALUE, "%s: corrupt or truncated gzip data (%s)", path, msg);
        }
        if (r == 0) break;
        *got += (size_t)r;
    }
    /* a gzip stream cut short reads as EOF without error in some zlib versions: check */
    int zerr = Z_OK;
    gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END)
        DDL_FAIL(DDL_E_VALUE, "%s: corrupt or truncated gzip data", path);
    return DDL_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The loader reads the header first, checks what it promises against the file's real size
 * (raw: exactly; gzip: at most GZIP_MAX_RATIO times the compressed size), and only then
 * allocates the payload, reading it straight into place. Only regular files are read. */
static ddl_status idx_load(ddl_tensor **out, gzFile f, int64_t file_size, int gz,
                           const char *path) {
    unsigned char head[4 + 4 * IDX_MAX_DIMS];
    size_t got;
    DDL_TRY(read_exact(f, head, 4, &got, path));
    if (got < 4 || head[0] != 0 || head[1] != 0)
        DDL_FAIL(DDL_E_VALUE, "%s: not an IDX file (bad magic number)", path);
    int type = head[2], ndim = head[3];
    if (type != 0x08)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)", path,
                 type);
    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "%s: IDX file with %d dims", path, ndim);
    DDL_TRY(read_exact(f, head + 4, 4 * (size_t)ndim, &got, path));
    if (got < 4 * (size_t)ndim) DDL_FAIL(DDL_E_VALUE, "%s: truncated IDX header", path);
    int64_t shape[DDL_MAX_DIMS];
    uint64_t count = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        shape[i] = be32(head + 4 + 4 * i);
        if (shape[i] && count > UINT64_MAX / (uint64_t)shape[i]) overflow = 1;
        count *= (uint64_t)shape[i];
    }
    uint64_t header = 4 + 4 * (uint64_t)ndim, have = (uint64_t)file_size;
    uint64_t bound = gz ? (have > UINT64_MAX / GZIP_MAX_RATIO ? UINT64_MAX : have * GZIP_MAX_RATIO)
                        : (have >= header ? have - header : 0);
    if (overflow || (gz ? count > bound : count != bound))
        DDL_FAIL(DDL_E_VALUE, "%s: %s IDX data: the header promises %s%llu bytes, the file %s %llu",
                 path, gz ? "impossible" : (count > bound ? "truncated" : "oversized"),
                 overflow ? "more than " : "", (unsigned long long)count,
                 gz ? "(gzip) can expand to at most" : "holds", (unsigned long long)bound);
    unsigned char *buf = malloc(count ? count : 1);
    if (!buf)
        DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for %llu bytes", path, (unsigned long long)count);
    ddl_status st = read_exact(f, buf, count, &got, path);
    if (!st && got < count)
        st = ddl_fail(DDL_E_VALUE,
                      "%s: truncated IDX data: the header promises %llu bytes, the file holds %zu",
                      path, (unsigned long long)count, got);
    unsigned char extra;
    if (!st) st = read_exact(f, &extra, 1, &got, path);
    if (!st && got)
        st = ddl_fail(DDL_E_VALUE, "%s: oversized IDX data: more bytes than the header's %llu",
                      path, (unsigned long long)count);
    /* images (ndim > 1) become float32 in [0, 1]; labels (ndim == 1) int64 */
    if (!st) st = ddl_tensor_empty(out, ndim == 1 ? DDL_INT64 : DDL_FLOAT32, ndim, shape);
    if (!st) {
        if (ndim == 1) {
            int64_t *dst = ddl_tensor_data(*out);
            for (uint64_t i = 0; i < count; i++) dst[i] = buf[i];
        } else {
            float *dst = ddl_tensor_data(*out);
            for (uint64_t i = 0; i < count; i++) dst[i] = (float)buf[i] * (1.0f / 255.0f);
        }
    }
    free(buf);
    return st;
}

ddl_status ddl_idx_load(ddl_tensor **out, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* O_NONBLOCK: a FIFO can't hang us */
    if (fd < 0) DDL_FAIL(DDL_E_VALUE, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        DDL_FAIL(DDL_E_VALUE, "%s: not a regular file (devices, FIFOs and folders are refused)",
                 path);
    }
    unsigned char magic[2] = {0, 0};
    ssize_t m = pread(fd, magic, 2, 0);
    int gz = m == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        DDL_FAIL(DDL_E_NOMEM, "%s: out of memory opening the file", path);
    }
    ddl_status st = idx_load(out, f, (int64_t)sb.st_size, gz, path);
    gzclose(f);
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
