"""ddl.spark against a real local Spark (pyspark, local[2], the session-wide `spark` fixture of
conftest.py): the Distributor's Spark mode with 2 ranks, a failing rank, too few slots, a
DataFrame-fed DDP training, a distributed LogisticRegression fed from a DataFrame (both modes)
that equals the single-process fit, and live parity with Spark ML (LogisticRegression on one
OWL-QN binomial and one L-BFGS multinomial case, RegexTokenizer, HashingTF).

Kept cheap on purpose (each Spark job costs seconds): local_mode=True without a DataFrame needs
no Spark and is tested in test_spark_local.py; every recorded LogisticRegression case is checked
against Spark's numbers without Spark in test_spark_parity.py, so live parity runs two."""
import os
import shutil
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _spark_cases as C

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark)")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java (apt-get install openjdk-17-jre-headless)",
                allow_module_level=True)
if "asan" in os.environ.get("LD_PRELOAD", "") or "tsan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("a JVM does not run under the sanitizers' LD_PRELOAD", allow_module_level=True)

from ddl.datasets import load_libsvm
from ddl.features import HashingTF, RegexTokenizer, Tokenizer
from ddl.ml import LogisticRegression
from ddl.spark import Distributor, RankData, RankFailedError

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]


# ---- functions the ranks run (module level: shipped by value) --------------------------------


def sum_ranks(scale, offset=0.0):
    import ddl.distributed as dist

    x = np.array([float(dist.get_rank() + 1)])
    dist.all_reduce(x)
    print(f"hello from rank {dist.get_rank()} of {dist.get_world_size()}")
    return {"sum": float(x[0]) * scale + offset, "world": dist.get_world_size(),
            "rank": dist.get_rank()}


def fail_on_rank_one():
    import ddl.distributed as dist

    if dist.get_rank() == 1:
        raise ValueError("bad shard on this rank")
    dist.barrier()


def fit_lr(data, params):
    m = LogisticRegression(**params).fit(data.X, data.y)
    return {"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(), "n_iter": m.n_iter_,
            "rows": len(data)}


def ddp_train(data, epochs):
    import ddl
    import ddl.distributed as dist
    from ddl import nn
    from ddl.nn.parallel import DistributedDataParallel

    ddl.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(data.X.shape[1], 1))
    opt = ddl.optim.SGD(model.parameters(), lr=0.1)
    X = ddl.tensor(np.asarray(data.X, dtype=np.float32))
    y = ddl.tensor(data.y.astype(np.float32).reshape(-1, 1))
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    w = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    every = np.zeros(dist.get_world_size() * w.size, dtype=w.dtype)
    dist.all_gather_into_tensor(every, w)
    return {"losses": losses, "weights": every.reshape(dist.get_world_size(), -1).tolist(),
            "rows": len(data)}


# ---- the distributor -------------------------------------------------------------------------


@pytest.mark.parametrize("local_mode", [False])
def test_distributor_returns_rank_zero_result_and_streams_logs(spark, local_mode):
    lines = []
    d = Distributor(2, local_mode=local_mode, log=lines.append)
    out = d.run(sum_ranks, 2.0, offset=1.0)
    assert out == {"sum": 7.0, "world": 2, "rank": 0}
    text = "\n".join(lines)
    for r in (0, 1):
        assert f"hello from rank {r} of 2" in text
    # each line says its rank: ddl.run's "[rankN]:" locally, "[rank N]" from the tasks
    tag = "[rank{r}]:" if local_mode else "[rank {r}]"
    assert any(line.startswith(tag.format(r=1)) and "hello from rank 1" in line
               for line in lines), lines
    # reused Python workers: a second run in the same session works as the first
    assert d.run(sum_ranks, 1.0)["sum"] == 3.0


@pytest.mark.parametrize("local_mode", [False])
def test_failing_rank_is_named_on_the_driver(spark, local_mode):
    t = time.monotonic()
    with pytest.raises(RankFailedError, match="bad shard on this rank") as e:
        Distributor(2, local_mode=local_mode, log=lambda line: None).run(fail_on_rank_one)
    assert e.value.rank == 1
    assert "ddl rank 1 failed: ValueError" in str(e.value)
    assert time.monotonic() - t < 120


def test_too_few_slots_fails_before_submitting(spark):
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="3 processes need 3 free task slots, the cluster "
                                           "has 2"):
        Distributor(3, local_mode=False).run(sum_ranks, 1.0)
    assert time.monotonic() - t < 10
    assert spark.sparkContext.statusTracker().getActiveStageIds() == []


def test_script_runs_on_every_rank(spark, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import sys\nimport ddl.distributed as dist\n"
                      "print('script rank', dist.get_rank(), sys.argv[1:])\n")
    lines = []
    assert Distributor(2, local_mode=False, log=lines.append).run(str(script), "--x", 3) is None
    assert sum("script rank" in line and "['--x', '3']" in line for line in lines) == 2


# ---- DataFrames into ranks -------------------------------------------------------------------


def _pixels_df(spark):
    path, d = C.ensure_data()["pixels"]
    return spark.read.format("libsvm").option("numFeatures", d).load(path), path, d


def test_rank_data_from_vector_columns(spark):
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame([(Vectors.dense([1.0, 0.0, 2.0]), 1.0, 0.5),
                                (Vectors.sparse(3, [1], [4.0]), 0.0, 2.0)],
                               ["features", "label", "w"])
    data = RankData.from_rows(df.collect(), weight="w")
    np.testing.assert_array_equal(data.X.toarray(), [[1, 0, 2], [0, 4, 0]])
    np.testing.assert_array_equal(data.y, [1, 0])
    np.testing.assert_array_equal(data.w, [0.5, 2.0])
    dense = RankData.from_rows(df.limit(1).collect())
    assert isinstance(dense.X, np.ndarray) and dense.X.shape == (1, 3)
    with pytest.raises(KeyError, match="no column 'nope'"):
        RankData.from_rows(df.collect(), label="nope")


@pytest.mark.parametrize("local_mode", [False, True])
def test_dataframe_fed_logistic_regression_equals_single_process(spark, local_mode):
    df, path, d = _pixels_df(spark)
    X, y = load_libsvm(path, n_features=d, dtype=np.float64)
    params = {"reg_param": 0.01, "max_iter": 100}
    one = LogisticRegression(**params).fit(X, y)
    out = Distributor(2, local_mode=local_mode, log=lambda line: None).run_on_dataframe(
        df.repartition(3), fit_lr, params)
    assert out["rows"] < len(y)  # rank 0 saw only its share
    np.testing.assert_array_equal(out["coef"], one.coef_.tolist())
    np.testing.assert_array_equal(out["intercept"], one.intercept_.tolist())
    assert out["n_iter"] == one.n_iter_


def test_dataframe_fed_ddp_training(spark):
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = X @ np.array([0.5, -1.0, 2.0]) + 0.3
    df = spark.createDataFrame([(Vectors.dense(r), float(t)) for r, t in zip(X, y)],
                               ["features", "label"])
    out = Distributor(2, local_mode=False, log=lambda line: None).run_on_dataframe(
        df, ddp_train, 30)
    assert out["rows"] < 64
    assert out["losses"][-1] < 0.2 * out["losses"][0]
    assert out["weights"][0] == out["weights"][1]  # DDP kept the ranks identical


# ---- live parity with Spark ML ---------------------------------------------------------------

# one OWL-QN (elastic net) binomial and one L-BFGS multinomial case, live; the recorded cases
# (test_spark_parity.py) cover the rest without a JVM
LIVE = ["pixels-binomial-enet-conv", "multiclass-multinomial-l2-it100"]


@pytest.mark.parametrize("cid", LIVE)
def test_live_logistic_regression_matches_spark(spark, cid):
    from pyspark.ml.classification import LogisticRegression as SparkLR

    _, data, params = next(c for c in C.cases() if c[0] == cid)
    path, d = C.ensure_data()[data]
    df = spark.read.format("libsvm").option("numFeatures", d).load(path)
    sm = SparkLR(**params).fit(df)
    X, y = load_libsvm(path, n_features=d, dtype=np.float64)
    m = LogisticRegression(**C.ddl_params(params)).fit(X, y)
    assert m.n_iter_ == sm.summary.totalIterations
    b = np.concatenate([sm.coefficientMatrix.toArray().ravel(), sm.interceptVector.toArray()])
    a = np.concatenate([m.coef_.ravel(), m.intercept_])
    assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(b))
    pred = [r.prediction for r in sm.transform(df).select("prediction").collect()]
    np.testing.assert_array_equal(m.predict(X), pred)


DOCS = ["Hello, World! Straße café", "naïve  déjà-vu\tTAB", "e-mail: a.b@c.de; x_y 42",
        "Ünïcödé ÅNGSTRÖM ǅemal", "  leading and trailing  ", "tabs\tand\nnewlines",
        "don't stop—dash … ellipsis", "中文 字符 and ascii", "snake_case CamelCase 3.14"]
PATTERNS = [(r"\s+", True), (r"\W", True), (r"\w+", False), (r"\p{L}+", False),
            (r"\p{Punct}", True), (r"\p{Alpha}+", False), (r"(?U)\w+", False),
            (r"\b\w", False), (r"[a-z&&[^aeiou]]+", False), (r"\h+", True),
            (r"\p{IsAlphabetic}+", False), (r"[\p{L}\p{Nd}]+", False), (r"\p{Lu}\p{Ll}*", False),
            (r"\p{javaLowerCase}+", False), (r"\p{InGreek}|\p{IsLatin}+", False),
            (r"\p{Space}+", True), (r"[^\p{Alnum}]+", True), (r"\Q.\E", True), (r"(?i)A", True)]


def test_live_tokenizers_and_hashing_match_spark(spark):
    from pyspark.ml.feature import HashingTF as SHashingTF
    from pyspark.ml.feature import RegexTokenizer as SRegexTokenizer
    from pyspark.ml.feature import Tokenizer as STokenizer

    df = spark.createDataFrame([(t,) for t in DOCS], ["text"])
    got = [r.words for r in STokenizer(inputCol="text", outputCol="words").transform(df)
           .select("words").collect()]
    assert Tokenizer().transform(DOCS) == got
    from pyspark.ml import Pipeline as SPipeline

    stages, cases = [], []
    for pattern, gaps in PATTERNS:  # every tokenizer in one pass over the documents
        for lower in (True, False):
            stages.append(SRegexTokenizer(inputCol="text", outputCol=f"t{len(stages)}",
                                          pattern=pattern, gaps=gaps, toLowercase=lower,
                                          minTokenLength=1))
            cases.append((pattern, gaps, lower))
    rows = SPipeline(stages=stages).fit(df).transform(df).collect()
    for i, (pattern, gaps, lower) in enumerate(cases):
        want = [r[f"t{i}"] for r in rows]
        ours = RegexTokenizer(pattern=pattern, gaps=gaps, to_lowercase=lower).transform(DOCS)
        assert ours == want, (pattern, gaps, lower)
    toks = RegexTokenizer(pattern=r"\p{L}+", gaps=False).transform(DOCS)
    tdf = spark.createDataFrame([(t,) for t in toks], ["words"])
    for n in (1, 7, 1000):
        want = [r.f for r in SHashingTF(inputCol="words", outputCol="f", numFeatures=n)
                .transform(tdf).select("f").collect()]
        ours = HashingTF(num_features=n).transform(toks).toarray()
        np.testing.assert_array_equal(ours, np.array([w.toArray() for w in want]))
