"""Logistic regression on a libsvm file, on one process or several.

    python examples/logistic_regression_libsvm.py
    python -m ddl.run --nproc-per-node 2 examples/logistic_regression_libsvm.py

The heart of it is three lines (the rest reports):

    X, y = load_libsvm(path)                                   # this rank's share of the rows
    model = LogisticRegression(max_iter=10, reg_param=0.01).fit(X, y)
    predictions = model.predict(X)

Under ddl.run each rank parses only its byte range of the file, and fit() allreduces the loss
and gradient, so every rank ends with the same model -- the one a single process fits on the
whole file. The data (examples/data/sample_binary.svm) is a synthetic sparse binary problem
made by examples/data/make_data.py.
"""
import argparse
import os

import numpy as np

import ddl.distributed as dist
from ddl.datasets import load_libsvm
from ddl.ml import LogisticRegression

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sample_binary.svm")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path", nargs="?", default=DATA, help="a libsvm file (or a glob of them)")
    args = p.parse_args()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by ddl.run
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    X, y = load_libsvm(args.path)
    model = LogisticRegression(max_iter=10, reg_param=0.01).fit(X, y)
    predictions = model.predict(X)

    # accuracy over all ranks' rows: sum (correct, rows) across the group
    counts = np.array([np.sum(predictions == y), len(y)], dtype=np.float64)
    if dist.is_initialized():
        dist.all_reduce(counts)
    print(f"rank {rank}/{world}: {X.shape[0]} rows x {X.shape[1]} features, {X.nnz} values")
    if rank == 0:
        coef = model.coef_.ravel()
        print(f"classes {model.classes_.tolist()}, {model.n_iter_} iterations, "
              f"final objective {model.objective_history_[-1]:.6f}")
        print(f"coefficients: |w| = {np.linalg.norm(coef):.6f}, intercept = "
              f"{model.intercept_[0]:.6f}, {np.count_nonzero(coef)} nonzero")
        print(f"training accuracy over {int(counts[1])} rows: {counts[0] / counts[1]:.4f}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
