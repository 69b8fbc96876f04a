"""ddl.features: MurmurHash3 against published vectors and a Python reference, HashingTF
columns as Spark's (its documented outputs), Spark's Tokenizer quirks, RegexTokenizer."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ddl.features import HashingTF, RegexTokenizer, Tokenizer, murmur3_32
from ddl.sparse import CSRMatrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Published MurmurHash3_x86_32 test vectors: (bytes, seed, hash)
VECTORS = [
    (b"", 0, 0),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
    (b"\x21\x43\x65", 0, 0x7E4A8634),
    (b"\x21\x43", 0, 0xA0F7B07A),
    (b"\x21", 0, 0x72661CF4),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"\x00\x00\x00", 0, 0x85F0B427),
    (b"\x00\x00", 0, 0x30F4C306),
    (b"\x00", 0, 0x514E28B7),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"aaa", 0x9747B28C, 0x283E0130),
    (b"aa", 0x9747B28C, 0x5D211726),
    (b"a", 0x9747B28C, 0x7FA09EA6),
    (b"abcd", 0x9747B28C, 0xF0478627),
    (b"abc", 0x9747B28C, 0xC84A62DD),
    (b"ab", 0x9747B28C, 0x74875592),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    ("ππππππππ".encode(), 0x9747B28C, 0xD58063C1),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    (b"hello", 0, 0x248BFA47),
]


def murmur3_reference(data, seed):
    """Appleby's MurmurHash3_x86_32, straight from the reference C, in Python."""
    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    c1, c2, m = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & m
    n = len(data) // 4
    for i in range(n):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = rotl((k * c1) & m, 15) * c2 & m
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & m
    tail, k = data[4 * n:], 0
    for i, b in enumerate(tail):
        k |= b << (8 * i)
    if tail:
        h ^= rotl((k * c1) & m, 15) * c2 & m
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


@pytest.mark.parametrize("data,seed,expected", VECTORS)
def test_murmur3_published_vectors(data, seed, expected):
    assert murmur3_32(data, seed) == expected
    assert murmur3_reference(data, seed) == expected


def test_murmur3_matches_reference_on_random_bytes():
    rng = np.random.default_rng(0)
    for n in list(range(40)) + [255, 1000, 4097]:
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        seed = int(rng.integers(0, 2**32))
        assert murmur3_32(data, seed) == murmur3_reference(data, seed), n


def test_murmur3_str_is_utf8():
    assert murmur3_32("ππ", 7) == murmur3_32("ππ".encode(), 7)


# ---- HashingTF -------------------------------------------------------------------------------


def spark_index(term, n):
    """Spark's nonNegativeMod(murmur3(utf8(term), 42) as a Java int, n)."""
    h = murmur3_reference(term.encode("utf-8"), 42)
    h = h - 2**32 if h >= 2**31 else h
    return ((h % n) + n) % n


def test_hashingtf_spark_documented_outputs():
    # pyspark.ml.feature.HashingTF's doctest (Spark 3.x): ["a", "b", "c"] with 10 features is
    # SparseVector(10, {5: 1.0, 7: 1.0, 8: 1.0}); indexOf("b") == 5; with 5 features {0, 2, 3}
    X = HashingTF(num_features=10).transform([["a", "b", "c"]])
    assert X.shape == (1, 10)
    assert X.indices.tolist() == [5, 7, 8] and X.data.tolist() == [1.0, 1.0, 1.0]
    assert HashingTF(num_features=10).index_of("b") == 5
    assert HashingTF(num_features=5).transform([["a", "b", "c"]]).indices.tolist() == [0, 2, 3]


def test_hashingtf_counts_and_columns():
    docs = [["spark", "is", "fast", "spark"], [], ["über", "naïve", "日本語", "spark"],
            ["x"] * 5]
    n = 2**18
    X = HashingTF().transform(docs)
    assert isinstance(X, CSRMatrix) and X.shape == (4, n) and X.dtype == np.float64
    for i, doc in enumerate(docs):
        want = {}
        for t in doc:
            want[spark_index(t, n)] = want.get(spark_index(t, n), 0) + 1
        row = X[i]
        assert row.indices.tolist() == sorted(want)  # sorted, one entry per column
        assert row.data.tolist() == [float(want[c]) for c in sorted(want)]
    B = HashingTF(binary=True).transform(docs)
    assert B.data.tolist() == [1.0] * B.nnz and B.indices.tolist() == X.indices.tolist()


def test_hashingtf_non_power_of_two_uses_signed_mod():
    # a term whose hash is negative as a Java int: the column is h mod n taken non-negative
    terms = [f"t{i}" for i in range(200)]
    neg = [t for t in terms if murmur3_reference(t.encode(), 42) >= 2**31]
    assert neg
    for n in (7, 1000, 2**31 - 1):
        tf = HashingTF(num_features=n)
        X = tf.transform([[t] for t in neg])
        assert X.indices.tolist() == [spark_index(t, n) for t in neg]
        assert [tf.index_of(t) for t in neg] == [spark_index(t, n) for t in neg]


def test_hashingtf_same_columns_in_another_process():
    # Python's hash() of str changes per process (PYTHONHASHSEED); ours must not
    terms = ["alpha", "beta", "gamma", "δέλτα"]
    code = ("from ddl.features import HashingTF;"
            f"print(HashingTF().transform([{terms!r}]).indices.tolist())")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(HashingTF().transform([terms]).indices.tolist())


def test_hashingtf_errors():
    with pytest.raises(TypeError, match="Tokenizer"):
        HashingTF().transform("not tokenized")
    with pytest.raises(TypeError, match="Tokenizer"):
        HashingTF().transform(["a doc", "another"])
    with pytest.raises(TypeError, match="int"):
        HashingTF().transform([["a", 3]])
    with pytest.raises(ValueError):
        HashingTF(num_features=0)
    with pytest.raises(ValueError):
        HashingTF(num_features=2**31)


def test_hashingtf_float32_and_empty():
    X = HashingTF(num_features=16, dtype=np.float32).transform([["a", "a"], []])
    assert X.dtype == np.float32 and X.shape == (2, 16) and X.nnz == 1 and X.data[0] == 2
    E = HashingTF(num_features=16).transform([])
    assert E.shape == (0, 16) and E.nnz == 0


# ---- tokenizers ------------------------------------------------------------------------------


def test_tokenizer_is_sparks():
    t = Tokenizer()
    assert t.transform(["Hello World"]) == [["hello", "world"]]
    # Java's split("\\s"): empties between repeated separators and in front, none at the end
    assert t.transform(["a  b"]) == [["a", "", "b"]]
    assert t.transform([" a b "]) == [["", "a", "b"]]
    assert t.transform(["a\tb\nc\r\nD"]) == [["a", "b", "c", "", "d"]]
    assert t.transform([""]) == [[""]]
    assert t.transform(["   "]) == [[]]
    # Java's \s is ASCII: a no-break space does not split
    assert t.transform(["a\u00a0b"]) == [["a\u00a0b"]]
    assert t.fit_transform(["ÜBER Straße"]) == [["über", "straße"]]
    with pytest.raises(TypeError):
        t.transform("one string")
    with pytest.raises(TypeError):
        t.transform([1, 2])


def test_regex_tokenizer():
    assert RegexTokenizer().transform(["  Hello,   World  "]) == [["hello,", "world"]]
    r = RegexTokenizer(pattern=r"\w+", gaps=False)
    assert r.transform(["Hi, there! x"]) == [["hi", "there", "x"]]
    r = RegexTokenizer(pattern=r"\w+", gaps=False, min_token_length=2, to_lowercase=False)
    assert r.transform(["Hi, there! x"]) == [["Hi", "there"]]
    assert RegexTokenizer(pattern=",").transform(["a,b,,c"]) == [["a", "b", "c"]]
    assert RegexTokenizer(min_token_length=0).transform(["a  b"]) == [["a", "b"]]
    with pytest.raises(ValueError):
        RegexTokenizer(min_token_length=-1)
    assert "pattern" in repr(RegexTokenizer())


# ---- Java regex syntax and meaning (the live comparison with Spark is in test_spark.py) -------


@pytest.mark.parametrize("pattern,gaps,text,want", [
    (r"\p{Punct}", True, "a$b+c,d", ["a", "b", "c", "d"]),       # POSIX: ASCII symbols too
    (r"\w+", False, "café au lait", ["caf", "au", "lait"]),       # \w is ASCII in Java
    (r"(?U)\w+", False, "café au lait", ["café", "au", "lait"]),  # ... unless (?U)
    (r"\p{L}+", False, "café 12 ñu", ["café", "ñu"]),
    (r"\p{Alpha}+", False, "café", ["caf"]),                      # POSIX Alpha: ASCII
    (r"(?U)\p{Alpha}+", False, "café", ["café"]),
    (r"\h+", True, "a\u00a0b\tc", ["a", "b", "c"]),
    (r"[a-z&&[^aeiou]]+", False, "straße", ["str"]),              # class intersection
    (r"\b\w", False, "straße x", ["s", "x"]),                     # \b knows ß is a letter
    (r"a.b", False, "a\rb a-b", ["a-b"]),                         # '.' stops at \r too
    (r"\Q.*\E", True, "a.*b", ["a", "b"]),
    (r"\p{Lu}\p{Ll}*", False, "HelloWorld ÅNGSTRÖM", ["hello", "world", "å", "n", "g", "s", "t",
                                                        "r", "ö", "m"]),
])
def test_regex_tokenizer_java_meaning(pattern, gaps, text, want):
    lower = not pattern.startswith(r"\p{Lu}")
    got = RegexTokenizer(pattern=pattern, gaps=gaps, to_lowercase=lower).transform([text])[0]
    if not lower:
        want = [w for w in want]  # as written above, case kept
        got = [g.lower() for g in got]
    assert got == want


@pytest.mark.parametrize("pattern,what", [
    (r"\cA", r"\\c"), (r"a(?U)b", r"\(\?U\)"), (r"\p{NoSuchThing}", r"\\p\{NoSuchThing\}"),
    (r"(?d)a", r"\(\?d\)"),
])
def test_regex_tokenizer_refuses_what_it_cannot_translate(pattern, what):
    with pytest.raises(ValueError, match=what):
        RegexTokenizer(pattern=pattern)


def test_regex_tokenizer_splits_like_java():
    t = RegexTokenizer(pattern=r",", gaps=True, min_token_length=0)
    assert t.transform(["a,,b,,", ",a", ""]) == [["a", "", "b"], ["", "a"], [""]]
    z = RegexTokenizer(pattern=r"(?=b)", gaps=True, min_token_length=0)
    assert z.transform(["bab"]) == [["ba", "b"]]  # no leading "" from a zero-width match at 0
