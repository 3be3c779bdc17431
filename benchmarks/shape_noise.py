"""How the shape noise scale (and masks per image) of generation change what counterfactuals teach.

For one CGN checkpoint and each scale s (u_shape ~ N(0, s²I); 1 = the paper): the
disentanglement metrics of ``evaluate_cgn`` and the paper's classifier (table 2's full
schedule: 10 epochs, bf16) trained on 100,000 counterfactuals generated at that scale
(``--data counterfactual``, the "CGN only" row) or on them plus the real data (``mixed``),
evaluated on the de-correlated ``test`` and ``test_official`` splits. ``--per-mask`` sets
how many counterfactuals share one mask (the paper: 10, so 100,000 images hold 10,000
distinct digits). Resumable: each variant's counterfactuals and classifier result live in
``--work``.

Usage: python benchmarks/shape_noise.py CKPT --scales 1.0 0.7 0.5 [--per-mask 10]
       [--data counterfactual] [--work runs/shape_noise/NAME] [--out results/shape_noise.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.classifier import MixedSource, train_classifier
from cgn.counterfactuals import CounterfactualDataset, GenerationSpec, generate_counterfactuals
from cgn.data import build_dataset
from cgn.environment import describe
from cgn.evaluation import evaluate_cgn
from cgn.files import write_text
from cgn.reproduce import DATA_SEED, FULL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.7, 0.5])
    parser.add_argument("--data", choices=["counterfactual", "mixed"], default="counterfactual")
    parser.add_argument("--num", type=int, default=FULL.num_counterfactuals)
    parser.add_argument("--per-mask", type=int, default=FULL.per_mask)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/shape_noise"))
    parser.add_argument("--out", type=Path, default=Path("results/shape_noise.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model, config, _ = load_cgn(args.checkpoint)
    dataset = config.train.dataset
    tests = {split: build_dataset(dataset, split, DATA_SEED) for split in ("test", "test_official")}
    rows = []
    for scale in args.scales:
        folder = args.work / f"scale_{scale}_per_mask_{args.per_mask}"
        marker = folder / f"classifier_{args.data}.json"
        if not marker.exists():
            spec = GenerationSpec(num=args.num, per_mask=args.per_mask, seed=args.seed, shape_noise_scale=scale)
            generate_counterfactuals(args.checkpoint, folder / "counterfactuals", spec)
            counterfactuals = CounterfactualDataset(folder / "counterfactuals")
            source = counterfactuals
            if args.data == "mixed":
                source = MixedSource([build_dataset(dataset, "train", DATA_SEED), counterfactuals])
            _, result = train_classifier(
                source, tests, replace(FULL.classifier, seed=args.seed), description=f"{args.data} s={scale}"
            )
            record = {
                "shape_noise_scale": scale,
                "per_mask": args.per_mask,
                "metrics": evaluate_cgn(model, dataset, shape_noise_scale=scale),
                "train_acc": result.train_acc,
                "test_acc": result.eval_acc["test"],
                "test_official_acc": result.eval_acc["test_official"],
                "classifier_seconds": result.seconds,
            }
            write_text(marker, json.dumps(record, indent=2) + "\n")
        rows.append(json.loads(marker.read_text()))
        print(json.dumps(rows[-1]), flush=True)

    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result[f"{dataset}/{args.data}/per_mask_{args.per_mask}/{args.checkpoint}"] = {
        "checkpoint": str(args.checkpoint),
        "dataset": dataset,
        "data": args.data,
        "num_counterfactuals": args.num,
        "per_mask": args.per_mask,
        "seed": args.seed,
        "rows": rows,
        "command": "python " + " ".join(sys.argv),
        **describe(),
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
