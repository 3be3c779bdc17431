"""Train CGNs and measure their disentanglement; compare with the authors' released weights.

For each dataset: train with a config (default: our fast recipe, configs/fast/<dataset>.toml)
into runs/quality/<name> (resumable: a finished run is not retrained), evaluate it with
``cgn.evaluation.evaluate_cgn`` on 10,000 counterfactuals (with the maps' fidelity to the real
ones), and evaluate the authors' checkpoint imported from
$CGN_DATA_MIRROR/original_mnist_checkpoints. Writes results/cgn_quality.json (merged per
dataset, so datasets can be run one at a time; a finished run evaluated again keeps the curve
it was trained with).

``--eval-at 2000 4000`` also evaluates the run on the way (``ours.curve``), on 5,000 samples,
and keeps the generator it evaluated as ``<run>/cgn_step<N>.safetensors`` (for downstream
measurements of shorter schedules: ``benchmarks/shape_noise.py``);
``--shape-noise-scales 0.7 0.5`` also evaluates the final generators (ours and the authors')
with the shape noise scaled (``by_shape_noise_scale``; the top-level metrics use scale 1).

Usage: python benchmarks/cgn_quality.py [overrides ...] [--datasets ...] [--config-dir configs/fast] [--eval-at STEP ...]
       (overrides before the options: --eval-at takes several values)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn, save_weights
from cgn.config import load_config
from cgn.environment import write_result
from cgn.evaluation import evaluate_cgn
from cgn.files import write_text
from cgn.original import import_original
from cgn.trainer import Trainer

CURVE = "quality_curve.json"  # in the run folder: the curve points measured while it trained
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
    parser.add_argument("--eval-at", type=int, nargs="*", default=[], help="also evaluate at these steps")
    parser.add_argument(
        "--shape-noise-scales",
        type=float,
        nargs="*",
        default=[],
        help="also evaluate the final generators with the shape noise scaled by these factors",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    for dataset in args.datasets:
        config_path = args.config_dir / f"{dataset}.toml"
        config = load_config(config_path, args.overrides)
        run_dir = args.runs / f"{dataset}{args.tag}"
        if (run_dir / "done").exists():  # evaluated again: keep the curve measured while it trained
            previous = result.get(dataset, {}).get("ours", {})
            curve = previous.get("curve", []) if previous.get("run_dir") == str(run_dir) else []
            if not curve and (run_dir / CURVE).exists():  # a run first evaluated into another file
                curve = json.loads((run_dir / CURVE).read_text())
        else:
            curve = train_with_curve(config, run_dir, args.eval_at, dataset)
        train_minutes = json.loads((run_dir / "done").read_text())["train_seconds"] / 60
        model, _, _ = load_cgn(run_dir / "cgn.safetensors")
        ours = evaluate_cgn(model, dataset, num_samples=args.samples, fidelity=True)
        entry = {
            "ours": {
                **ours,
                **by_noise_scale(model, dataset, args),
                "train_minutes": round(train_minutes, 2),
                "config": str(config_path),
                "overrides": args.overrides,
                "steps": config.train.steps,
                "run_dir": str(run_dir),
                **({"curve": curve} if curve else {}),
            }
        }
        if not args.skip_original:
            original, _ = import_original(
                mirror() / "original_mnist_checkpoints" / f"cgn_{ORIGINAL[dataset]}.pth", dataset
            )
            entry["original"] = {
                **evaluate_cgn(original, dataset, num_samples=args.samples, fidelity=True),
                **by_noise_scale(original, dataset, args),
                "train_minutes": None,
                "config": "authors' released checkpoint (15 epochs at batch 16)",
            }
        entry["command"] = " ".join(["python", *map(shlex.quote, sys.argv)])  # the file merges several runs
        result[dataset] = entry
        print(dataset, json.dumps(entry, indent=1), flush=True)
        write_result(args.out, result)
    print(f"wrote {args.out}")


def by_noise_scale(model, dataset: str, args: argparse.Namespace) -> dict:
    """``{"by_shape_noise_scale": {"0.7": metrics, ...}}`` for ``--shape-noise-scales`` (or {})."""
    if not args.shape_noise_scales:
        return {}
    return {
        "by_shape_noise_scale": {
            str(scale): evaluate_cgn(model, dataset, num_samples=args.samples, shape_noise_scale=scale)
            for scale in args.shape_noise_scales
        }
    }


def train_with_curve(config, run_dir: Path, eval_at: list[int], dataset: str) -> list[dict]:
    """Train (resumably) to the end, evaluating the output generator at each step of ``eval_at``
    and saving it there (the same weights a run of that many steps ends with, as nothing in
    training depends on the schedule's length unless ``train.lr_decay_start`` or
    ``loss.mode_seeking_until`` is below 1 or ``loss.mismatch_start`` above 0: each is a share
    of the schedule, so Wildlife's recipe switches its matching-aware terms on at step 1,000
    of 5,000, where a 3,000-step run would at step 600)."""
    trainer = Trainer(config, run_dir)
    saved = run_dir / CURVE  # the points of an earlier, killed process of this run
    resumes = (run_dir / "checkpoints" / "latest").exists()
    curve = json.loads(saved.read_text()) if resumes and saved.exists() else []
    for step in sorted(s for s in eval_at if s < trainer.total_steps):
        trainer.fit(resume=True, stop_at=step)
        if trainer.step == step:  # not already past it (a resumed run)
            with torch.random.fork_rng(devices=[]):  # keep the run's own random state untouched
                generator = trainer.output_generator
                metrics = evaluate_cgn(generator, dataset, num_samples=5_000)
            save_weights(run_dir / f"cgn_step{step}.safetensors", generator, config=config, kind="cgn", step=step)
            curve.append({"step": step, "train_minutes": round(trainer.train_seconds / 60, 2), **metrics})
            write_text(run_dir / CURVE, json.dumps(curve, indent=1) + "\n")
            print(json.dumps(curve[-1]), flush=True)
    trainer.fit(resume=True)
    return curve


if __name__ == "__main__":
    reexec_with_allocator()
    main()
