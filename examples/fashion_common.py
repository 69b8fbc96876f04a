"""Shared pieces of the Fashion-MNIST examples: the three models (fashion_models.py, on
ddl.nn) and a train/evaluate loop.

Each example (fashion_mnist_mlp.py, _cnn.py, _lstm.py) calls main() with its model's defaults
(DEFAULTS below: epochs, learning rate, schedule), chosen so that one run reaches the
Fashion-MNIST benchmark figures with margin (MLP >= 0.883, CNN >= 0.92, LSTM/GRU >= 0.888
test accuracy); docs/benchmarks.md records what they reached and how long they took.
tests/test_train_smoke.py trains the same models briefly through train().
"""
import argparse
import os
import time

import fashion_models

import ddl
import ddl.nn.functional as F
import ddl.optim
from ddl import nn
from ddl.data import DataLoader

MLP, CNN, RNNClassifier = fashion_models.model_classes(nn)
for _cls in (MLP, CNN, RNNClassifier):
    _cls.__module__ = __name__


# Per-model defaults of the examples (each overridable on the command line).
DEFAULTS = {
    "mlp": {"epochs": 15, "lr": 1e-3},
    "cnn": {"epochs": 8, "lr": 1e-3},
    "lstm": {"epochs": 10, "lr": 2e-3},
    "gru": {"epochs": 10, "lr": 2e-3},
    "rnn": {"epochs": 10, "lr": 1e-3},
}


def build_model(name, **kwargs):
    return fashion_models.build((MLP, CNN, RNNClassifier), name, **kwargs)


def load_data(root=None, subset=0, test_subset=0):
    """(train, test) datasets; FileNotFoundError (with the install hint) when absent."""
    train = ddl.datasets.FashionMNIST(root, train=True)
    test = ddl.datasets.FashionMNIST(root, train=False)
    if subset:
        train = ddl.data.TensorDataset(train.data[:subset], train.targets[:subset])
    if test_subset:
        test = ddl.data.TensorDataset(test.data[:test_subset], test.targets[:test_subset])
    return train, test


def evaluate(model, loader):
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    with ddl.no_grad():
        for x, y in loader:
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += y.shape[0]
    model.train()
    return correct / max(total, 1), loss_sum / max(total, 1)


def train(model, train_set, test_set, epochs, lr, batch_size=64, log=print):
    """Adam with a cosine learning-rate schedule (per epoch); returns the final test accuracy
    and a list of per-epoch dicts."""
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=1)
    test_loader = DataLoader(test_set, batch_size=1000)
    opt = ddl.optim.Adam(model.parameters(), lr=lr)
    sched = ddl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    history, acc = [], 0.0
    for epoch in range(1, epochs + 1):
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss) * y.shape[0]
            seen += y.shape[0]
        sched.step()
        dt = time.perf_counter() - t0
        acc, test_loss = evaluate(model, test_loader)
        history.append({"epoch": epoch, "train_loss": loss_sum / seen, "test_loss": test_loss,
                        "test_acc": acc, "img_per_s": seen / dt})
        if log:
            log(f"epoch {epoch:2d}  train loss {loss_sum / seen:.4f}  test loss {test_loss:.4f}  "
                f"test acc {acc:.4f}  {seen / dt:,.0f} img/s")
    return acc, history


def parse_args(default_model):
    d = DEFAULTS[default_model]
    p = argparse.ArgumentParser(description=f"Train a {default_model.upper()} on Fashion-MNIST")
    p.add_argument("--model", default=default_model, choices=sorted(DEFAULTS))
    p.add_argument("--epochs", type=int, default=None, help=f"default {d['epochs']}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help=f"default {d['lr']}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    return p.parse_args()


def main(default_model):
    args = parse_args(default_model)
    d = DEFAULTS[args.model]
    epochs = args.epochs if args.epochs is not None else d["epochs"]
    lr = args.lr if args.lr is not None else d["lr"]
    ddl.manual_seed(args.seed)
    ddl.set_num_threads(args.threads)
    train_set, test_set = load_data(args.root, args.subset)
    model = build_model(args.model)
    print(f"{args.model}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(train_set)} training images, batch {args.batch_size}, {epochs} epochs, "
          f"lr {lr:g} (Adam, cosine), {args.threads} thread(s), "
          f"BLAS {ddl.blas_info()['corename']}", flush=True)
    start, cpu0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()[0]
    acc, _ = train(model, train_set, test_set, epochs, lr, args.batch_size,
                   log=lambda s: print(s, flush=True))
    total, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"final test accuracy {acc:.4f} after {epochs} epochs in {total:.1f} s wall "
          f"({cpu:.1f} s CPU; load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end)")
    return acc
