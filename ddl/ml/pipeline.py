"""Pipeline: transformers then an estimator, fitted and applied as one.

    model = Pipeline([Tokenizer(), HashingTF(num_features=2**16), LogisticRegression()])
    model.fit(texts, labels)
    model.predict(["a new text"])

Each stage but the last must have transform() (and may have fit()); the last is fitted on
the transformed data and used by predict / predict_proba / score.
"""


class Pipeline:
    """A chain of stages (Spark's Pipeline, with scikit-learn's fit/predict)."""

    def __init__(self, stages):
        stages = list(stages)
        if not stages:
            raise ValueError("Pipeline: needs at least one stage")
        for i, s in enumerate(stages[:-1]):
            if not hasattr(s, "transform"):
                raise TypeError(f"Pipeline: stage {i} ({type(s).__name__}) has no transform(); "
                                "only the last stage may be a plain estimator")
        self.stages = stages

    def __repr__(self):
        inner = ", ".join(repr(s) for s in self.stages)
        return f"Pipeline([{inner}])"

    def _prefix(self, X, fit=False, y=None):
        for s in self.stages[:-1]:
            if fit and hasattr(s, "fit_transform"):
                X = s.fit_transform(X, y)
            else:
                if fit and hasattr(s, "fit"):
                    s.fit(X, y)
                X = s.transform(X)
        return X

    def fit(self, X, y=None):
        """Fit each stage in turn on the output of the ones before; returns self."""
        Xt = self._prefix(X, fit=True, y=y)
        last = self.stages[-1]
        if hasattr(last, "fit"):
            last.fit(Xt, y) if y is not None else last.fit(Xt)
        return self

    def transform(self, X):
        """X through every stage that transforms (all of them when the last one does)."""
        Xt = self._prefix(X)
        last = self.stages[-1]
        return last.transform(Xt) if hasattr(last, "transform") else Xt

    def predict(self, X):
        return self.stages[-1].predict(self._prefix(X))

    def predict_proba(self, X):
        return self.stages[-1].predict_proba(self._prefix(X))

    def score(self, X, y):
        return self.stages[-1].score(self._prefix(X), y)
