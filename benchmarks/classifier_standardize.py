"""Per-image standardisation of the classifier's input (``ClassifierConfig.standardize``, ours):
the table's classifier with and without it, on counterfactual-only or mixed data.

    python benchmarks/classifier_standardize.py --dataset double_colored_mnist \\
        --counterfactuals runs/table2/double_colored_mnist/seed0/counterfactuals_cgn --data counterfactual

Besides accuracy on ``test`` and ``test_official``, it splits each test set by whether the
digit and the background got the same palette colour (they then differ only by the colour
jitter, about 1 % contrast); on double-colored MNIST that is about 10 % of the de-correlated
test images. Results are merged into ``results/classifier_standardize.json`` under
``<dataset>/<data>/<standardize on|off>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.classifier import ClassifierConfig, MixedSource, Subset, accuracy, train_classifier
from cgn.counterfactuals import CounterfactualDataset
from cgn.data import build_dataset
from cgn.environment import describe
from cgn.files import write_text


def same_colour(data) -> torch.Tensor | None:
    """Per test image: digit and background share a palette colour (None without a background colour)."""
    if not hasattr(data, "background_colors") or not hasattr(data, "foreground_colors"):
        return None
    data.set_epoch(0)
    batch = data.batch(torch.arange(len(data)))
    return (data.foreground_colors[batch["foreground_attr"]] == data.background_colors[batch["background_attr"]]).all(1)


class Part:
    """The images of ``source`` picked by a boolean ``keep``."""

    def __init__(self, source, keep: torch.Tensor) -> None:
        self.source, self.index = source, keep.nonzero().flatten()

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, index):
        return self.source.batch(self.index[torch.as_tensor(index)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--counterfactuals", type=Path, help="a folder written by `cgn generate` (not for --data real)")
    parser.add_argument("--data", choices=["real", "counterfactual", "mixed"], default="counterfactual")
    parser.add_argument("--variants", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")  # as the full table
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, help="first N training samples only (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("results/classifier_standardize.json"))
    args = parser.parse_args()

    if args.data != "real" and args.counterfactuals is None:
        parser.error(f"--data {args.data} needs --counterfactuals")
    real = build_dataset(args.dataset, "train", 0)
    if args.data == "real":
        source = real
    else:
        source = CounterfactualDataset(args.counterfactuals)
        source = MixedSource([real, source]) if args.data == "mixed" else source
    if args.limit:
        source = Subset(source, args.limit)
    tests = {split: build_dataset(args.dataset, split, 0) for split in ("test", "test_official")}
    same = {split: same_colour(data) for split, data in tests.items()}
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for variant in args.variants:
        config = ClassifierConfig(
            epochs=args.epochs, precision=args.precision, seed=args.seed, standardize=variant == "on"
        )
        model, result = train_classifier(source, tests, config, description=f"standardize {variant}")
        row = {
            "train_acc": result.train_acc,
            "test_acc": result.eval_acc["test"],
            "test_official_acc": result.eval_acc["test_official"],
            "seconds": result.seconds,
            "classifier": result.config,
            "counterfactuals": str(args.counterfactuals),
            "command": "python benchmarks/classifier_standardize.py " + " ".join(sys.argv[1:]),
        }
        for split, data in tests.items():
            if same[split] is not None:
                row[f"{split}_same_colour_share"] = round(same[split].float().mean().item(), 4)
                row[f"{split}_acc_same_colour"] = accuracy(model, Part(data, same[split]), precision=args.precision)
                row[f"{split}_acc_different_colour"] = accuracy(
                    model, Part(data, ~same[split]), precision=args.precision
                )
        print(json.dumps(row), flush=True)
        results.setdefault(args.dataset, {}).setdefault(args.data, {})[variant] = row
        results.update(describe())
        write_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
