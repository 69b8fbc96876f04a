/* data.h: data loading in C: IDX files (the MNIST family), batch assembly and the libsvm parser. */
#ifndef DDL_DATA_H
#define DDL_DATA_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- data ----------------------------------------------------------------------------------
 * IDX files (the MNIST family), gzip-compressed or raw: images (ndim > 1) load as float32
 * scaled to [0, 1], labels (ndim 1) as int64. A missing, truncated or corrupt file is a
 * DDL_E_VALUE naming the file and what is wrong. Bounded: the header is read first and the
 * size it promises checked against the file's real size (raw: exactly; gzip: at most 1100x
 * the compressed size) before the payload is allocated; only regular files are read (a
 * device, FIFO or folder is a DDL_E_VALUE at once). */
ddl_status ddl_idx_load(ddl_tensor **out, const char *path);
/* out (n, ...) = src[idx[0]], ..., src[idx[n-1]] (rows of dim 0; a batch assembly). */
ddl_status ddl_gather_rows(ddl_tensor **out, const ddl_tensor *src, const int64_t *idx, int64_t n);

/* ---- libsvm ---------------------------------------------------------------------------------
 * Lines look like `label index:value index:value ... # comment`, indices 1-based and strictly
 * increasing; an optional `qid:N` right after the label is accepted and ignored. Blank lines
 * and comment lines are skipped; LF and CRLF line ends are both accepted, and the last line
 * needs no line end. Labels and values are decimal numbers (no nan/inf).
 *
 * Byte ranges: the call parses exactly the lines that START at a byte offset in
 * [start, end) (end < 0: the end of the file), each read to its own end even past `end`. So
 * ranges that tile the file ([0, a), [a, b), ..., [z, size)) parse every line exactly once,
 * wherever the cuts fall. Only the range (and the tail of its last line) is read.
 *
 * Outputs (new tensors, the caller owns them): indptr (n_rows + 1) int64, indices (nnz) int64
 * (0-based: the file's index minus 1), values (nnz) of `dt` (float32 or float64), labels
 * (n_rows) float64; *max_col is the largest 1-based index seen (0 when none), i.e. the
 * number of columns these rows need.
 *
 * `n_features` > 0 makes an index above it an error; 0 means no limit.
 *
 * Errors: DDL_E_VALUE for a missing/unreadable file or a malformed line, the message reading
 * "PATH:LINE: what is wrong" with LINE the line's true number in the whole file (1-based):
 * the newlines before `start` are counted only when an error is reported, so a good parse
 * never reads the bytes before its range. A malformed line is a bad label, a feature that is
 * not `index:value`, index 0, an index not above the previous one, an index above
 * n_features, a value that is not a finite decimal, a value that overflows float32 when
 * dt is float32 (|v| > 3.4e38: load as float64 to keep it), or bytes that are not UTF-8 text
 * (also in comments). Bounded: only regular files are read (a device, FIFO or folder is a
 * DDL_E_VALUE at once), a NUL byte ends its line as an error at once, and a line longer
 * than 1 GiB (env DDL_LIBSVM_MAX_LINE, in bytes, overrides) is a DDL_E_VALUE.
 * DDL_E_NOMEM when out of memory. */
ddl_status ddl_libsvm_load(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                           ddl_tensor **labels, int64_t *max_col, const char *path, int64_t start,
                           int64_t end, int64_t n_features, ddl_dtype dt);
/* The same parser over bytes already in memory (borrowed, not copied, only read): data[0, len)
 * holds whole lines (a rank's share fetched from a URL), the first starting at byte `offset`
 * of the file called `name` (used in messages; NULL: "<buffer>"). Outputs and checks are
 * those of ddl_libsvm_load, the line cap included (a line of max-line bytes or more is a
 * DDL_E_VALUE). An error reads "NAME:LINE: what is wrong" with LINE = first_line + the line's
 * index in the buffer when first_line > 0 (the 1-based line number of the buffer's first line
 * in the file), and "NAME: line N of the byte range starting at offset OFFSET: what is wrong"
 * (N counted in the buffer from 1) when first_line is 0 (unknown). */
ddl_status ddl_libsvm_parse(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                            ddl_tensor **labels, int64_t *max_col, const char *data, int64_t len,
                            const char *name, int64_t offset, int64_t first_line,
                            int64_t n_features, ddl_dtype dt);

#ifdef __cplusplus
}
#endif
#endif /* DDL_DATA_H */
