"""Ablation of the classifier's precision: the paper's fp32 against bf16 autocast.

Trains the paper's classifier with both precisions on the same data and seed (default: real
double-colored MNIST + a counterfactual folder, i.e. the Original + CGN row) and reports
accuracies and training images per second side by side. Writes results/classifier_precision.json.

Usage: python benchmarks/classifier_precision.py --counterfactuals DIR [--dataset NAME] [--epochs 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgn.allocator import reexec_with_allocator
from cgn.classifier import ClassifierConfig, MixedSource, train_classifier
from cgn.counterfactuals import CounterfactualDataset
from cgn.data import build_dataset
from cgn.environment import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="double_colored_mnist")
    parser.add_argument("--counterfactuals", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/classifier_precision.json"))
    args = parser.parse_args()
    source = MixedSource([build_dataset(args.dataset, "train", 0), CounterfactualDataset(args.counterfactuals)])
    tests = {split: build_dataset(args.dataset, split, 0) for split in ("test", "test_official")}
    rows = []
    for precision in ("fp32", "bf16"):
        config = ClassifierConfig(epochs=args.epochs, precision=precision, seed=args.seed)
        _, result = train_classifier(source, tests, config, description=precision)
        row = {
            "precision": precision,
            "train_acc": result.train_acc,
            **{f"{k}_acc": v for k, v in result.eval_acc.items()},
        }
        row.update(images_per_s=result.images_per_s, seconds=result.seconds)
        print(row, flush=True)
        rows.append(row)
    write_result(
        args.out,
        {
            "dataset": args.dataset,
            "counterfactuals": str(args.counterfactuals),
            "train_size": len(source),
            "epochs": args.epochs,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
