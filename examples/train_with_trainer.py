"""Train the Fashion-MNIST CNN with ddl.Trainer: progress, metrics, JSON-lines log, PNG plot
and per-epoch checkpoints with exact resume, in one process or many.

    python examples/train_with_trainer.py --epochs 2 --checkpoint-dir runs/cnn
    python -m ddl.run --nproc-per-node 2 examples/train_with_trainer.py --checkpoint-dir runs/cnn

Run it again with the same --checkpoint-dir and it continues where it stopped.
"""
import argparse
import os
import sys

import ddl
import ddl.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_common import build_model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=["cnn", "mlp", "lstm", "gru"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--checkpoint-dir", default="runs/trainer")
    args = p.parse_args()
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    ddl.manual_seed(0)
    train = ddl.datasets.FashionMNIST(train=True)
    test = ddl.datasets.FashionMNIST(train=False)
    if args.subset:
        train = ddl.data.TensorDataset(train.data[: args.subset], train.targets[: args.subset])
    model = build_model(args.model)
    opt = ddl.optim.Adam(model.parameters(), lr=args.lr)
    sched = ddl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    trainer = ddl.Trainer(model, opt, ddl.nn.CrossEntropyLoss(), train, test,
                          batch_size=args.batch_size, epochs=args.epochs, scheduler=sched,
                          checkpoint_dir=args.checkpoint_dir)
    history = trainer.fit()
    if dist.get_rank() == 0:
        print(f"test accuracy {history[-1]['eval_accuracy']:.4f}; log, plot and checkpoints in "
              f"{args.checkpoint_dir}/")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
