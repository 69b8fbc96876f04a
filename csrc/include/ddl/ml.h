/* ml.h: the C core of ddl's classical machine learning (the libsvm parser is in data.h):
 * MurmurHash3 and the hashing trick behind HashingTF,
 * and the logistic-regression loss and gradient over dense or CSR rows.
 *
 * Sparse matrices are CSR: `indptr` (n_rows + 1) int64 with indptr[0] == 0, `indices` (nnz)
 * int64 0-based columns, `values` (nnz) float32 or float64. Row i holds the entries
 * indptr[i] <= p < indptr[i + 1]. The parser and the hasher produce rows whose columns
 * strictly increase; the loss kernel accepts any order (duplicates add up, as in SciPy).
 *
 * Example: parse the second half of a file, then evaluate a binomial model on it
 *
 *     ddl_tensor *indptr, *indices, *values, *labels;
 *     int64_t max_col, size = ...;                 // the file's size in bytes
 *     if (ddl_libsvm_load(&indptr, &indices, &values, &labels, &max_col, "a.svm", size / 2,
 *                         -1, 0, DDL_FLOAT32))
 *         fprintf(stderr, "ddl: %s\n", ddl_last_error());  // "a.svm:17: bad label 'x'"
 *     ddl_csr x = {indptr, indices, values, max_col};
 *     double loss;                                 // then ddl_logistic_loss_grad(&loss, ...)
 */
#ifndef DDL_ML_H
#define DDL_ML_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- hashing ----------------------------------------------------------------------------- */

/* MurmurHash3_x86_32 (Austin Appleby's reference, little-endian) of len bytes. */
uint32_t ddl_murmur3_32(const void *data, size_t len, uint32_t seed);

/* The hashing trick, as Spark's HashingTF: term t of a document goes to column
 * nonNegativeMod((int32_t)murmur3_32(utf8(t), 42), num_features), and the row holds each
 * column's count (1.0 when `binary`).
 *
 * Terms are the byte strings text[token_ends[i-1] .. token_ends[i]) (token 0 starts at 0);
 * document d holds tokens [doc_ends[d-1], doc_ends[d]) (document 0 starts at token 0). Both
 * arrays must be non-decreasing, token_ends within text_len and doc_ends within n_tokens.
 *
 * Outputs a CSR (n_docs, num_features) with sorted columns: indptr (n_docs + 1) int64,
 * indices int64, values of `dt`. Errors: DDL_E_VALUE for bad offsets or num_features < 1. */
ddl_status ddl_hashing_tf(ddl_tensor **indptr, ddl_tensor **indices, ddl_tensor **values,
                          const char *text, const int64_t *token_ends, const int64_t *doc_ends,
                          int64_t text_len, int64_t n_tokens, int64_t n_docs, int64_t num_features,
                          int binary, ddl_dtype dt);

/* ---- logistic regression ------------------------------------------------------------------ */

/* A borrowed matrix of rows: CSR when indptr is not NULL, else `values` is dense
 * (n_rows, n_cols) row-major. Tensors must be contiguous; checked by each call below (column
 * indices as they are used). */
typedef struct {
    const ddl_tensor *indptr;  /* (n_rows + 1) int64, or NULL for dense */
    const ddl_tensor *indices; /* (nnz) int64 */
    const ddl_tensor *values;  /* (nnz) or (n_rows, n_cols): float32 or float64 */
    int64_t n_cols;
} ddl_csr;

/* out (n_rows, k) float64 = x (n_rows, d) @ coef^T + intercept: coef (k, d) float64,
 * intercept (k) float64 or NULL (zero). */
ddl_status ddl_linear_margins(ddl_tensor **out, const ddl_csr *x, const ddl_tensor *coef,
                              const ddl_tensor *intercept);

/* The summed log-loss of the rows and its gradient, accumulated in float64.
 *
 * multinomial == 0 (binomial): coef (1, d), y (n_rows) float64 in {0, 1}; the loss of a row
 * with margin m = x.w + b is log(1 + e^m) - y m.
 * multinomial != 0: coef (k, d) for k >= 2 classes, y in {0, ..., k-1}; the loss is
 * logsumexp(m) - m[y] with m = coef x + intercept.
 *
 * *loss is set to the sum over rows; dcoef (k, d) and dintercept (k) (float64, contiguous)
 * ACCUMULATE the gradient of that sum (the caller zeroes them); dintercept NULL: not needed.
 * intercept NULL: zero. The caller divides by the row count (summed over ranks first, when
 * the rows are a shard). Errors: DDL_E_VALUE for a shape mismatch or a label outside the
 * classes, DDL_E_TYPE for a wrong dtype, DDL_E_INDEX for a column index outside [0, d). */
ddl_status ddl_logistic_loss_grad(double *loss, ddl_tensor *dcoef, ddl_tensor *dintercept,
                                  const ddl_csr *x, const ddl_tensor *y, const ddl_tensor *coef,
                                  const ddl_tensor *intercept, int multinomial);

/* Compensated sums for a fit whose rows may be split over ranks: every total is kept as a
 * (hi, lo) pair of doubles (TwoSum), so the same rows give the same rounded totals however they
 * are split, once the pairs are added in a fixed order (see ddl/ml/_collective.py).
 *
 * ddl_column_moments: acc (2, 2 + 2d) float64 (row 0 hi, row 1 lo) ACCUMULATES
 * [sum w, sum w^2, sum_i w x_ij (d), sum_i w x_ij^2 (d)]; weights (n_rows) float64 >= 0 or
 * NULL (all 1). */
ddl_status ddl_column_moments(ddl_tensor *acc, const ddl_csr *x, const ddl_tensor *weights);

/* ddl_logistic_sums: ddl_logistic_loss_grad with row weights (NULL: 1) and compensated totals:
 * acc (2, 1 + k d + k) float64 ACCUMULATES [sum w loss, the gradient of it: dcoef (k, d)
 * row-major, dintercept (k)]. Rows of weight 0 are skipped. Errors as ddl_logistic_loss_grad,
 * and DDL_E_VALUE for a negative or non-finite weight. */
ddl_status ddl_logistic_sums(ddl_tensor *acc, const ddl_csr *x, const ddl_tensor *y,
                             const ddl_tensor *weights, const ddl_tensor *coef,
                             const ddl_tensor *intercept, int multinomial);

#ifdef __cplusplus
}
#endif
#endif /* DDL_ML_H */
