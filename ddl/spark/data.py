"""DataFrame rows into ddl arrays: Spark ML vector columns (VectorUDT, dense or sparse) become a
NumPy matrix or a ddl.sparse.CSRMatrix, numeric columns NumPy vectors. Inside the Distributor
each rank gets only its own partitions (Distributor.run_on_dataframe); on the driver
RankData.from_rows converts collected rows the same way.

    data = RankData.from_rows(df.collect(), features="features", label="label")
    data.X, data.y, data.w      # CSRMatrix or (n, d) float64; (n,) float64; (n,) or None
"""
import numpy as np

from ..sparse import CSRMatrix
from ._task import rows_to_arrays


class RankData:
    """One rank's rows of a DataFrame: X (features: (n, d) float64 when every vector is dense,
    else a CSRMatrix), y (label), w (weight or None), `columns` (the other requested columns)
    and `partitions` (the DataFrame partitions these rows came from)."""

    def __init__(self, X, y=None, w=None, columns=None, partitions=()):
        self.X, self.y, self.w = X, y, w
        self.columns = dict(columns or {})
        self.partitions = tuple(partitions)

    def __len__(self):
        return 0 if self.X is None else self.X.shape[0]

    def __repr__(self):
        shape = None if self.X is None else tuple(self.X.shape)
        return f"<RankData X {shape} {type(self.X).__name__}, partitions {self.partitions}>"

    @classmethod
    def from_arrays(cls, z, partitions=()):
        if "X_indptr" in z:
            X = CSRMatrix(np.asarray(z["X_data"]), np.asarray(z["X_indices"]),
                          np.asarray(z["X_indptr"]), tuple(int(s) for s in z["X_shape"]))
        else:
            X = np.asarray(z["X"]) if "X" in z else None
        cols = {k[4:]: np.asarray(z[k]) for k in z if k.startswith("col_")}
        return cls(X, np.asarray(z["y"]) if "y" in z else None,
                   np.asarray(z["w"]) if "w" in z else None, cols, partitions)

    @classmethod
    def from_rows(cls, rows, features="features", label="label", weight=None, others=(),
                  partitions=()):
        """Rows (pyspark Rows or dicts) -> RankData; label/weight/features None: not read."""
        return cls.from_arrays(rows_to_arrays(rows, features, label, weight, others),
                               partitions)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as z:
            parts = tuple(int(p) for p in z["partitions"]) if "partitions" in z else ()
            return cls.from_arrays({k: z[k] for k in z.files}, parts)
