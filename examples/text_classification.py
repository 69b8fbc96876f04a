"""Text classification: Tokenizer -> HashingTF -> LogisticRegression in one Pipeline.

    python examples/text_classification.py
    python -m ddl.run --nproc-per-node 2 examples/text_classification.py

The data (examples/data/topics.tsv) is 360 short sentences about sports, cooking and
computing, `label<TAB>text`. Every fifth sentence is held out for testing. Under ddl.run each
rank takes every world_size-th training sentence, and the multinomial fit is collective (the
same model on every rank): HashingTF puts a word in the same column on every rank because it
hashes with MurmurHash3, not with Python's per-process hash().
"""
import os

import numpy as np

import ddl.distributed as dist
from ddl.features import HashingTF, Tokenizer
from ddl.ml import LogisticRegression, Pipeline

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "topics.tsv")


def read_tsv(path):
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, text = line.rstrip("\n").split("\t", 1)
            labels.append(label)
            texts.append(text)
    return texts, np.array(labels)


def main():
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by ddl.run
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    texts, labels = read_tsv(DATA)
    test = np.arange(len(texts)) % 5 == 0
    train_idx = np.flatnonzero(~test)[rank::world]  # this rank's share of the training rows
    train_texts = [texts[i] for i in train_idx]
    test_texts = [texts[i] for i in np.flatnonzero(test)]

    model = Pipeline([Tokenizer(), HashingTF(num_features=1 << 12),
                      LogisticRegression(max_iter=50, reg_param=0.01)])
    model.fit(train_texts, labels[train_idx])

    accuracy = model.score(test_texts, labels[test])
    if rank == 0:
        lr = model.stages[-1]
        print(f"{world} rank(s), {len(train_idx)} training sentences on rank 0, classes "
              f"{lr.classes_.tolist()}, {lr.n_iter_} iterations")
        print(f"test accuracy on {int(test.sum())} held-out sentences: {accuracy:.3f}")
        new = ["The striker scored a late goal in the final", "The baker baked bread in the oven",
               "Our server crashed after the upgrade", "The new team ran a fast benchmark"]
        for text, label in zip(new, model.predict(new)):
            print(f"  {label:>9}: {text}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
