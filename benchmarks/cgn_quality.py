"""Train CGNs and measure their disentanglement; compare with the authors' released weights.

For each dataset: train with a config (default: our fast recipe, configs/fast/<dataset>.toml)
into runs/quality/<name> (resumable: a finished run is not retrained), evaluate it with
``cgn.evaluation.evaluate_cgn`` on 10,000 counterfactuals, and evaluate the authors' checkpoint
imported from $CGN_DATA_MIRROR/original_mnist_checkpoints. Writes results/cgn_quality.json
(merged per dataset, so datasets can be run one at a time).

Usage: python benchmarks/cgn_quality.py [--datasets ...] [--config-dir configs/fast] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from cgn.checkpoint import load_cgn
from cgn.config import load_config
from cgn.environment import write_result
from cgn.evaluation import evaluate_cgn
from cgn.original import import_original
from cgn.trainer import train_cgn

DATASETS = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]
ORIGINAL = {
    "colored_mnist": "colored_MNIST",
    "double_colored_mnist": "double_colored_MNIST",
    "wildlife_mnist": "wildlife_MNIST",
}


def mirror() -> Path:
    return Path(os.environ.get("CGN_DATA_MIRROR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overrides", nargs="*", help="config overrides for every dataset, e.g. train.steps=2000")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--config-dir", type=Path, default=Path("configs/fast"))
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"))
    parser.add_argument("--tag", default="", help="suffix of run names (for ablations)")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/cgn_quality.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    for dataset in args.datasets:
        config_path = args.config_dir / f"{dataset}.toml"
        config = load_config(config_path, args.overrides)
        run_dir = args.runs / f"{dataset}{args.tag}"
        if not (run_dir / "done").exists():
            train_cgn(config, run_dir, resume=True)
        train_minutes = json.loads((run_dir / "done").read_text())["train_seconds"] / 60
        model, _, _ = load_cgn(run_dir / "cgn.safetensors")
        ours = evaluate_cgn(model, dataset, num_samples=args.samples)
        entry = {
            "ours": {
                **ours,
                "train_minutes": round(train_minutes, 2),
                "config": str(config_path),
                "overrides": args.overrides,
                "steps": config.train.steps,
                "run_dir": str(run_dir),
            }
        }
        if not args.skip_original:
            original, _ = import_original(
                mirror() / "original_mnist_checkpoints" / f"cgn_{ORIGINAL[dataset]}.pth", dataset
            )
            entry["original"] = {
                **evaluate_cgn(original, dataset, num_samples=args.samples),
                "train_minutes": None,
                "config": "authors' released checkpoint (15 epochs at batch 16)",
            }
        result[dataset] = entry
        print(dataset, json.dumps(entry, indent=1), flush=True)
        write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
