"""fsspec URLs (hdfs://, s3://, gs://, file://, memory://, ...) for ddl's readers: is_url,
expand (globs), sizes, and reading exactly the lines that start in a byte range, so each
rank reads only its share of a remote file (plus the rest of its last line). fsspec is
imported only when a URL is given; without it a URL is a clear ImportError.

    pieces = line_range("s3://bucket/data.svm", start, end)   # bytes of whole lines

Used by ddl.datasets.load_libsvm (line_span: a rank's lines, parsed from memory) and
ddl.data.ShardedDataset (filesystem, read_file for the manifest; shards by ranged reads).
"""
import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BLOCK = 1 << 20


def is_url(path):
    return isinstance(path, str) and bool(_URL.match(path))


def _fs(url):
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url!r} is a URL: reading it needs fsspec (pip install fsspec, and "
                          "the filesystem's package: s3fs, gcsfs, pyarrow for hdfs://)") from None
    return fsspec.core.url_to_fs(url)


def filesystem(url):
    """(fs, path) of a URL (fsspec.core.url_to_fs), with a clear error without fsspec."""
    return _fs(url)


def read_file(url):
    """A whole (small) file's bytes, e.g. a shard directory's manifest.json."""
    fs, path = _fs(url)
    return fs.cat_file(path)


def expand(url, who="load_libsvm"):
    """[(fs, path, url)] of a URL or a glob URL (sorted)."""
    fs, path = _fs(url)
    proto = url.split("://", 1)[0]
    if any(c in path for c in "*?["):
        found = sorted(fs.glob(path))
        if not found:
            raise FileNotFoundError(f"{who}: no file matches {url!r}")
        return [(fs, p, f"{proto}://{p.split('://', 1)[-1]}") for p in found]
    if not fs.exists(path):
        raise FileNotFoundError(f"{who}: no file {url!r}")
    return [(fs, path, url)]


def size(fs, path):
    return int(fs.size(path))


def read_range(fs, path, start, end):
    """The bytes [start, end) of a file."""
    with fs.open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def line_range(fs, path, start, end, total):
    """The bytes of the lines that START in [start, end) (each to its end), reading from
    start - 1 to the end of the line holding byte end - 1."""
    return line_span(fs, path, start, end, total)[1]


class LineTooLong(ValueError):
    pass


def line_span(fs, path, start, end, total, cap=None):
    """(offset, bytes): line_range's bytes and the file offset where they begin (the first
    line start >= start). cap: the longest line allowed while looking for a line's start or
    end (LineTooLong, a ValueError, past it), so a file without newlines is never read whole
    for one line; None: no cap."""
    if start >= end:
        return start, b""
    with fs.open(path, "rb") as f:
        if start > 0:  # a line starts at start only if byte start - 1 ends the previous one
            f.seek(start - 1)
            skip = 0
            while True:
                block = f.read(_BLOCK)
                if not block:
                    return total, b""
                nl = block.find(b"\n")
                if nl >= 0:
                    skip += nl + 1
                    break
                skip += len(block)
                if cap is not None and skip >= cap:
                    raise LineTooLong(f"a line longer than {cap} bytes near byte {start}")
            first = start - 1 + skip  # the first line start >= start
        else:
            first = 0
        if first >= end:
            return first, b""
        f.seek(first)
        out = bytearray(f.read(end - first))
        if out.endswith(b"\n") or first + len(out) >= total:
            return first, bytes(out)
        tail = len(out) - (out.rfind(b"\n") + 1)  # the bytes of the last line so far
        while True:  # finish the last line
            block = f.read(_BLOCK)
            if not block:
                return first, bytes(out)
            nl = block.find(b"\n")
            if nl >= 0:
                out += block[:nl + 1]
                return first, bytes(out)
            out += block
            tail += len(block)
            if cap is not None and tail >= cap:
                raise LineTooLong(f"a line longer than {cap} bytes near byte "
                                  f"{first + len(out) - tail}")


def count_lines(fs, path, upto):
    """1 + the number of newlines in bytes [0, upto): the line number of a line starting at
    byte upto (read in blocks; used only to report an error)."""
    n, off = 1, 0
    with fs.open(path, "rb") as f:
        while off < upto:
            block = f.read(min(_BLOCK, upto - off))
            if not block:
                raise OSError(f"{path}: short read at byte {off}")
            n += block.count(b"\n")
            off += len(block)
    return n
