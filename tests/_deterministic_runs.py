"""Training runs shared by tests/test_deterministic_world.py: small models (MLP, CNN with batch
norm and dropout, LSTM) trained in the deterministic mode from a given global position."""
import numpy as np

import ddl
import ddl.nn.functional as F
from ddl import nn
from ddl.data import DataLoader, TensorDataset
from ddl.distributed.deterministic import (
    DeterministicDataParallel,
    GlobalBatchSampler,
    parameter_digest,
)

N, B, M, SEED = 160, 16, 4, 7   # 10 steps an epoch, 4 micro-batches a step: worlds 1, 2, 4
STEPS = 50


class _LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(self.drop(out[:, -1]))


def build(kind):
    ddl.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 4))
        opt = ddl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    elif kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 4))
        opt = ddl.optim.Adam(model.parameters(), lr=0.01)
    elif kind == "lstm":
        model = _LSTMNet()
        opt = ddl.optim.SGD(model.parameters(), lr=0.2)
    else:
        raise ValueError(kind)
    return model, opt


def dataset(kind):
    rng = np.random.default_rng(1)
    shape = {"mlp": (N, 10), "cnn": (N, 1, 8, 8), "lstm": (N, 5, 3)}[kind]
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 4, N)
    return TensorDataset(ddl.tensor(x), ddl.tensor(y))


def run(kind, world=1, rank=0, group=None, stop=STEPS, resume=None, save=None, compact=False):
    """Train to global step `stop` (from `resume`, a checkpoint path, or from the start);
    with `save`, write a checkpoint there at the end. Returns the model's digest."""
    model, opt = build(kind)
    data = dataset(kind)
    sampler = GlobalBatchSampler(len(data), B, M, num_replicas=world, rank=rank, seed=SEED)
    net = DeterministicDataParallel(model, sampler, process_group=group, compact=compact)
    if resume is not None:
        state = ddl.load(resume)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
    loader = DataLoader(data, batch_size=sampler.local_batch_size, sampler=sampler)
    step = sampler.epoch * sampler.steps_per_epoch + sampler.step
    model.train()
    while step < stop:
        sampler.set_epoch(step // sampler.steps_per_epoch)
        for x, y in loader:
            opt.zero_grad()
            net.train_step(x, y, F.cross_entropy)
            opt.step()
            step += 1
            if step == stop:
                break
    if save is not None:
        ddl.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "sampler": sampler.state_dict()}, save)
    return parameter_digest(model)
