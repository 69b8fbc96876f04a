"""The cases on which ddl's LogisticRegression is held to Spark's answers: the data sets
(generated here, deterministic, also written to tests/data/) and the parameter sets. Used by
scripts/record_spark_lr.py (which runs real Spark and writes tests/data/spark_lr.json) and by
tests/test_spark_parity.py (recorded numbers always, live Spark when pyspark is installed)."""
import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Spark's ML pipeline example (docs/ml-pipeline): 4 training documents, 4 test documents
DOCS_TRAIN = [("a b c d e spark", 1.0), ("b d", 0.0), ("spark f g h", 1.0),
              ("hadoop mapreduce", 0.0)]
DOCS_TEST = ["spark i j k", "l m n", "spark hadoop spark", "apache hadoop"]


def pixels():
    """(labels, rows): 120 rows of 200 sparse integer 'pixel' values in 0..255 (raw scale,
    like Spark's sample_libsvm_data), a binary label from a noisy linear rule."""
    rng = np.random.default_rng(2024)
    n, d = 120, 200
    X = np.where(rng.random((n, d)) < 0.25, rng.integers(1, 256, size=(n, d)), 0).astype(float)
    X[:, 7] = 0.0      # an all-zero column (std 0)
    X[:, 11] = 128.0   # a constant column (std 0, mean != 0)
    w = rng.normal(size=d) / 400
    m = X @ w - np.median(X @ w) + rng.logistic(size=n) * 0.8
    return (m > 0).astype(float), X


def multiclass():
    """(labels, rows): 150 rows of 4 dense features on different scales, 3 classes."""
    rng = np.random.default_rng(7)
    n = 150
    y = np.repeat([0.0, 1.0, 2.0], n // 3)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    X = centers[y.astype(int)] + rng.normal(size=(n, 4)) * np.array([0.5, 0.35, 0.6, 0.3])
    X *= np.array([1.0, 10.0, 0.1, 100.0])  # scales apart, so standardization matters
    return y, np.round(X, 3)


def write_libsvm(path, y, X):
    with open(path, "w") as f:
        for label, row in zip(y, X):
            nz = np.flatnonzero(row)
            f.write(f"{label:g}" + "".join(f" {j + 1}:{row[j]:.17g}" for j in nz) + "\n")


def dataset_path(name):
    return os.path.join(DATA, f"spark_{name}.svm")


DATASETS = {"pixels": (pixels, 200), "multiclass": (multiclass, 4)}


def ensure_data():
    """Write the data sets to tests/data/ when missing; {name: (path, n_features)}."""
    out = {}
    for name, (make, d) in DATASETS.items():
        p = dataset_path(name)
        if not os.path.exists(p):
            os.makedirs(DATA, exist_ok=True)
            write_libsvm(p, *make())
        out[name] = (p, d)
    return out


# (case id, data set, Spark params). "converged": maxIter=1000 and tol=1e-10.
_FITS = {
    "l2": {"regParam": 0.01},
    "none": {"regParam": 0.0},
    "enet": {"regParam": 0.05, "elasticNetParam": 0.5},
    "l1": {"regParam": 0.02, "elasticNetParam": 1.0},
}
_RUNS = {"it10": {"maxIter": 10}, "it100": {"maxIter": 100},
         "conv": {"maxIter": 1000, "tol": 1e-10}}


def cases():
    out = []
    for data, families in (("pixels", ("binomial", "multinomial")), ("multiclass",
                                                                     ("multinomial",))):
        for fam in families:
            for fit, fp in _FITS.items():
                for run, rp in _RUNS.items():
                    if fit == "none" and data == "pixels" and run == "conv":
                        continue  # separable: no finite optimum
                    out.append((f"{data}-{fam}-{fit}-{run}", data,
                                dict(family=fam, **fp, **rp)))
    for run, rp in (("it100", {"maxIter": 100}), ("conv", {"maxIter": 1000, "tol": 1e-10})):
        out.append((f"pixels-binomial-l2-nostd-{run}", "pixels",
                    dict(family="binomial", regParam=0.01, standardization=False, **rp)))
    out.append(("pixels-binomial-enet-nostd-conv", "pixels",
                {"family": "binomial", "regParam": 0.05, "elasticNetParam": 0.5, "maxIter": 1000,
                     "tol": 1e-10, "standardization": False}))
    out.append(("pixels-binomial-l2-weighted-it100", "pixels",
                {"family": "binomial", "regParam": 0.01, "maxIter": 100, "weighted": True}))
    out.append(("pixels-binomial-l2-nointercept-it100", "pixels",
                {"family": "binomial", "regParam": 0.01, "maxIter": 100, "fitIntercept": False}))
    for fam in ("binomial", "multinomial"):  # Spark's own sample data (in the pyspark package)
        for fit in ("none", "l2", "enet"):
            for run, rp in _RUNS.items():
                if fit == "none" and run == "conv":
                    continue
                out.append((f"seed-{fam}-{fit}-{run}", "seed", dict(family=fam, **_FITS[fit],
                                                                    **rp)))
    return out


def seed_path():
    """Spark's sample_libsvm_data.txt from the installed pyspark package, or None."""
    try:
        import pyspark
    except ImportError:
        return None
    p = os.path.join(os.path.dirname(pyspark.__file__), "data", "mllib", "sample_libsvm_data.txt")
    return p if os.path.exists(p) else None


def weights(n):
    """The row weights of the weighted case (1, 2 or 3 by row)."""
    return 1.0 + (np.arange(n) % 3)


def ddl_params(p):
    """Spark params -> ddl.ml.LogisticRegression keyword arguments."""
    names = {"regParam": "reg_param", "elasticNetParam": "elastic_net_param",
             "maxIter": "max_iter", "tol": "tol", "family": "family",
             "standardization": "standardization", "fitIntercept": "fit_intercept"}
    return {names[k]: v for k, v in p.items() if k in names}
