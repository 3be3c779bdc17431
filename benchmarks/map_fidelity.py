"""How close each CGN's masks, foreground and background maps come to the real ones (``fidelity``).

For each checkpoint: ``evaluate_cgn(..., fidelity=True, by_class=True)`` on ``--num``
counterfactuals (its effectiveness, the Fréchet distance of its maps to the real test split's
in the judges' feature spaces, and their spread), beside the real training split's maps as the
floor (what a CGN that draws real maps would score on the same number of maps).
Effectiveness rewards a class's most typical digit or texture; the distance and spread also
see how much of the real variety a mechanism draws.

Writes results/map_fidelity.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/map_fidelity.py NAME=CKPT [NAME=CKPT ...] [--num 10000] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.digit_classifier import load_or_train_digit_classifier
from cgn.environment import write_result
from cgn.evaluation import FIDELITY, JUDGE_SEED, evaluate_cgn, map_fidelity, real_features

KEPT = ("shape_effectiveness", "texture_effectiveness", "background_effectiveness", *FIDELITY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=PATH of a cgn .safetensors checkpoint")
    parser.add_argument("--num", type=int, default=10_000, help="counterfactuals per checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/map_fidelity.json"))
    args = parser.parse_args()

    rows, datasets = {}, set()
    for item in args.checkpoints:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"expected NAME=PATH, got {item!r}")
        model, config, _ = load_cgn(path)
        dataset = config.train.dataset
        datasets.add(dataset)
        metrics = evaluate_cgn(
            model, dataset, num_samples=args.num, seed=args.seed, data_root=args.data_dir, by_class=True, fidelity=True
        )
        rows[name] = {"checkpoint": path, "dataset": dataset} | {
            k: v for k, v in metrics.items() if k in KEPT or "frechet" in k or "spread" in k
        }
        print(name, {k: rows[name][k] for k in KEPT}, flush=True)

    root = None if args.data_dir is None else args.data_dir.resolve()
    digits = load_or_train_digit_classifier(root, seed=JUDGE_SEED)
    floors = {}
    for dataset in sorted(datasets):  # the real training split's maps, as many as the CGNs drew
        train = real_features(dataset, root, digits, "train", args.num)
        floors[dataset] = map_fidelity(train, real_features(dataset, root, digits), by_class=True)
        print(dataset, "real training split", {k: floors[dataset][k] for k in FIDELITY}, flush=True)
    write_result(
        args.out,
        {
            "checkpoints": rows,
            "real_training_split": floors,
            "num_samples": args.num,
            "seed": args.seed,
            "torch_threads": torch.get_num_threads(),
            "notes": "Fréchet distance per label between Gaussians fitted to the judge's scaled features of the "
            "generated maps and of the real test split's maps, averaged over labels (lower: closer); spread = "
            "trace of the generated maps' feature covariance over the real maps' (below 1: less varied)",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
