"""ddl.utils.data.DataLoader: torch.utils.data.DataLoader's arguments, worker processes.

num_workers > 0 forks that many worker processes (see _worker.py); batch i goes to worker
i % num_workers, at most prefetch_factor * num_workers batches are outstanding, and batches
come back in order. With an IterableDataset, as in PyTorch, each worker iterates its own copy
of the dataset (which shards itself by get_worker_info(), or every worker yields everything),
batches it, and the loader takes batches from the workers in turn, skipping a worker once its
stream ends. Workers are stopped and joined when the epoch ends, when the iterator is
dropped or on an error -- or kept for the next epoch with persistent_workers=True (until the
loader is garbage-collected). A worker that dies is reported with its exit code; `timeout`
bounds each wait for a batch. Workers die with the process that started them, kill -9
included (run.tie_to_parent). pin_memory is accepted and does nothing (no GPU).
"""
import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import threading
import time

from ... import _C
from ...data import BatchSampler, SequentialSampler, default_collate
from ...data import DataLoader as _BaseLoader
from . import _worker
from .dataset import IterableDataset, RandomSampler


class DataLoader(_BaseLoader):
    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False,
                 timeout=0, worker_init_fn=None, multiprocessing_context=None,
                 generator=None, *, prefetch_factor=None, persistent_workers=False,
                 pin_memory_device=""):
        if num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be >= 0, got {num_workers}")
        if timeout < 0:
            raise ValueError(f"DataLoader: timeout must be >= 0, got {timeout}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor needs num_workers > 0 (multiprocessing)")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers needs num_workers > 0")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or
                                          drop_last):
            raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, "
                             "shuffle, sampler and drop_last")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable and (shuffle or sampler is not None or batch_sampler is not None):
            raise ValueError("DataLoader with an IterableDataset: shuffle, sampler and "
                             "batch_sampler do not apply (the dataset is a stream)")
        if sampler is None and batch_sampler is None and not self._iterable:
            sampler = (RandomSampler(dataset, generator=generator) if shuffle
                       else SequentialSampler(dataset))
        if batch_sampler is None and batch_size is not None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        # the base class's fields, set here (its constructor cannot take a stream)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor or 2
        self.collate_fn, self.batch_sampler = collate_fn, batch_sampler
        self.sampler = sampler
        self.pin_memory, self.timeout, self.worker_init_fn = pin_memory, timeout, worker_init_fn
        self.generator, self.persistent_workers = generator, persistent_workers
        self.multiprocessing_context = multiprocessing_context
        self._pool = None

    def __len__(self):
        if self._iterable:
            raise TypeError("DataLoader over an IterableDataset has no len()")
        return len(self._batches())

    def _batches(self):
        return self.batch_sampler if self.batch_sampler is not None else self.sampler

    def _fetch(self, indices):
        if self.batch_size is None:  # automatic batching off: one sample at a time
            sample = self.dataset[indices]
            return sample if self.collate_fn is None else self.collate_fn(sample)
        return super()._fetch(indices)

    def _fetch_stream(self, epoch):
        """The next batch of this worker's stream (runs in the worker, on its copy of the
        loader); StopIteration once the stream is done for this epoch."""
        if getattr(self, "_stream_epoch", None) != epoch:
            self._stream_epoch, self._stream = epoch, self._iter_stream()
        return next(self._stream)

    def _iter_stream(self):
        collate = self.collate_fn or default_collate
        it = iter(self.dataset)
        if self.batch_size is None:
            yield from it
            return
        while True:
            chunk = list(itertools.islice(it, self.batch_size))
            if not chunk or (self.drop_last and len(chunk) < self.batch_size):
                return
            yield collate(chunk)

    def __iter__(self):
        if self._iterable and not self.num_workers:
            return self._iter_stream()
        if self.num_workers == 0:
            return (self._fetch(b) for b in self._batches())
        if self._pool is None or not self._pool.alive():
            seed = int(_C.random("i", (), _C.INT64, 0, 2**62).item())
            self._pool = _Pool(self, seed)
        pool = self._pool
        if not self.persistent_workers:
            self._pool = None
        close_after = not self.persistent_workers
        if self._iterable:
            return pool.stream_epoch(close_after)
        return pool.epoch(list(self._batches()), close_after)

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):  # at interpreter exit the queues may be gone
                pool.close()


class _Pool:
    """The worker processes of one loader (one epoch, or several with persistent_workers)."""

    def __init__(self, loader, seed):
        ctx = loader.multiprocessing_context or "fork"
        ctx = mp.get_context(ctx) if isinstance(ctx, str) else ctx
        if ctx.get_start_method() != "fork":
            raise ValueError("DataLoader: worker processes are forked (the dataset is inherited,"
                             " not pickled); multiprocessing_context must be 'fork'")
        self.n = loader.num_workers
        self.depth = max(1, loader.prefetch_factor * self.n)
        self.timeout = loader.timeout
        self.result_q = ctx.Queue()
        self.done = ctx.Event()
        self.index_qs, self.procs = [], []
        self.epochs = 0  # stream epochs started: a worker restarts its stream on a new one
        fetch = loader._fetch_stream if loader._iterable else loader._fetch
        # the workers die with this process (kill -9 included): see run.tie_to_parent
        parent = (os.getpid(), threading.current_thread() is threading.main_thread())
        for w in range(self.n):
            iq = ctx.Queue()
            p = ctx.Process(target=_worker.worker_loop, name=f"ddl-dataloader-{w}",
                            args=(fetch, loader.dataset, iq, self.result_q, self.done,
                                  w, self.n, seed + w, loader.worker_init_fn, parent),
                            daemon=True)
            p.start()
            self.index_qs.append(iq)
            self.procs.append(p)
        self.closed = False

    def alive(self):
        return not self.closed and all(p.is_alive() for p in self.procs)

    def _get(self):
        start = time.monotonic()
        while True:
            try:
                return self.result_q.get(timeout=0.1)
            except queue.Empty:
                pass
            for w, p in enumerate(self.procs):
                if not p.is_alive():
                    raise RuntimeError(f"DataLoader worker {w} (pid {p.pid}) exited unexpectedly"
                                       f" with exit code {p.exitcode}")
            if self.timeout and time.monotonic() - start > self.timeout:
                raise RuntimeError(f"DataLoader timed out after {self.timeout} s waiting for a "
                                   "batch from its workers")

    def _collect(self, nxt, pending):
        """Results into pending until batch nxt is there; a worker's exception re-raised."""
        while nxt not in pending:
            i, payload = self._get()
            if isinstance(payload, _worker.WorkerError):
                payload.reraise()
            pending[i] = payload

    def _guarded(self, batches, close_after):
        """The batches of one epoch; an error (or the consumer dropping the iterator) stops
        the workers, and so does the epoch's end unless they persist."""
        try:
            yield from batches
        except BaseException:
            self.close()
            raise
        finally:
            if close_after:
                self.close()

    def epoch(self, batches, close_after):
        return self._guarded(self._map_batches(batches), close_after)

    def stream_epoch(self, close_after):
        self.epochs += 1
        return self._guarded(self._stream_batches(self.epochs), close_after)

    def _map_batches(self, batches):
        sent, pending = 0, {}
        for nxt in range(len(batches)):
            while sent < len(batches) and sent - nxt < self.depth:
                self.index_qs[sent % self.n].put((sent, batches[sent]))
                sent += 1
            self._collect(nxt, pending)
            yield _worker.unpack(pending.pop(nxt))

    def _stream_batches(self, epoch):
        """Batches of an IterableDataset: requests go to the live workers in turn, results
        come back in request order; a worker whose stream ended is asked no more."""
        live = list(range(self.n))
        owner, pending, turn, sent, nxt = {}, {}, 0, 0, 0
        while True:
            while live and sent - nxt < self.depth:
                w = live[turn % len(live)]
                turn += 1
                self.index_qs[w].put((sent, epoch))
                owner[sent] = w
                sent += 1
            if nxt == sent:
                return
            self._collect(nxt, pending)
            payload, w = pending.pop(nxt), owner.pop(nxt)
            nxt += 1
            if not isinstance(payload, _worker.StreamEnd):
                yield _worker.unpack(payload)
            elif w in live:
                live.remove(w)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.done.set()
        for q in self.index_qs:
            try:
                q.put_nowait(None)
            except (ValueError, OSError):
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
        for q in (*self.index_qs, self.result_q):
            q.cancel_join_thread()
            q.close()
