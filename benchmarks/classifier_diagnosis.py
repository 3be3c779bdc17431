"""Where does a classifier trained on counterfactuals fail on the real de-correlated test data?

Trains the full table's classifier (paper CNN and schedule, bf16, per-image standardisation)
on one source and breaks its test accuracy down by digit, by foreground and background
attribute, and by their pairs, with the confusion matrix. Sources:

- a counterfactual folder (``cgn generate``);
- ``oracle``: the real training digits (MNIST-train [0, 50000)) with attributes drawn
  independently of the label, as the test splits draw them: the data a perfect CGN would
  give, so the ceiling of this classifier and schedule on the dataset.

With ``--checkpoint`` the CGN's disentanglement metrics (``cgn evaluate-cgn``, including
``mask_diversity``) are stored beside the accuracies.

Usage: python benchmarks/classifier_diagnosis.py --dataset wildlife_mnist --source DIR|oracle
           [--checkpoint CGN] [--name NAME] [--out results/classifier_diagnosis.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.classifier import train_classifier
from cgn.counterfactuals import CounterfactualDataset
from cgn.data import DATASETS, build_dataset
from cgn.data.base import SplitSpec
from cgn.environment import describe
from cgn.evaluation import evaluate_cgn
from cgn.files import write_text
from cgn.reproduce import FULL, resolve_schedule

TEST_SPLITS = ("test", "test_official")


def oracle_source(dataset: str):
    """The real training digits with label-independent attributes (stream "oracle")."""
    base = DATASETS.get(dataset)
    train = base.splits["train"]
    spec = SplitSpec(train.mnist_part, train.start, train.stop, decorrelated=True, stream="oracle")
    oracle = type(f"Oracle{base.__name__}", (base,), {"splits": {**base.splits, "oracle": spec}})
    return oracle("oracle", 0)


def breakdown(model, data, precision: str) -> dict:
    """Accuracy by digit, attribute and attribute pair, and the confusion matrix (rows: truth)."""
    batch = data.batch(torch.arange(len(data)))
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        pred = torch.cat([model(batch["image"][i : i + 1000]).argmax(1) for i in range(0, len(data), 1000)])
    y, fg, bg = batch["label"], batch["foreground_attr"], batch["background_attr"]
    right = (pred == y).double()
    k = data.num_classes

    def rates(attribute):
        return [round(right[attribute == c].mean().item(), 4) for c in range(k)]

    report = {"acc": round(right.mean().item(), 4), "acc_by_digit": rates(y), "acc_by_foreground": rates(fg)}
    if data.has_background_attribute:
        report["acc_by_background"] = rates(bg)
        report["acc_by_pair"] = [
            [round(right[(fg == f) & (bg == b)].mean().item(), 3) for b in range(k)] for f in range(k)
        ]
    report["confusion"] = torch.bincount(y * k + pred, minlength=k * k).view(k, k).tolist()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS.names())
    parser.add_argument("--source", required=True, help="counterfactual folder, or 'oracle'")
    parser.add_argument("--checkpoint", help="the CGN that generated the source (adds its metrics)")
    parser.add_argument("--name", help="key of this row (default: the source)")
    parser.add_argument("--epochs", type=int, default=FULL.classifier.epochs, help="for smoke runs")
    parser.add_argument("--out", default="results/classifier_diagnosis.json")
    args = parser.parse_args()

    source = oracle_source(args.dataset) if args.source == "oracle" else CounterfactualDataset(args.source)
    tests = {split: build_dataset(args.dataset, split, 0) for split in TEST_SPLITS}
    # "auto" resolved here, so that the breakdown below computes as the training did (bf16 where native).
    config = replace(resolve_schedule(FULL, torch.device("cpu")).classifier, epochs=args.epochs)
    model, result = train_classifier(source, tests, config, progress=True)
    row = {
        "source": args.source,
        "command": "python " + " ".join(sys.argv),
        **result.to_dict(),
        **{split: breakdown(model, data, config.precision) for split, data in tests.items()},
    }
    if args.checkpoint:
        cgn, _, _ = load_cgn(args.checkpoint)
        row["cgn_checkpoint"] = args.checkpoint
        row["cgn_metrics"] = evaluate_cgn(cgn, args.dataset)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.setdefault(args.dataset, {})[args.name or args.source] = row
    report["environment"] = describe()
    write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: row[k] for k in ("train_acc", "eval_acc")}), {s: row[s]["acc_by_digit"] for s in TEST_SPLITS})


if __name__ == "__main__":
    reexec_with_allocator()
    main()
