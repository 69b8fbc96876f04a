"""load_libsvm: the libsvm/svmlight text format, parsed in C, whole or one rank's share.

    X, y = ddl.datasets.load_libsvm("data.svm")                # X: ddl.sparse.CSRMatrix
    X, y = load_libsvm("data.svm", rank=1, world_size=4)       # the second quarter's lines
    X, y = load_libsvm("parts/part-*.svm")                     # a glob (or a list) of files
    X, y = load_libsvm("hdfs://nn/data/part-*.svm")            # any fsspec URL (s3://, ...)

Sharding: the files are seen as one byte stream (in list order; a glob sorted) cut into
world_size equal byte ranges; a rank parses the lines that START in its range, each to its
end, so the ranks' rows together are every line of the files exactly once, in order, and each
rank reads about 1/world_size of the bytes. With no rank/world_size, an initialized process
group supplies them (and the ranks agree on n_features). docs/ml.md has the format details.

A URL (fsspec: hdfs://, s3://, file://, memory://, ...) is read the same way, each rank
fetching only its byte range (and the rest of its last line); the bytes are parsed in memory
by the same C parser (no temporary file). An error names the URL and the line's true number
in the whole file: a share that does not start the file counts the newlines before it only
when it reports an error (if that re-read fails, the message says "line N of the byte range
starting at offset X" instead). The line cap (DDL_LIBSVM_MAX_LINE) bounds the fetch too.
"""
import glob
import os

import numpy as np

from .. import _C, _fsspec
from ..sparse import CSRMatrix

_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}


def _dtype_code(dtype):
    d = getattr(dtype, "numpy", dtype)  # a ddl dtype carries its NumPy twin
    try:
        d = np.dtype(d)
    except TypeError:
        raise TypeError(f"load_libsvm: dtype must be float32 or float64, got {dtype!r}") from None
    if d not in _DTYPES:
        raise TypeError(f"load_libsvm: dtype must be float32 or float64, got {d}")
    return d, _DTYPES[d]


def _files(path):
    """[local path or (fs, path, url)] in order."""
    if _fsspec.is_url(path):
        return _fsspec.expand(path)
    if isinstance(path, (list, tuple)) and any(_fsspec.is_url(p) for p in path):
        out = []
        for p in path:
            out.extend(_fsspec.expand(p) if _fsspec.is_url(p) else [os.fsdecode(p)])
        if not out:
            raise ValueError("load_libsvm: an empty list of files")
        return out
    if isinstance(path, (str, bytes, os.PathLike)):
        p = os.fsdecode(path)
        if glob.has_magic(p):
            files = sorted(glob.glob(p))
            if not files:
                raise FileNotFoundError(f"load_libsvm: no file matches {p!r}")
            return files
        return [p]
    files = [os.fsdecode(f) for f in path]
    if not files:
        raise ValueError("load_libsvm: an empty list of files")
    return files


def _rank_world(rank, world_size):
    """(rank, world_size, from_group)."""
    if rank is None and world_size is None:
        from .. import distributed as dist

        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), True
        return 0, 1, False
    if rank is None or world_size is None:
        raise ValueError("load_libsvm: pass both rank and world_size, or neither (then the "
                         "process group, if any, decides)")
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"load_libsvm: rank {rank} is outside [0, {world_size})")
    return rank, world_size, False


def byte_ranges(sizes, rank, world_size):
    """[(file index, start, end)]: the pieces of rank's share of the concatenated files."""
    total = sum(sizes)
    lo, hi = total * rank // world_size, total * (rank + 1) // world_size
    out, off = [], 0
    for i, s in enumerate(sizes):
        a, b = max(lo, off), min(hi, off + s)
        if a < b:
            out.append((i, a - off, b - off))
        off += s
    return out


_MAX_LINE = 1 << 30  # the C parser's default cap on a line (DDL_LIBSVM_MAX_LINE overrides)


def _max_line():
    v = os.environ.get("DDL_LIBSVM_MAX_LINE", "")
    return int(v) if v.isdigit() and (1 << 20) <= int(v) <= (1 << 62) else _MAX_LINE


def _parse(f, start, end, total, n_features, code):
    """One file's lines that start in [start, end) (end < 0: to the end) through the C parser;
    a URL's share is fetched (only those bytes) and parsed from memory."""
    if not isinstance(f, tuple):
        return _C.libsvm_load(f, start, end, n_features, code)
    fs, path, url = f
    try:
        first, data = _fsspec.line_span(fs, path, start, total if end < 0 else end, total,
                                        cap=_max_line())
    except _fsspec.LineTooLong as e:
        raise ValueError(f"{url}: {e} (the cap: set DDL_LIBSVM_MAX_LINE to raise it)") from None
    if first == 0:
        return _C.libsvm_parse(data, url, 0, 1, n_features, code)
    try:
        return _C.libsvm_parse(data, url, first, 0, n_features, code)
    except ValueError as e:
        try:  # only now read the bytes before the share, to give the line's number in the file
            line = _fsspec.count_lines(fs, path, first)
        except (OSError, ValueError):
            raise e from None
    return _C.libsvm_parse(data, url, first, line, n_features, code)  # raises, numbered


def load_libsvm(path, n_features=None, dtype=np.float32, rank=None, world_size=None):
    """Load a libsvm file (or a list/glob of files): (X, y), X a CSRMatrix (n, n_features) of
    `dtype` values, y a float64 array of the labels.

    Indices in the file are 1-based and must increase along a line; `# comments`, blank
    lines, CRLF line ends and a last line without a line end are fine. Every malformed line
    raises ValueError("PATH:LINE: what is wrong"), LINE the true line number in that file.

    n_features: the column count (an index above it is an error); None: the largest index
    seen (agreed across the process group when it supplies rank and world_size, so every
    rank gets the same shape; with explicit rank/world_size, pass n_features to be sure).
    rank, world_size: parse only that rank's byte range (see the module docstring).
    """
    np_dtype, code = _dtype_code(dtype)
    if n_features is not None:
        n_features = int(n_features)
        if n_features < 1:
            raise ValueError(f"load_libsvm: n_features must be >= 1, got {n_features}")
    rank, world_size, from_group = _rank_world(rank, world_size)
    files = _files(path)
    sizes = [_fsspec.size(f[0], f[1]) if isinstance(f, tuple) else os.stat(f).st_size
             for f in files]
    pieces = byte_ranges(sizes, rank, world_size) if world_size > 1 else [
        (i, 0, -1) for i in range(len(files))]
    indptrs, indices, values, labels, max_col = [np.zeros(1, dtype=np.int64)], [], [], [], 0
    nnz, error = 0, None
    agree = n_features is None and from_group and world_size > 1
    try:
        for i, start, end in pieces:
            ip, ix, v, y, mc = _parse(files[i], start, end, sizes[i], n_features or 0, code)
            ip, ix, v, y = ip.numpy(), ix.numpy(), v.numpy(), y.numpy()
            indptrs.append(ip[1:] + nnz)
            indices.append(ix)
            values.append(v)
            labels.append(y)
            nnz += len(ix)
            max_col = max(max_col, mc)
    except (ValueError, OSError, MemoryError) as e:
        if not agree:
            raise
        error = e  # raise after the collective below, so the other ranks do not wait for us
    if agree:
        from ..ml._collective import allreduce_

        max_col, failed = (int(v) for v in allreduce_(
            np.array([max_col, error is not None], dtype=np.int64), "max"))
        if error is not None:
            raise error
        if failed:
            raise ValueError("load_libsvm: another rank failed to parse its share (its error "
                             "names the file and line)")
    if n_features is None:
        n_features = max_col
    if len(indices) == 1:  # the common case: keep the parser's arrays, no copies
        ix, v, y = indices[0], values[0], labels[0]
        ip = np.concatenate(indptrs)
    else:
        ix = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
        v = np.concatenate(values) if values else np.zeros(0, dtype=np_dtype)
        y = np.concatenate(labels) if labels else np.zeros(0)
        ip = np.concatenate(indptrs)
    X = CSRMatrix(v, ix, ip, (len(ip) - 1, n_features), check=False)
    return X, y
