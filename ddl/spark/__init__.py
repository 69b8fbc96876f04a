"""ddl.spark: ddl on a Spark cluster. Distributor runs a training function on N ddl ranks
(on the driver, or as one barrier stage), RankData holds a rank's rows of a DataFrame as
NumPy / ddl arrays. pyspark is needed only for local_mode=False and DataFrames.

    from ddl.spark import Distributor
    Distributor(num_processes=2, local_mode=False).run(train_fn, *args)

docs/spark.md is the guide.
"""
from .data import RankData
from .distributor import Distributor, RankFailedError, free_slots

__all__ = ["Distributor", "RankData", "RankFailedError", "free_slots"]
