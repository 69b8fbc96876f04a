"""Shared by the compatibility scripts: framework-neutral initial weights and result output.

Written against PyTorch's API only (torch.from_numpy, p.data.copy_), so the same call gives
ddl and PyTorch identical starting weights from a NumPy generator.
"""
import json
import os

import numpy as np


def init_weights(model, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            fan_in = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else int(p.shape[0])
            bound = 1.0 / np.sqrt(max(fan_in, 1))
            w = rng.uniform(-bound, bound, tuple(p.shape)).astype(np.float32)
            p.data.copy_(torch.from_numpy(w))


def steps():
    return int(os.environ.get("COMPAT_STEPS", "20"))


def report(**fields):
    out = os.environ.get("COMPAT_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(fields, f)


def write_markov_corpus(folder):
    """train/valid/test.txt in folder: a small Markov-chain text (60 words, each with three
    possible successors), learnable, for the word-language-model runs (test and benchmark)."""
    rng = np.random.default_rng(0)
    succ = rng.integers(0, 60, (60, 3))
    for name, n, seed in (("train", 1500, 1), ("valid", 60, 2), ("test", 60, 3)):
        r, w, lines = np.random.default_rng(seed), 0, []
        for _ in range(n):
            line = []
            for _ in range(12):
                line.append(f"w{w}")
                w = succ[w, r.integers(0, 3)]
            lines.append(" ".join(line))
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
