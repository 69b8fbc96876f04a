"""Record real Spark's LogisticRegression answers on the cases of tests/_spark_cases.py into
tests/data/spark_lr.json (coefficients, intercepts, objective history, iterations, training
predictions), and the ML pipeline example's predictions. Needs pyspark and Java 17.

    python3 scripts/record_spark_lr.py            # ~1-2 min on local[2]
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import _spark_cases as cases


def main():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    import pyspark
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import HashingTF, Tokenizer
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master("local[2]").appName("ddl-record")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    paths = {k: v for k, v in cases.ensure_data().items()}
    seed = cases.seed_path()
    if seed:
        paths["seed"] = (seed, 692)
    frames = {}
    out = {"spark": pyspark.__version__, "java": spark.sparkContext._jvm.System.getProperty(
        "java.version"), "cases": {}}
    t0 = time.time()
    for cid, data, params in cases.cases():
        if data not in paths:
            continue
        if data not in frames:
            path, d = paths[data]
            df = spark.read.format("libsvm").option("numFeatures", d).load(path)
            df = df.withColumn("rowid", F.monotonically_increasing_id()).cache()
            frames[data] = df
        df = frames[data]
        p = dict(params)
        lr = LogisticRegression()
        if p.pop("weighted", False):
            rows = df.select("rowid").collect()
            n = len(rows)
            wts = cases.weights(n)
            wdf = spark.createDataFrame([(r.rowid, float(wts[i])) for i, r in enumerate(rows)],
                                        ["rowid", "w"])
            df = df.join(wdf, "rowid").orderBy("rowid")
            lr.setWeightCol("w")
        lr.setParams(**p)
        model = lr.fit(df)
        pred = model.transform(df.orderBy("rowid")).select("prediction").collect()
        out["cases"][cid] = {
            "params": params,
            "coef": model.coefficientMatrix.toArray().tolist(),
            "intercept": model.interceptVector.toArray().tolist(),
            "history": list(model.summary.objectiveHistory),
            "iterations": model.summary.totalIterations,
            "predictions": [r.prediction for r in pred],
        }
        print(f"{cid}: {model.summary.totalIterations} iterations", flush=True)
    # the ML pipeline example (Spark's docs): Tokenizer, HashingTF(1000), LR(10, 0.001)
    train = spark.createDataFrame(cases.DOCS_TRAIN, ["text", "label"])
    test = spark.createDataFrame([(t,) for t in cases.DOCS_TEST], ["text"])
    pipe = Pipeline(stages=[Tokenizer(inputCol="text", outputCol="words"),
                            HashingTF(inputCol="words", outputCol="features", numFeatures=1000),
                            LogisticRegression(maxIter=10, regParam=0.001)])
    pm = pipe.fit(train)
    rows = pm.transform(test).select("text", "probability", "prediction").collect()
    lrm = pm.stages[-1]
    out["pipeline"] = {"coef": lrm.coefficients.toArray().tolist(),
                       "intercept": lrm.intercept,
                       "history": list(lrm.summary.objectiveHistory),
                       "p1": [r.probability[1] for r in rows],
                       "predictions": [r.prediction for r in rows]}
    out["seconds"] = round(time.time() - t0, 1)
    spark.stop()
    with open(os.path.join(cases.DATA, "spark_lr.json"), "w") as f:
        json.dump(out, f, indent=0)
    print(f"wrote tests/data/spark_lr.json ({len(out['cases'])} cases, {out['seconds']} s)")


if __name__ == "__main__":
    main()
