/* libsvm.c: the libsvm/svmlight text format parsed into CSR arrays, over a byte range of a
 * file so that each rank of a job reads only its own part, or over bytes already in memory (a
 * share fetched from a URL); see data.h for the contract. */
#include "core/internal.h"
#include "core/vec.h"
#include "ddl/data.h"

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1 << 20) /* first read size; the buffer doubles for lines longer than it */
#define MSG 320         /* a line's error message, before "path:line: " is put in front */
/* the longest line read (the buffer never grows past it); DDL_LIBSVM_MAX_LINE overrides */
#define MAX_LINE_DEFAULT ((size_t)1 << 30)

static size_t max_line(void) {
    const char *v = getenv("DDL_LIBSVM_MAX_LINE");
    char *end;
    unsigned long long n = v ? strtoull(v, &end, 10) : 0;
    return v && *v && !*end && n >= CHUNK && n <= DDL_MAX_NBYTES / 2 ? (size_t)n : MAX_LINE_DEFAULT;
}

/* ---- buffered reading of a byte range -------------------------------------------------- */

typedef struct {
    int fd;
    const char *path;
    char *buf;  /* buf[pos, len) not yet consumed; buf[len] == 0 */
    size_t cap; /* allocated bytes, including the terminating 0 */
    size_t len, pos;
    size_t scanned; /* buf[pos, pos + scanned) is known to hold no '\n' */
    int64_t off;    /* file offset of buf[0] */
    int eof;
    size_t max_line; /* the buffer's cap */
} reader;

/* Move the unread bytes to the front, grow when full, and read more. */
static ddl_status read_more(reader *r) {
    if (r->pos) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->off += (int64_t)r->pos;
        r->len -= r->pos;
        r->pos = 0;
    }
    if (r->len + 1 == r->cap) {
        if (r->cap >= r->max_line)
            DDL_FAIL(DDL_E_VALUE,
                     "%s: a line longer than %zu bytes near byte %lld (the cap: set "
                     "DDL_LIBSVM_MAX_LINE to raise it)",
                     r->path, r->max_line, (long long)r->off);
        size_t cap = r->cap * 2 > r->max_line ? r->max_line : r->cap * 2;
        char *q = realloc(r->buf, cap);
        if (!q) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for a line of %zu bytes", r->path, r->cap);
        r->buf = q;
        r->cap = cap;
    }
    ssize_t got;
    do {
        got = pread(r->fd, r->buf + r->len, r->cap - 1 - r->len, (off_t)(r->off + (int64_t)r->len));
    } while (got < 0 && errno == EINTR);
    if (got < 0) DDL_FAIL(DDL_E_VALUE, "%s: read failed (%s)", r->path, strerror(errno));
    if (got == 0) r->eof = 1;
    r->len += (size_t)got;
    r->buf[r->len] = 0;
    return DDL_OK;
}

/* Discard bytes up to and including the next '\n' (the line that started before the range). */
static ddl_status skip_partial_line(reader *r) {
    for (;;) {
        char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
        if (nl) {
            r->pos = (size_t)(nl - r->buf) + 1;
            return DDL_OK;
        }
        r->pos = r->len;
        if (r->eof) return DDL_OK;
        DDL_TRY(read_more(r));
    }
}

/* The next line (without its '\n'): *got 0 at the end of the file. */
static ddl_status next_line(reader *r, int *got, char **line, size_t *n, int64_t *line_off) {
    for (;;) {
        char *from = r->buf + r->pos + r->scanned;
        size_t fresh = r->len - r->pos - r->scanned;
        char *nl = memchr(from, '\n', fresh);
        /* a NUL makes its line an error: end the line after it rather than read on (a file
         * of zeros would otherwise be read whole as one line) */
        char *nul = memchr(from, 0, nl ? (size_t)(nl - from) : fresh);
        if (nul) {
            *line = r->buf + r->pos;
            *n = (size_t)(nul + 1 - *line);
            *line_off = r->off + (int64_t)r->pos;
            r->pos = (size_t)(nul + 1 - r->buf);
            r->scanned = 0;
            *got = 1;
            return DDL_OK;
        }
        if (nl || (r->eof && r->pos < r->len)) {
            char *end = nl ? nl : r->buf + r->len;
            *line = r->buf + r->pos;
            *n = (size_t)(end - *line);
            *line_off = r->off + (int64_t)r->pos;
            r->pos = nl ? (size_t)(nl - r->buf) + 1 : r->len;
            r->scanned = 0;
            *got = 1;
            return DDL_OK;
        }
        if (r->eof) {
            *got = 0;
            return DDL_OK;
        }
        r->scanned = r->len - r->pos;
        DDL_TRY(read_more(r));
    }
}

/* 1 + the number of '\n' in the file's bytes [0, upto): the line number of a line starting
 * at `upto`. Only called to report an error, so a good parse never reads before its range. */
static int64_t line_number_at(int fd, int64_t upto) {
    char buf[1 << 16];
    int64_t lines = 1, off = 0;
    while (off < upto) {
        size_t want = (size_t)(upto - off < (int64_t)sizeof buf ? upto - off : (int64_t)sizeof buf);
        ssize_t got = pread(fd, buf, want, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        for (char *p = buf, *e = buf + got; (p = memchr(p, '\n', (size_t)(e - p))); p++) lines++;
        off += got;
    }
    return lines;
}

/* ---- numbers ------------------------------------------------------------------------------ */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A decimal number [+-]digits[.digits][(e|E)[+-]digits] filling [s, e) exactly: 0, or -1 when
 * the token is not one (or is not finite as a double). Correctly rounded: short numbers by
 * Clinger's exact fast path, the rest by strtod in the C locale. */
static int parse_number(const char *s, const char *e, double *out) {
    const char *p = s;
    int neg = 0;
    if (p < e && (*p == '+' || *p == '-')) neg = *p++ == '-';
    uint64_t mant = 0;
    int sig = 0, digits = 0, frac = 0;
    for (; p < e && *p >= '0' && *p <= '9'; p++, digits++)
        if (sig || *p != '0') {
            if (sig < 19) mant = mant * 10 + (uint64_t)(*p - '0');
            sig++;
        }
    if (p < e && *p == '.')
        for (p++; p < e && *p >= '0' && *p <= '9'; p++, digits++, frac++)
            if (sig || *p != '0') {
                if (sig < 19) mant = mant * 10 + (uint64_t)(*p - '0');
                sig++;
            }
    if (!digits) return -1;
    int exp10 = 0, exp_digits = 0, exp_neg = 0;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) exp_neg = *p++ == '-';
        for (; p < e && *p >= '0' && *p <= '9'; p++, exp_digits++)
            if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
        if (!exp_digits) return -1;
    }
    if (p != e) return -1;
    /* digits beyond the 19 kept shift the scale */
    int scale = (exp_neg ? -exp10 : exp10) - frac + (sig > 19 ? sig - 19 : 0);
    if (mant == 0) {
        *out = neg ? -0.0 : 0.0;
        return 0;
    }
    if (sig <= 15 && scale >= -22 && scale <= 22) {
        double v = (double)mant; /* exact: below 10^15 < 2^53 */
        v = scale >= 0 ? v * pow10_exact[scale] : v / pow10_exact[-scale];
        *out = neg ? -v : v;
        return 0;
    }
    char tmp[96];
    size_t n = (size_t)(e - s);
    if (n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    pthread_once(&c_locale_once, make_c_locale);
    char *end;
    double v = c_locale ? strtod_l(tmp, &end, c_locale) : strtod(tmp, &end);
    if (end != tmp + n || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* ---- lines --------------------------------------------------------------------------------- */

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* The offset of the first byte of [s, s+n) that breaks UTF-8 (or a NUL), or -1 if none. */
static int64_t utf8_error_at(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        unsigned c = *p;
        if (c == 0) return p - (const unsigned char *)s;
        if (c < 0x80) {
            p++;
            continue;
        }
        int k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return p - (const unsigned char *)s;
        if (e - p <= k) return p - (const unsigned char *)s;
        for (int i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80) return p - (const unsigned char *)s;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return p - (const unsigned char *)s;
        p += k + 1;
    }
    return -1;
}

/* Quote a token for a message: at most 40 bytes, non-printable bytes as \xNN. */
static const char *quote(char *buf, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 40) {
            o += (size_t)snprintf(buf + o, cap - o, "...");
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\'')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = 0;
    return buf;
}

typedef struct {
    ddl_vec indptr, indices, values, labels;
    ddl_dtype dt;
    int64_t n_features, max_col;
} csr_builder;

/* Parse one line (no '\n', a trailing '\r' allowed) into b. 0: a row added or nothing to add
 * (blank, comment); 1: malformed, with the reason in msg; -1: out of memory. */
static int parse_line(csr_builder *b, const char *s, size_t n, char *msg) {
    const char *p = s, *e = s + n;
    char q[200];
    int64_t bad_utf8 = utf8_error_at(s, n);
    if (bad_utf8 >= 0) {
        if (s[bad_utf8] == 0)
            snprintf(msg, MSG, "a NUL byte at column %lld", (long long)bad_utf8 + 1);
        else
            snprintf(msg, MSG, "not UTF-8 text: byte 0x%02x at column %lld",
                     (unsigned char)s[bad_utf8], (long long)bad_utf8 + 1);
        return 1;
    }
    while (p < e && is_ws(*p)) p++;
    if (p == e || *p == '#') return 0;
    const char *t = p;
    while (p < e && !is_ws(*p) && *p != '#') p++;
    double label;
    if (parse_number(t, p, &label)) {
        snprintf(msg, MSG, "bad label '%s' (expected a number)",
                 quote(q, sizeof q, t, (size_t)(p - t)));
        return 1;
    }
    int64_t prev = 0;
    for (int first = 1;; first = 0) {
        while (p < e && is_ws(*p)) p++;
        if (p == e || *p == '#') break;
        t = p;
        while (p < e && !is_ws(*p) && *p != '#') p++;
        size_t tn = (size_t)(p - t);
        const char *colon = memchr(t, ':', tn);
        if (!colon) {
            snprintf(msg, MSG, "bad feature '%s' (expected index:value)",
                     quote(q, sizeof q, t, tn));
            return 1;
        }
        if (first && colon - t == 3 && memcmp(t, "qid", 3) == 0) {
            const char *d = colon + 1;
            while (d < p && *d >= '0' && *d <= '9') d++;
            if (d == colon + 1 || d != p) {
                snprintf(msg, MSG, "bad qid '%s' (expected qid:integer)",
                         quote(q, sizeof q, t, tn));
                return 1;
            }
            continue;
        }
        int64_t idx = 0;
        const char *d = t;
        for (; d < colon && *d >= '0' && *d <= '9'; d++) {
            if (idx > (INT64_MAX / 4 - 9) / 10) break;
            idx = idx * 10 + (*d - '0');
        }
        if (d == t || d != colon) {
            snprintf(msg, MSG, "bad index in '%s' (expected a positive integer before ':')",
                     quote(q, sizeof q, t, tn));
            return 1;
        }
        double v;
        if (parse_number(colon + 1, p, &v)) {
            snprintf(msg, MSG, "bad value in '%s' (expected a number after ':')",
                     quote(q, sizeof q, t, tn));
            return 1;
        }
        if (idx == 0) {
            snprintf(msg, MSG, "index 0 in '%s': libsvm indices start at 1",
                     quote(q, sizeof q, t, tn));
            return 1;
        }
        if (idx <= prev) {
            if (idx == prev)
                snprintf(msg, MSG, "index %lld appears twice", (long long)idx);
            else
                snprintf(msg, MSG, "index %lld after index %lld: indices must increase",
                         (long long)idx, (long long)prev);
            return 1;
        }
        if (b->n_features > 0 && idx > b->n_features) {
            snprintf(msg, MSG, "index %lld is above n_features=%lld", (long long)idx,
                     (long long)b->n_features);
            return 1;
        }
        prev = idx;
        if (ddl_vec_reserve(&b->indices, 1) || ddl_vec_reserve(&b->values, 1)) return -1;
        ((int64_t *)b->indices.p)[b->indices.n++] = idx - 1;
        if (b->dt == DDL_FLOAT32) {
            float f = (float)v;
            if (isinf(f)) {
                snprintf(msg, MSG,
                         "value in '%s' overflows float32 (beyond +-3.4e38; load with "
                         "dtype=float64 to keep it)",
                         quote(q, sizeof q, t, tn));
                return 1;
            }
            ((float *)b->values.p)[b->values.n++] = f;
        } else
            ((double *)b->values.p)[b->values.n++] = v;
    }
    if (prev > b->max_col) b->max_col = prev;
    if (ddl_vec_reserve(&b->labels, 1) || ddl_vec_reserve(&b->indptr, 1)) return -1;
    ((double *)b->labels.p)[b->labels.n++] = label;
    ((int64_t *)b->indptr.p)[b->indptr.n++] = (int64_t)b->indices.n;
    return 0;
}

/* The shared loop: the lines of r from its current position whose offset is below `end`,
 * into new tensors. fd >= 0: a file (an error's line number counted from the file's start);
 * fd < 0: a buffer whose first line is line `first_line` of its file (0: unknown). */
static ddl_status parse_lines(ddl_tensor *outs[4], int64_t *max_col, reader *r, int64_t end,
                              int64_t range_start, int64_t first_line, int64_t n_features,
                              ddl_dtype dt) {
    ddl_status st = DDL_OK;
    const char *name = r->path;
    csr_builder b = {.indptr = ddl_vec_make(sizeof(int64_t)),
                     .indices = ddl_vec_make(sizeof(int64_t)),
                     .values = ddl_vec_make(dt == DDL_FLOAT32 ? sizeof(float) : sizeof(double)),
                     .labels = ddl_vec_make(sizeof(double)),
                     .dt = dt,
                     .n_features = n_features};
    if (ddl_vec_reserve(&b.indptr, 1)) {
        st = ddl_fail(DDL_E_NOMEM, "%s: out of memory", name);
        goto done;
    }
    ((int64_t *)b.indptr.p)[b.indptr.n++] = 0;
    /* A range starting at `start` > 0 owns the lines beginning at or after it: read from
     * start - 1 and drop everything up to the first '\n' (none when byte start-1 is one). */
    if (r->fd >= 0 && range_start > 0) st = skip_partial_line(r);
    int64_t rel_line = 0;
    char msg[MSG];
    while (!st) {
        int got;
        char *line;
        size_t n;
        int64_t off;
        if ((st = next_line(r, &got, &line, &n, &off)) || !got || off >= end) break;
        rel_line++;
        if (r->fd < 0 && n >= r->max_line) { /* a file's reader stops at the cap by itself */
            st = ddl_fail(DDL_E_VALUE,
                          "%s: a line longer than %zu bytes near byte %lld (the cap: set "
                          "DDL_LIBSVM_MAX_LINE to raise it)",
                          name, r->max_line, (long long)off);
            break;
        }
        int rc = parse_line(&b, line, n, msg);
        if (rc < 0)
            st = ddl_fail(DDL_E_NOMEM, "%s: out of memory", name);
        else if (rc > 0) {
            int64_t ln = -1;
            if (r->fd >= 0)
                ln = line_number_at(r->fd, off);
            else if (first_line > 0)
                ln = first_line + rel_line - 1;
            if (ln > 0)
                st = ddl_fail(DDL_E_VALUE, "%s:%lld: %s", name, (long long)ln, msg);
            else /* the line number of the range's start is unknown: say where the line is */
                st = ddl_fail(DDL_E_VALUE,
                              "%s: line %lld of the byte range starting at offset %lld: %s", name,
                              (long long)rel_line, (long long)range_start, msg);
        }
    }
    if (!st) st = ddl_vec_to_tensor(&outs[0], &b.indptr, DDL_INT64);
    if (!st) st = ddl_vec_to_tensor(&outs[1], &b.indices, DDL_INT64);
    if (!st) st = ddl_vec_to_tensor(&outs[2], &b.values, dt);
    if (!st) st = ddl_vec_to_tensor(&outs[3], &b.labels, DDL_FLOAT64);
    if (!st) *max_col = b.max_col;
done:
    if (st)
        for (int i = 0; i < 4; i++) {
            ddl_tensor_release(outs[i]);
            outs[i] = NULL;
        }
    ddl_vec_free(&b.indptr);
    ddl_vec_free(&b.indices);
    ddl_vec_free(&b.values);
    ddl_vec_free(&b.labels);
    return st;
}

static ddl_status check_args(int64_t n_features, ddl_dtype dt) {
    if (dt != DDL_FLOAT32 && dt != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "libsvm: values must be float32 or float64, not %s",
                 ddl_dtype_name(dt));
    if (n_features < 0)
        DDL_FAIL(DDL_E_VALUE, "libsvm: n_features must be >= 0, got %lld", (long long)n_features);
    return DDL_OK;
}

ddl_status ddl_libsvm_load(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                           ddl_tensor **labels, int64_t *max_col, const char *path, int64_t start,
                           int64_t end, int64_t n_features, ddl_dtype dt) {
    DDL_TRY(check_args(n_features, dt));
    if (start < 0) DDL_FAIL(DDL_E_VALUE, "libsvm: byte range start %lld < 0", (long long)start);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open */
    if (fd < 0) DDL_FAIL(DDL_E_VALUE, "%s: cannot open (%s)", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        DDL_FAIL(DDL_E_VALUE, "%s: not a regular file (devices, FIFOs and folders are refused)",
                 path);
    }
    if (end < 0) end = INT64_MAX;
    reader r = {fd, path, malloc(CHUNK), CHUNK, 0, 0, 0, start > 0 ? start - 1 : 0, 0, max_line()};
    ddl_tensor *outs[4] = {NULL, NULL, NULL, NULL};
    ddl_status st;
    if (!r.buf)
        st = ddl_fail(DDL_E_NOMEM, "%s: out of memory", path);
    else {
        r.buf[0] = 0;
        st = parse_lines(outs, max_col, &r, end, start, 0, n_features, dt);
    }
    if (!st) {
        *indptr = outs[0];
        *indices = outs[1];
        *values = outs[2];
        *labels = outs[3];
    }
    free(r.buf);
    close(fd);
    return st;
}

ddl_status ddl_libsvm_parse(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                            ddl_tensor **labels, int64_t *max_col, const char *data, int64_t len,
                            const char *name, int64_t offset, int64_t first_line,
                            int64_t n_features, ddl_dtype dt) {
    DDL_TRY(check_args(n_features, dt));
    if (!name) name = "<buffer>";
    if (len == 0) data = ""; /* memchr is never given NULL */
    if (len < 0 || (len > 0 && !data))
        DDL_FAIL(DDL_E_VALUE, "%s: bad buffer (length %lld)", name, (long long)len);
    if (offset < 0 || first_line < 0)
        DDL_FAIL(DDL_E_VALUE, "%s: offset %lld / first_line %lld must be >= 0", name,
                 (long long)offset, (long long)first_line);
    /* the whole buffer is in memory already: the reader only walks it (never reads, never
     * frees; next_line does not need buf[len] == 0) */
    reader r = {-1, name, (char *)data, (size_t)len + 1, (size_t)len, 0, 0, offset, 1, max_line()};
    ddl_tensor *outs[4] = {NULL, NULL, NULL, NULL};
    DDL_TRY(parse_lines(outs, max_col, &r, INT64_MAX, offset, first_line, n_features, dt));
    *indptr = outs[0];
    *indices = outs[1];
    *values = outs[2];
    *labels = outs[3];
    return DDL_OK;
}
