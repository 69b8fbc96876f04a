"""ddl.ml: classical machine learning with Spark ML's objectives and scikit-learn's methods,
fitted over the ranks of a process group when there is one.

    from ddl.ml import LogisticRegression, Pipeline
    from ddl.features import Tokenizer, HashingTF

    X, y = ddl.datasets.load_libsvm("data.svm")      # this rank's share under ddl.run
    model = LogisticRegression(max_iter=10, reg_param=0.01).fit(X, y)
    model.predict(X)

docs/ml.md describes the objective, the optimizers and the distributed fit.
"""
from .logistic import LogisticRegression
from .pipeline import Pipeline

__all__ = ["LogisticRegression", "Pipeline"]
