"""Samples per second of the three biased MNIST datasets through a DataLoader at batch 64.

Writes results/data_throughput.json. Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/data_throughput.py [--seconds 3] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cgn.allocator import reexec_with_allocator
from cgn.data import build_dataset, dataset_names
from cgn.data.mnist import load_mnist
from cgn.environment import write_result

BATCH = 64


def samples_per_second(dataset, *, shuffle: bool, workers: int, seconds: float) -> float:
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=workers > 0,
    )
    best = 0.0
    for _ in range(2):  # the first pass warms up workers and caches
        n, start = 0, time.perf_counter()
        for batch in loader:
            n += len(batch["label"])
            if time.perf_counter() - start > seconds:
                break
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=Path("results/data_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # a data pipeline should not need the trainer's cores
    mnist = load_mnist()
    result: dict[str, object] = {}
    for name in dataset_names():
        train, test = build_dataset(name, "train", mnist=mnist), build_dataset(name, "test", mnist=mnist)
        by_workers = {
            w: {
                "train_samples_per_s": round(samples_per_second(train, shuffle=True, workers=w, seconds=args.seconds)),
                "test_samples_per_s": round(samples_per_second(test, shuffle=False, workers=w, seconds=args.seconds)),
            }
            for w in args.workers
        }
        best = max(by_workers, key=lambda w: by_workers[w]["train_samples_per_s"])
        result[name] = {
            **by_workers[best],
            "num_workers": best,
            "by_num_workers": {str(w): v for w, v in by_workers.items()},
        }
        print(
            f"{name:22} "
            + "  ".join(
                f"workers={w}: train {v['train_samples_per_s']:>7}/s test {v['test_samples_per_s']:>7}/s"
                for w, v in by_workers.items()
            )
        )
    result.update(batch_size=BATCH, torch_threads=1)
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
