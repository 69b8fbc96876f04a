"""Time ddl against Spark ML on the same libsvm file: load, then LogisticRegression fit
(binomial, regParam 0.01, maxIter 100), and check the two models agree. Needs pyspark and Java.

    python3 scripts/record_spark_speed.py [--rows 200000] [--cols 1000] [--nnz 20]

Writes the file to a temporary directory and removes it. Numbers taken on a loaded machine
vary; run it quiet for the benchmark table.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np


def write(path, n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d) * 0.3
    with open(path, "w") as f:
        for start in range(0, n, 10000):
            m = min(10000, n - start)
            cols = np.sort(rng.choice(d, size=(m, k)), axis=1)
            vals = np.round(rng.random((m, k)), 4) + 0.0001
            margin = (vals * w[cols]).sum(axis=1) + rng.logistic(size=m)
            for c, v, mg in zip(cols, vals, margin):
                c, idx = np.unique(c, return_index=True)
                f.write(("1" if mg > 0 else "0") + "".join(
                    f" {j + 1}:{x:g}" for j, x in zip(c, v[idx])) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--cols", type=int, default=1000)
    ap.add_argument("--nnz", type=int, default=20)
    a = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.classification import LogisticRegression as SparkLR
    from pyspark.sql import SparkSession

    from ddl.datasets import load_libsvm
    from ddl.ml import LogisticRegression

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.svm")
        write(path, a.rows, a.cols, a.nnz)
        mb = os.path.getsize(path) / 1e6
        t = time.perf_counter()
        X, y = load_libsvm(path, n_features=a.cols, dtype=np.float64)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        m = LogisticRegression(reg_param=0.01, max_iter=100).fit(X, y)
        t_fit = time.perf_counter() - t
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", "2g").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        t = time.perf_counter()
        df = spark.read.format("libsvm").option("numFeatures", a.cols).load(path).cache()
        df.count()
        s_load = time.perf_counter() - t
        t = time.perf_counter()
        sm = SparkLR(regParam=0.01, maxIter=100).fit(df)
        s_fit = time.perf_counter() - t
        b = np.concatenate([sm.coefficients.toArray(), [sm.intercept]])
        ours = np.concatenate([m.coef_[0], m.intercept_])
        rel = np.max(np.abs(ours - b)) / np.max(np.abs(b))
        print(f"{a.rows} x {a.cols} sparse ({a.nnz}/row, {mb:.1f} MB)")
        print(f"ddl:   load {t_load:.2f} s, fit {t_fit:.2f} s, {m.n_iter_} iterations")
        print(f"Spark: load {s_load:.2f} s, fit {s_fit:.2f} s, "
              f"{sm.summary.totalIterations} iterations (local[2])")
        print(f"load {s_load / t_load:.1f}x, fit {s_fit / t_fit:.1f}x faster in ddl; "
              f"coefficients {rel:.1e} apart")
        spark.stop()


if __name__ == "__main__":
    main()
