"""Training speed of a fast recipe against variants of it, timed side by side in one process.

``configs/fast/<dataset>.toml`` as committed ("recipe") and with each ``--variant NAME
KEY=VALUE ...`` (config overrides) train real trainer steps at the recipe's batch size and
precision in alternating blocks (:func:`cgn.trainer.training_speed`), so that every variant
sees the same machine; the median block gives images/s, and the recipe's step count at that
speed gives its minutes. ``--base KEY=VALUE ...`` applies to the recipe and every variant: a term
that switches on part-way (``loss.mismatch_start``) must be switched on from step 0 there to be
timed at all, as the timed steps are the schedule's first ones.

Writes results/recipe_speed_<dataset>.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/recipe_speed.py --dataset wildlife_mnist --variant ndf16 model.ndf=16
       [--base KEY=VALUE ...] [--steps 100] [--blocks 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.config import load_config
from cgn.environment import write_result
from cgn.trainer import resolve_run_config, training_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "OVERRIDE"),
        help="a name and the config overrides that make the variant (repeatable)",
    )
    parser.add_argument("--base", nargs="+", default=[], metavar="OVERRIDE", help="overrides for every variant")
    parser.add_argument("--steps", type=int, default=100, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per variant (median)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    path = Path("configs/fast") / f"{args.dataset}.toml"
    overrides = {"recipe": list(args.base), **{name: [*args.base, *rest] for name, *rest in args.variant}}
    configs = {name: load_config(path, o) for name, o in overrides.items()}
    with tempfile.TemporaryDirectory() as tmp:
        speed = training_speed(configs, tmp, args.steps, args.blocks)
    rows = []
    for name, config in configs.items():
        run = resolve_run_config(config).train
        rows.append(
            {
                "variant": name,
                "overrides": overrides[name],
                "precision": run.precision,  # what "auto" resolved to here
                "images_per_s": round(speed[name], 1),
                "speedup": round(speed[name] / speed["recipe"], 3),
                "minutes_for_steps": round(run.steps * run.batch_size / speed[name] / 60, 1) if run.steps else None,
                "steps": run.steps,
            }
        )
        print(rows[-1], flush=True)
    out = args.out or Path("results") / f"recipe_speed_{args.dataset}.json"
    write_result(
        out,
        {
            "dataset": args.dataset,
            "config": str(path),
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": f"batch {configs['recipe'].train.batch_size}; medians of {args.blocks} alternating timed blocks "
            f"of {args.steps} steps after one untimed block each, in one process",
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
