"""Shared pieces of the Fashion-MNIST examples: the three models and a train/evaluate loop."""
import argparse
import time

import ddl
import ddl.nn as nn
import ddl.optim  # noqa: F401  (`import ddl` does not import ddl.optim)
import ddl.nn.functional as F
from ddl.data import DataLoader


class MLP(nn.Module):
    def __init__(self, hidden=(512, 256), dropout=0.2):
        super().__init__()
        layers, width = [nn.Flatten()], 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Two conv + batch norm + pooling blocks and a small classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class RNNClassifier(nn.Module):
    """Reads the 28 rows of an image as a 28-step sequence; classifies the last state."""

    def __init__(self, cell="lstm", hidden=128, layers=1):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn(28, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
        return self.head(out[:, -1])


def build_model(name):
    if name == "mlp":
        return MLP()
    if name == "cnn":
        return CNN()
    if name in ("lstm", "gru", "rnn"):
        return RNNClassifier(name)
    raise ValueError(f"unknown model {name!r}")


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


def parse_args(default_model, default_epochs, default_lr):
    p = argparse.ArgumentParser(description=f"Train a {default_model.upper()} on Fashion-MNIST")
    p.add_argument("--model", default=default_model, choices=["mlp", "cnn", "lstm", "gru", "rnn"])
    p.add_argument("--epochs", type=int, default=default_epochs)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=default_lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    return p.parse_args()


def main(default_model, default_epochs=10, default_lr=1e-3):
    args = parse_args(default_model, default_epochs, default_lr)
    ddl.manual_seed(args.seed)
    ddl.set_num_threads(args.threads)
    train = ddl.datasets.FashionMNIST(args.root, train=True)
    test = ddl.datasets.FashionMNIST(args.root, train=False)
    if args.subset:
        train = ddl.data.TensorDataset(train.data[: args.subset], train.targets[: args.subset])
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=1)
    test_loader = DataLoader(test, batch_size=1000)
    model = build_model(args.model)
    opt = ddl.optim.Adam(model.parameters(), lr=args.lr)
    sched = ddl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    print(f"{args.model}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(train)} training images, batch {args.batch_size}, {args.threads} thread(s), "
          f"BLAS {ddl.blas_info()['corename']}")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
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
        print(f"epoch {epoch:2d}  train loss {loss_sum / seen:.4f}  test loss {test_loss:.4f}  "
              f"test acc {acc:.4f}  {seen / dt:,.0f} img/s", flush=True)
    total = time.perf_counter() - start
    print(f"final test accuracy {acc:.4f} after {args.epochs} epochs in {total:.1f} s")
    return acc
