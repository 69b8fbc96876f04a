"""Data-parallel training on the real Fashion-MNIST: the README's main job.

    python -m ddl.run --nproc-per-node 2 examples/train_fashion_mnist.py [--model cnn|mlp|lstm]

Each rank reads its shard of the training set (DistributedSampler), computes gradients, and
DistributedDataParallel averages them across ranks while backward runs. Test accuracy is
evaluated distributed, without padding (every test image counted once), and reduced to rank
0, which prints per-epoch loss, accuracy and images/s.
"""
import argparse
import os
import sys
import time

import numpy as np

import ddl
import ddl.distributed as dist
import ddl.nn.functional as F
from ddl.data import DataLoader, DistributedSampler
from ddl.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_common import build_model


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=["cnn", "mlp", "lstm", "gru"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--root", default=None, help="Fashion-MNIST folder (default: Debian's)")
    return p.parse_args()


class Progress:
    """A progress line every ~10% (the launcher prefixes and interleaves rank output, so a
    carriage-return bar would garble)."""

    def __init__(self, total, label, enabled):
        self.total, self.label, self.enabled = total, label, enabled
        self.next, self.t0 = 0.1, time.perf_counter()

    def update(self, done, loss):
        if not self.enabled or done < self.next * self.total:
            return
        while self.next * self.total <= done:
            self.next += 0.1
        width = 20
        filled = int(width * done / self.total)
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        print(f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
              f"loss {loss:.4f}  {rate:,.0f} batches/s", flush=True)


def evaluate(model, loader):
    """(correct, total, loss sum) over this rank's shard, summed over ranks."""
    model.eval()
    stats = np.zeros(3, dtype=np.float64)
    with ddl.no_grad():
        for x, y in loader:
            logits = model(x)
            stats[0] += float((logits.argmax(dim=1) == y).sum())
            stats[1] += y.shape[0]
            stats[2] += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train()
    dist.all_reduce(stats)
    return stats


def main():
    args = parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ddl.manual_seed(args.seed)
    train = ddl.datasets.FashionMNIST(args.root, train=True)
    test = ddl.datasets.FashionMNIST(args.root, train=False)
    if args.subset:
        train = ddl.data.TensorDataset(train.data[: args.subset], train.targets[: args.subset])
    sampler = DistributedSampler(train, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, num_workers=1)
    test_loader = DataLoader(test, batch_size=500,
                             sampler=DistributedSampler(test, shuffle=False, pad=False))
    model = DistributedDataParallel(build_model(args.model))
    opt = ddl.optim.Adam(model.parameters(), lr=args.lr)
    sched = ddl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    if rank == 0:
        n = sum(p.numel() for p in model.parameters())
        print(f"{args.model}: {n:,} parameters on {world} ranks, {len(train)} training images "
              f"({len(sampler)} per rank), batch {args.batch_size} per rank, "
              f"{ddl.get_num_threads()} BLAS thread(s) per rank, OpenBLAS "
              f"{ddl.blas_info()['corename']}", flush=True)
    start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        progress = Progress(len(loader), f"epoch {epoch}", rank == 0)
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(loader, 1):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * y.shape[0]
            seen += y.shape[0]
            progress.update(i, loss_sum / seen)
        dt = time.perf_counter() - t0
        train_stats = np.array([loss_sum, seen], dtype=np.float64)
        dist.all_reduce(train_stats)
        correct, total, test_loss = evaluate(model, test_loader)
        acc = correct / total
        if rank == 0:
            print(f"epoch {epoch}: train loss {train_stats[0] / train_stats[1]:.4f}  "
                  f"test loss {test_loss / total:.4f}  test accuracy {acc:.4f} "
                  f"({int(correct)}/{int(total)})  {train_stats[1] / dt:,.0f} images/s",
                  flush=True)
    if rank == 0:
        print(f"final test accuracy {acc:.4f} after {args.epochs} epoch(s) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
