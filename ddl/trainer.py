"""ddl.Trainer: the training loop people write every time, done once and done right.

    trainer = ddl.Trainer(model, opt, ddl.nn.CrossEntropyLoss(), train_set, eval_set,
                          epochs=5, checkpoint_dir="ckpt")
    history = trainer.fit()

When a process group is initialized, fit() wraps the model in DistributedDataParallel and the
data in a DistributedSampler (evaluation without padding, so each sample counts once) and
reduces the metrics across ranks. Rank 0 shows progress (tqdm when installed), appends one JSON
line per epoch to the log, checkpoints every epoch (keeping the last `keep_last`) and draws a
PNG plot of loss and accuracy at the end (matplotlib, when installed). With resume=True, fit()
continues from the newest checkpoint in checkpoint_dir exactly where it stopped: two epochs
straight and one epoch + crash + resume + one epoch give bitwise-identical parameters.
"""
import glob
import json
import os
import re
import time
import warnings

import numpy as np

from . import _C
from . import distributed as dist
from ._functions import cat
from .autograd import no_grad
from .data import DataLoader, DistributedSampler
from .serialization import load, save

_CKPT = "checkpoint-epoch{:04d}.ddl"


class Trainer:
    def __init__(self, model, optimizer, loss_fn, train_data, eval_data=None, batch_size=64,
                 epochs=1, scheduler=None, metrics=("accuracy",), checkpoint_dir=None,
                 resume=True, keep_last=3, log_path=None, plot_path=None, progress=True,
                 seed=0, eval_batch_size=None, num_workers=1, deterministic=False,
                 micro_batch_size=None):
        unknown = set(metrics) - {"accuracy"}
        if unknown:
            raise ValueError(f"Trainer: unknown metric(s) {sorted(unknown)}; available: accuracy")
        if epochs < 1 or batch_size < 1:
            raise ValueError("Trainer: epochs and batch_size must be >= 1")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.train_data, self.eval_data = train_data, eval_data
        self.batch_size, self.epochs, self.scheduler = batch_size, epochs, scheduler
        self.metrics, self.checkpoint_dir, self.resume = tuple(metrics), checkpoint_dir, resume
        self.keep_last, self.progress, self.seed = keep_last, progress, seed
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        # deterministic=True: the same bits at any world size dividing batch_size /
        # micro_batch_size (batch_size is then the global batch; docs/determinism.md)
        self.deterministic = bool(deterministic)
        if self.deterministic and micro_batch_size is None:
            if batch_size % 4:
                raise ValueError("Trainer: deterministic=True needs micro_batch_size when "
                                 f"batch_size ({batch_size}) is not a multiple of 4")
            micro_batch_size = batch_size // 4
        self.micro_batch_size = micro_batch_size
        base = checkpoint_dir or "."
        self.log_path = log_path or os.path.join(base, "train_log.jsonl")
        self.plot_path = plot_path or os.path.join(base, "train_plot.png")
        self.history = []

    # ---- set-up ---------------------------------------------------------------------------------
    def _distributed(self):
        return dist.is_initialized() and dist.get_world_size() > 1

    def _prepare(self):
        from .nn.parallel import DistributedDataParallel

        if dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        self.net = self.model
        if self.deterministic:
            self._prepare_deterministic()
            return
        if self._distributed() and not isinstance(self.model, DistributedDataParallel):
            self.net = DistributedDataParallel(self.model)
        # one sampler kind for 1 and N ranks: the order depends only on seed + epoch, which is
        # what makes resuming exact
        self.sampler = DistributedSampler(self.train_data, self.world, self.rank, shuffle=True,
                                          seed=self.seed)
        self.loader = DataLoader(self.train_data, batch_size=self.batch_size,
                                 sampler=self.sampler, num_workers=self.num_workers)
        self.eval_loader = self._eval_loader()

    def _prepare_deterministic(self):
        from .distributed.deterministic import DeterministicDataParallel, GlobalBatchSampler

        self.sampler = GlobalBatchSampler(len(self.train_data), self.batch_size,
                                          self.micro_batch_size, self.world, self.rank,
                                          seed=self.seed)
        self.net = DeterministicDataParallel(self.model, self.sampler)
        self.loader = DataLoader(self.train_data, batch_size=self.sampler.local_batch_size,
                                 sampler=self.sampler, num_workers=self.num_workers)
        self.eval_loader = self._eval_loader()

    def _eval_loader(self):
        """Every eval sample counted once over the ranks (no padding), in both modes."""
        if self.eval_data is None:
            return None
        es = DistributedSampler(self.eval_data, self.world, self.rank, shuffle=False, pad=False)
        return DataLoader(self.eval_data, batch_size=self.eval_batch_size, sampler=es)

    def _bare(self):
        return getattr(self.net, "module", self.net)

    # ---- checkpoints ----------------------------------------------------------------------------
    def _checkpoints(self):
        if not self.checkpoint_dir:
            return []
        found = []
        for p in glob.glob(os.path.join(self.checkpoint_dir, "checkpoint-epoch*.ddl")):
            m = re.search(r"checkpoint-epoch(\d+)\.ddl$", p)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def _save(self, epoch):
        if self.rank != 0 or not self.checkpoint_dir:
            return
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        state = {
            "epoch": epoch,
            "model": self._bare().state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": list(_C.rng_state()),
            "history": self.history,
        }
        # ddl.save is atomic (old file or new, no temporary, even under kill -9), and older
        # checkpoints go only once the new one is in place: a crash at any point leaves the
        # last good checkpoint (and at worst one more than keep_last)
        save(state, os.path.join(self.checkpoint_dir, _CKPT.format(epoch)))
        for _, old in self._checkpoints()[: -self.keep_last or None]:
            try:
                os.unlink(old)
            except FileNotFoundError:
                pass

    def _restore(self):
        """Load the newest checkpoint (rank 0's file; every rank reads the same shared folder
        or, without one, rank 0 broadcasts the state dicts' tensors through DDP's first
        broadcast). Returns the epoch to start from."""
        ckpts = self._checkpoints()
        if not self.resume or not ckpts:
            return 1
        for epoch, path in reversed(ckpts):  # the newest that loads (a damaged one is skipped)
            try:
                state = load(path)
                break
            except ValueError as e:
                warnings.warn(f"Trainer: skipping unreadable checkpoint ({e})", RuntimeWarning,
                              stacklevel=2)
        else:
            raise ValueError(f"Trainer: no readable checkpoint among {len(ckpts)} in "
                             f"{self.checkpoint_dir}")
        self._bare().load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        seed, offset = state["rng"]
        _C.rng_state(int(seed), int(offset))
        self.history = list(state["history"])
        if self.rank == 0:
            print(f"Trainer: resumed from {path} (epoch {epoch} done)", flush=True)
        return epoch + 1

    # ---- the loop ---------------------------------------------------------------------------------
    def _reduce(self, values):
        a = np.asarray(values, dtype=np.float64)
        if self._distributed():
            dist.all_reduce(a)
        return a

    def _bar(self, epoch):
        if self.rank != 0 or not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return _LineProgress(len(self.loader), f"epoch {epoch}/{self.epochs}")
        return tqdm(total=len(self.loader), desc=f"epoch {epoch}/{self.epochs}", leave=True)

    def _train_epoch(self, epoch):
        self.sampler.set_epoch(epoch)
        self.net.train()
        bar = self._bar(epoch)
        t0 = time.perf_counter()
        loss_sum = correct = seen = 0.0
        want_acc = "accuracy" in self.metrics
        for x, y in self.loader:
            if self.deterministic:  # micro-batches, exact reduction; out: their outputs
                self.optimizer.zero_grad()
                loss = self.net.train_step(x, y, self.loss_fn)
                out = cat(self.net.last_outputs, 0) if want_acc else None
            else:
                out = self.net(x)
                loss = self.loss_fn(out, y)
                self.optimizer.zero_grad()
                loss.backward()
            self.optimizer.step()
            n = y.shape[0]
            loss_sum += float(loss) * n
            seen += n
            if want_acc:
                correct += float((out.argmax(dim=1) == y).sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                                img_s=f"{seen / (time.perf_counter() - t0):,.0f}")
        if bar is not None:
            bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        dt = time.perf_counter() - t0
        loss_sum, correct, seen = self._reduce([loss_sum, correct, seen])
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "time_s": dt,
               "images_per_s": seen / dt}
        if want_acc:
            row["train_accuracy"] = correct / seen
        return row

    def evaluate(self):
        if self.eval_loader is None:
            return {}
        self.net.eval()
        loss_sum = correct = seen = 0.0
        with no_grad():
            for x, y in self.eval_loader:
                out = self.net(x)
                n = y.shape[0]
                loss_sum += float(self.loss_fn(out, y)) * n
                correct += float((out.argmax(dim=1) == y).sum())
                seen += n
        self.net.train()
        loss_sum, correct, seen = self._reduce([loss_sum, correct, seen])
        row = {"eval_loss": loss_sum / max(seen, 1)}
        if "accuracy" in self.metrics:
            row["eval_accuracy"] = correct / max(seen, 1)
        return row

    def fit(self):
        """Train for `epochs` (resuming when a checkpoint exists); returns the history, a list
        of per-epoch dicts (train_loss, train_accuracy, eval_loss, eval_accuracy, time_s,
        images_per_s)."""
        self._prepare()
        start = self._restore()
        for epoch in range(start, self.epochs + 1):
            row = self._train_epoch(epoch)
            row.update(self.evaluate())
            self.history.append(row)
            if self.rank == 0:
                if os.path.dirname(self.log_path):
                    os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
                with open(self.log_path, "a") as log:
                    log.write(json.dumps(row) + "\n")
                if self.progress:
                    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in row.items()), flush=True)
            self._save(epoch)
        if self.rank == 0:
            self.plot()
        return self.history

    def plot(self, path=None):
        """Loss and accuracy per epoch as a PNG (needs matplotlib); returns the path or None."""
        path = path or self.plot_path
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        if not self.history:
            return None
        epochs = [r["epoch"] for r in self.history]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        for key in ("train_loss", "eval_loss"):
            if key in self.history[0]:
                a1.plot(epochs, [r[key] for r in self.history], marker="o", label=key)
        for key in ("train_accuracy", "eval_accuracy"):
            if key in self.history[0]:
                a2.plot(epochs, [r[key] for r in self.history], marker="o", label=key)
        a1.set_title("loss")
        a2.set_title("accuracy")
        for a in (a1, a2):
            a.set_xlabel("epoch")
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class _LineProgress:
    """Progress without tqdm: a line at every 10%."""

    def __init__(self, total, label):
        self.total, self.label, self.done, self.next = total, label, 0, 0.1
        self.postfix = ""

    def update(self, n):
        self.done += n
        if self.done >= self.next * self.total:
            while self.next * self.total <= self.done:
                self.next += 0.1
            print(f"{self.label}: {self.done}/{self.total} {self.postfix}", flush=True)

    def set_postfix(self, **kw):
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def close(self):
        pass


__all__ = ["Trainer"]
