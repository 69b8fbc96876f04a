"""ddl.sparse: a compressed-sparse-row matrix, the output of the libsvm loader and HashingTF and
an input of ddl.ml.LogisticRegression.

    X = CSRMatrix(data, indices, indptr, shape=(n_rows, n_cols))
    X.toarray()            # dense NumPy
    X.to_scipy()           # scipy.sparse.csr_matrix, when SciPy is installed
    CSRMatrix.from_scipy(m), CSRMatrix.from_dense(a)
    X[10:20], X[[3, 1]], X[mask]   # row subsets

The layout is SciPy's: row i holds data[indptr[i]:indptr[i+1]] at columns
indices[indptr[i]:indptr[i+1]]. Here indices and indptr are always int64 and data float32 or
float64; indptr[0] is 0 and indptr[-1] == nnz.
"""
import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(dtype):
    d = np.dtype(getattr(dtype, "numpy", dtype))
    if d not in _FLOATS:
        raise TypeError(f"CSRMatrix: data must be float32 or float64, not {d}")
    return d


class CSRMatrix:
    """A CSR matrix over NumPy arrays (data, indices, indptr) of the given shape."""

    __slots__ = ("data", "indices", "indptr", "shape")

    def __init__(self, data, indices, indptr, shape, check=True):
        data = np.asarray(data)
        if data.dtype not in _FLOATS:
            data = data.astype(np.float64)
        self.data = np.ascontiguousarray(data)
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        if len(indptr) and indptr[0] != 0:  # a row slice of a bigger matrix: rebase
            lo, hi = int(indptr[0]), int(indptr[-1])
            self.data, self.indices = self.data[lo:hi], self.indices[lo:hi]
            indptr = indptr - lo
        self.indptr = indptr
        n, m = (int(s) for s in shape)
        self.shape = (n, m)
        if check:
            self.check()

    def check(self):
        """Raise ValueError unless the arrays form a valid (n, m) CSR matrix."""
        n, m = self.shape
        if n < 0 or m < 0:
            raise ValueError(f"CSRMatrix: negative shape {self.shape}")
        ip, ix = self.indptr, self.indices
        if self.data.ndim != 1 or ix.ndim != 1 or ip.ndim != 1:
            raise ValueError("CSRMatrix: data, indices and indptr must be 1-D")
        if len(ip) != n + 1:
            raise ValueError(f"CSRMatrix: indptr has {len(ip)} entries for {n} rows (needs "
                             f"{n + 1})")
        if len(ix) != len(self.data):
            raise ValueError(f"CSRMatrix: {len(ix)} indices but {len(self.data)} values")
        if ip[0] != 0 or ip[-1] != len(ix) or (n and np.any(np.diff(ip) < 0)):
            raise ValueError("CSRMatrix: indptr must rise from 0 to nnz without decreasing")
        if len(ix) and (ix.min() < 0 or ix.max() >= m):
            raise ValueError(f"CSRMatrix: column indices must be in [0, {m}), found "
                             f"[{ix.min()}, {ix.max()}]")

    # ---- conversions ---------------------------------------------------------------------
    @classmethod
    def from_dense(cls, a, dtype=None):
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"CSRMatrix.from_dense: expected a 2-D array, got {a.ndim}-D")
        dt = _float_dtype(dtype) if dtype is not None else (
            a.dtype if a.dtype in _FLOATS else np.dtype(np.float64))
        rows, cols = np.nonzero(a)
        indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=a.shape[0]), out=indptr[1:])
        return cls(a[rows, cols].astype(dt), cols, indptr, a.shape, check=False)

    @classmethod
    def from_scipy(cls, m):
        """From any scipy.sparse matrix or array (converted to CSR)."""
        m = m.tocsr()
        data = m.data if m.data.dtype in _FLOATS else m.data.astype(np.float64)
        return cls(data, m.indices, m.indptr, m.shape)

    def to_scipy(self):
        """A scipy.sparse.csr_matrix sharing these arrays where SciPy allows."""
        try:
            import scipy.sparse as sp
        except ImportError:
            raise ImportError("CSRMatrix.to_scipy needs SciPy: pip install scipy") from None
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)

    def toarray(self):
        out = np.zeros(self.shape, dtype=self.data.dtype)
        np.add.at(out, (self.row_ids(), self.indices), self.data)  # duplicates add, as SciPy
        return out

    def astype(self, dtype):
        dt = _float_dtype(dtype)
        return CSRMatrix(self.data.astype(dt), self.indices, self.indptr, self.shape, check=False)

    def copy(self):
        return CSRMatrix(self.data.copy(), self.indices.copy(), self.indptr.copy(), self.shape,
                         check=False)

    # ---- properties ----------------------------------------------------------------------
    @property
    def nnz(self):
        return int(self.indptr[-1]) if len(self.indptr) else 0

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return 2

    def row_ids(self):
        """The row of each stored value, (nnz,) int64."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))

    # ---- rows ----------------------------------------------------------------------------
    def __getitem__(self, key):
        """Rows: an int, a slice, an integer array or a boolean mask (a new CSRMatrix)."""
        n = self.shape[0]
        if isinstance(key, tuple):
            raise TypeError("CSRMatrix supports row indexing only (X[rows])")
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                stop = max(start, stop)
                lo, hi = int(self.indptr[start]), int(self.indptr[stop])
                return CSRMatrix(self.data[lo:hi], self.indices[lo:hi],
                                 self.indptr[start:stop + 1] - lo, (stop - start, self.shape[1]),
                                 check=False)
            key = np.arange(start, stop, step)
        elif isinstance(key, (int, np.integer)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"row {i} is out of range for {n} rows")
            return self[i % n:i % n + 1]
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"boolean row mask of shape {rows.shape} for {n} rows")
            rows = np.flatnonzero(rows)
        if rows.ndim != 1 or not (rows.dtype.kind in "iu" or rows.size == 0):
            raise IndexError("rows must be an int, a slice, a 1-D integer array or a mask")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        rows = rows % n if n else rows
        starts, lens = self.indptr[rows], np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1], dtype=np.int64)
        return CSRMatrix(self.data[take], self.indices[take], indptr,
                         (len(rows), self.shape[1]), check=False)

    # ---- products ------------------------------------------------------------------------
    def __matmul__(self, other):
        """X @ v for a dense vector (m,) or matrix (m, k): a dense float64 result."""
        v = np.asarray(other, dtype=np.float64)
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[1]:
            raise ValueError(f"CSRMatrix @: shapes {self.shape} and {v.shape} do not align")
        prod = self.data.astype(np.float64)[:, None] * v.reshape(v.shape[0], -1)[self.indices]
        out = np.zeros((self.shape[0], prod.shape[1]))
        np.add.at(out, self.row_ids(), prod)
        return out[:, 0] if v.ndim == 1 else out

    def __repr__(self):
        return (f"<CSRMatrix {self.shape[0]}x{self.shape[1]}, {self.nnz} stored {self.dtype} "
                "values>")


def issparse(x):
    """True for a CSRMatrix or a SciPy sparse matrix/array."""
    if isinstance(x, CSRMatrix):
        return True
    mod = type(x).__module__
    return mod.startswith("scipy.sparse") and hasattr(x, "tocsr")


def as_csr(x):
    """x as a CSRMatrix (from a CSRMatrix, a SciPy sparse matrix or a dense 2-D array)."""
    if isinstance(x, CSRMatrix):
        return x
    if issparse(x):
        return CSRMatrix.from_scipy(x)
    return CSRMatrix.from_dense(x)


def vstack(mats):
    """Stack CSR matrices with the same column count, top to bottom."""
    mats = [as_csr(m) for m in mats]
    if not mats:
        raise ValueError("vstack: no matrices")
    cols = {m.shape[1] for m in mats}
    if len(cols) != 1:
        raise ValueError(f"vstack: column counts differ: {sorted(cols)}")
    dt = np.result_type(*[m.dtype for m in mats])
    indptr = [np.zeros(1, dtype=np.int64)]
    off = 0
    for m in mats:
        indptr.append(m.indptr[1:] + off)
        off += m.nnz
    return CSRMatrix(np.concatenate([m.data for m in mats]).astype(dt, copy=False),
                     np.concatenate([m.indices for m in mats]), np.concatenate(indptr),
                     (sum(m.shape[0] for m in mats), cols.pop()), check=False)


__all__ = ["CSRMatrix", "as_csr", "issparse", "vstack"]
