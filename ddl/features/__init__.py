"""ddl.features: text to sparse features, as Spark ML does it.

    docs = ["Spark is fast", "ddl runs on CPUs"]
    tokens = Tokenizer().transform(docs)          # [["spark", "is", "fast"], ...]
    X = HashingTF(num_features=2**18).transform(tokens)   # ddl.sparse.CSRMatrix

HashingTF puts term t in column nonNegativeMod(murmur3_x86_32(utf8(t), seed=42), num_features),
exactly as Spark 3's HashingTF, so a term lands in the same column on every rank, machine and
run (and in Spark). The hashing runs in C.
"""
import re

import numpy as np

from .. import _C
from ..sparse import CSRMatrix

_JAVA_WS = re.compile(r"[ \t\n\x0b\f\r]")  # Java's \s: ASCII whitespace only


def murmur3_32(data, seed=0):
    """MurmurHash3_x86_32 of bytes (a str is hashed as UTF-8) as an unsigned 32-bit int."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _C.murmur3_32(data, int(seed) & 0xFFFFFFFF)


class _Transformer:
    """A stateless stage: fit does nothing; fit_transform == transform."""

    def fit(self, X, y=None):
        return self

    def fit_transform(self, X, y=None):
        return self.transform(X)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def get_params(self):
        return {}


def _documents(docs, who):
    if isinstance(docs, str):
        raise TypeError(f"{who}.transform expects a list of strings, not one string")
    out = list(docs)
    for i, d in enumerate(out):
        if not isinstance(d, str):
            raise TypeError(f"{who}.transform: document {i} is a {type(d).__name__}, not a str")
    return out


class Tokenizer(_Transformer):
    """Spark's Tokenizer: lowercase, then split on each whitespace character.

    Exactly Spark's `s.toLowerCase.split("\\s")`: a run of several spaces leaves empty tokens
    between them (and a leading space one in front), trailing ones are dropped, and "" gives
    [""]. RegexTokenizer() (pattern \\s+, min_token_length 1) gives clean tokens instead.
    """

    def transform(self, docs):
        out = []
        for d in _documents(docs, "Tokenizer"):
            parts = _JAVA_WS.split(d.lower())
            if len(parts) > 1:  # Java's split drops trailing empty strings (when it split)
                while parts and parts[-1] == "":
                    parts.pop()
            out.append(parts)
        return out


def _java_split(rx, s):
    from ._javaregex import java_split

    return java_split(rx, s)


class RegexTokenizer(_Transformer):
    """Spark's RegexTokenizer: with gaps=True the pattern matches separators (split, as Java's
    Pattern.split), else tokens (find all); tokens shorter than min_token_length are dropped.
    The pattern is Java's syntax with Java's meaning (ddl/features/_javaregex.py, on the
    `regex` package): ASCII \\w \\d \\s and POSIX classes such as \\p{Punct} unless (?U),
    \\p{L} and the other Unicode properties, \\h, Unicode-aware \\b, class intersection
    [a-z&&[^aeiou]], \\Q...\\E. What has no faithful translation raises ValueError."""

    def __init__(self, pattern=r"\s+", gaps=True, min_token_length=1, to_lowercase=True):
        if min_token_length < 0:
            raise ValueError(f"RegexTokenizer: min_token_length must be >= 0, got "
                             f"{min_token_length}")
        self.pattern, self.gaps = pattern, bool(gaps)
        self.min_token_length, self.to_lowercase = int(min_token_length), bool(to_lowercase)
        try:
            from ._javaregex import compile_java
        except ImportError:
            raise ImportError("RegexTokenizer needs the `regex` package (pip install regex), "
                              "which gives Java's pattern syntax its meaning") from None
        self._re = compile_java(pattern)

    def get_params(self):
        return {"pattern": self.pattern, "gaps": self.gaps,
                "min_token_length": self.min_token_length, "to_lowercase": self.to_lowercase}

    def transform(self, docs):
        out, n = [], self.min_token_length
        for d in _documents(docs, "RegexTokenizer"):
            if self.to_lowercase:
                d = d.lower()
            toks = _java_split(self._re, d) if self.gaps else [
                m.group(0) for m in self._re.finditer(d)]
            out.append([t for t in toks if len(t) >= n])
        return out


class HashingTF(_Transformer):
    """Term frequencies by the hashing trick (Spark's HashingTF): token lists to a CSRMatrix
    (n_docs, num_features) of counts (1.0 per present term with binary=True)."""

    def __init__(self, num_features=1 << 18, binary=False, dtype=np.float64):
        num_features = int(num_features)
        if not 1 <= num_features <= 2**31 - 1:
            raise ValueError(f"HashingTF: num_features must be in [1, 2^31 - 1], got "
                             f"{num_features}")
        d = np.dtype(getattr(dtype, "numpy", dtype))
        if d not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"HashingTF: dtype must be float32 or float64, got {d}")
        self.num_features, self.binary, self.dtype = num_features, bool(binary), d

    def get_params(self):
        return {"num_features": self.num_features, "binary": self.binary}

    def index_of(self, term):
        """The column of a term (Spark's HashingTF.indexOf)."""
        raw = term if isinstance(term, bytes) else str(term).encode("utf-8", "replace")
        h = murmur3_32(raw, 42)
        h = h - (1 << 32) if h >= 1 << 31 else h  # Java's int
        return h % self.num_features  # Python's % is already non-negative

    def transform(self, token_lists):
        if isinstance(token_lists, str):
            raise TypeError("HashingTF.transform expects a list of token lists; run a "
                            "Tokenizer first")
        parts, doc_ends = [], []
        for i, toks in enumerate(token_lists):
            if isinstance(toks, (str, bytes)):
                raise TypeError(f"HashingTF.transform: document {i} is a string, not a list of "
                                "tokens; run a Tokenizer first")
            for t in toks:
                if isinstance(t, str):
                    # Java encodes an unpaired surrogate as '?', as errors="replace" does
                    parts.append(t.encode("utf-8", "replace"))
                elif isinstance(t, bytes):
                    parts.append(t)
                else:
                    raise TypeError(f"HashingTF.transform: document {i} holds a "
                                    f"{type(t).__name__} term; terms must be str")
            doc_ends.append(len(parts))
        token_ends = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
        ip, ix, v = _C.hashing_tf(b"".join(parts), token_ends.astype(np.int64),
                                  np.asarray(doc_ends, dtype=np.int64), self.num_features,
                                  self.binary, 0 if self.dtype == np.float32 else 1)
        return CSRMatrix(v.numpy(), ix.numpy(), ip.numpy(), (len(doc_ends), self.num_features),
                         check=False)


__all__ = ["HashingTF", "RegexTokenizer", "Tokenizer", "murmur3_32"]
