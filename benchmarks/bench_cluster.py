#!/usr/bin/env python3
"""bench_cluster.py: DDP across two namespace "hosts" (scripts/cluster.sh) on 1 and 10 Gbit/s
links, ddl against PyTorch DDP, each launched the same torchrun way on each host, with and
without the fp16 / bf16 compress hooks (PyTorch's bf16_compress_hook refuses to run without
CUDA 11+ and NCCL, so PyTorch gets only its fp16 hook here). Needs root.

    sudo python3 benchmarks/bench_cluster.py                # MLP and CNN, 2x1 and 2x2, both rates
    sudo python3 benchmarks/bench_cluster.py --quick        # MLP, 2x1, fewer steps

Prints a table, writes benchmarks/results/bench_cluster.json. Each job: `python -m ddl.run`
(or `python -m torch.distributed.run`) `--nnodes 2 --nproc-per-node P --rdzv-backend c10d
--rdzv-endpoint 10.213.0.1:PORT` on each host; the models of examples/fashion_models.py, batch
64 per rank, SGD, one BLAS / intra-op thread per rank, synthetic batches in memory. Rank 0
times `steps` DDP steps after a warm-up, then the same steps of an unwrapped copy (no
communication): "hidden" = no-comm step / DDP step (1.00: communication fully hidden).
images/s = 64 x ranks / DDP step time. Not measured here: hierarchical against flat allreduce
(the shared-memory transport is another piece of work), accuracy after an epoch.

Internal: `--worker ddl|torch` is the per-rank entry point.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLUSTER = ROOT / "scripts" / "cluster.sh"
BATCH = 64


def worker(args):
    sys.path.insert(0, str(ROOT / "examples"))
    import fashion_models
    import numpy as np

    if args.worker == "ddl":
        import ddl as lib
        import ddl.distributed as dist
        from ddl import nn
        from ddl.distributed.algorithms.ddp_comm_hooks import default_hooks
        from ddl.nn.parallel import DistributedDataParallel as DDP
        lib.set_num_threads(1)
    else:
        import torch as lib
        import torch.distributed as dist
        from torch import nn
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel as DDP
        lib.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    classes = fashion_models.model_classes(nn)
    shape = (BATCH, 1, 28, 28)

    def build():
        lib.manual_seed(0)
        return fashion_models.build(classes, args.model)

    rs = np.random.RandomState(rank)
    xs = [lib.from_numpy(rs.rand(*shape).astype(np.float32)) for _ in range(4)]
    ys = [lib.from_numpy(rs.randint(0, 10, BATCH).astype(np.int64)) for _ in range(4)]
    loss_fn = nn.CrossEntropyLoss()

    def steps(model, n):
        opt = lib.optim.SGD(model.parameters(), lr=0.01)
        t = time.perf_counter()
        for i in range(n):
            opt.zero_grad()
            loss_fn(model(xs[i % 4]), ys[i % 4]).backward()
            opt.step()
        return (time.perf_counter() - t) / max(n, 1)

    model = DDP(build())
    if args.hook != "none":
        model.register_comm_hook(None, getattr(default_hooks, f"{args.hook}_compress_hook"))
    steps(model, 3)
    dist.barrier()
    ddp = steps(model, args.steps)
    dist.barrier()
    plain = steps(build(), args.steps)
    dist.destroy_process_group()
    if rank == 0:
        print("RESULT " + json.dumps({"step_s": ddp, "nocomm_s": plain}), flush=True)


def sh(*argv, check=True):
    return subprocess.run([str(CLUSTER), *argv], capture_output=True, text=True, check=check)


def job(tag, lib, model, nproc, hook, steps, port):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    launcher = ["-m", "ddl.run"] if lib == "ddl" else ["-m", "torch.distributed.run"]
    argv = [sys.executable, *launcher, "--nnodes", "2", "--nproc-per-node", str(nproc),
            "--rdzv-id", f"b{port}", "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"10.213.0.1:{port}", str(Path(__file__).resolve()), "--worker", lib,
            "--model", model, "--hook", hook, "--steps", str(steps)]
    procs = [subprocess.Popen([str(CLUSTER), "exec", tag, str(i), *argv], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    outs = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
        outs.append((p.returncode, o, e))
    for rc, o, e in outs:
        for line in o.splitlines():
            if "RESULT " in line:
                r = json.loads(line.split("RESULT ", 1)[1])
                r["images_s"] = BATCH * 2 * nproc / r["step_s"]
                r["hidden"] = r["nocomm_s"] / r["step_s"]
                return r
    raise RuntimeError(f"{lib} {model} job failed: " + "\n".join(e[-2000:] for _, _, e in outs))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=["ddl", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="mlp")
    p.add_argument("--hook", default="none", choices=["none", "fp16", "bf16"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if os.geteuid() != 0:
        sys.exit("bench_cluster.py: needs root (network namespaces)")
    try:
        import torch  # noqa: F401
        libs = ["ddl", "torch"]
    except ImportError:
        libs = ["ddl"]
    models = ["mlp"] if args.quick else ["mlp", "cnn"]
    nprocs = [1] if args.quick else [1, 2]
    steps = 15 if args.quick else args.steps
    rows = []
    port = 29700
    sh("sweep", check=False)
    for rate in ("1gbit", "10gbit"):
        tag = f"{os.getpid()}x{rate[:2]}"
        sh("up", tag, "2", rate)
        try:
            for model in models:
                for nproc in nprocs:
                    for hook in ("none", "fp16", "bf16"):
                        for lib in libs:
                            if lib == "torch" and hook == "bf16":
                                continue   # PyTorch's bf16 hook needs CUDA 11+ and NCCL
                            port += 1
                            r = job(tag, lib, model, nproc, hook, steps, port)
                            r.update(rate=rate, model=model, ranks=f"2x{nproc}", lib=lib,
                                     hook=hook)
                            rows.append(r)
                            print(f"{rate:6} {model:4} 2x{nproc} {lib:5} hook={hook:4} "
                                  f"{r['images_s']:8.0f} images/s  step {r['step_s']*1e3:7.1f}"
                                  f" ms  no-comm {r['nocomm_s']*1e3:6.1f} ms  hidden "
                                  f"{r['hidden']:.2f}", flush=True)
        finally:
            sh("down", tag, check=False)
    out = HERE / "results" / "bench_cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "note": "see the script's docstring"}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
