"""What the shape-view critic costs a training step: each fast recipe with and without it.

For each dataset, ``configs/fast/<dataset>.toml`` as is and with ``loss.shape_view_weight=0``
are trained side by side in one process (real trainer steps at the recipe's precision, batch 16), timed in
alternating blocks so that both see the same machine; the median block gives images/s.
Also a reference for how fast the machine is today: train minutes in
``results/cgn_quality.json`` are only comparable between runs measured at similar speeds
(``recipe_minutes``: the recipe's steps at this speed).

Writes results/shape_view_cost.json (--out).
Usage: python benchmarks/shape_view_cost.py [--datasets ...] [--steps 100] [--blocks 3]
(each variant also runs one untimed warm-up block)
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

DATASETS = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per variant (median)")
    parser.add_argument("--out", type=Path, default=Path("results/shape_view_cost.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            path = Path("configs/fast") / f"{dataset}.toml"
            configs = {
                "with_shape_view": load_config(path),
                "without_shape_view": load_config(path, ["loss.shape_view_weight=0"]),
            }
            speed = training_speed(configs, Path(tmp) / dataset, args.steps, args.blocks)
            speed = {name: round(v, 1) for name, v in speed.items()}
            recipe = resolve_run_config(configs["with_shape_view"])
            row = {
                "dataset": dataset,
                "precision": recipe.train.precision,  # what "auto" resolved to here
                "images_per_s": speed,
                "recipe_minutes": round(
                    recipe.train.steps * recipe.train.batch_size / speed["with_shape_view"] / 60, 1
                ),
                "slowdown": round(speed["without_shape_view"] / speed["with_shape_view"], 3),
            }
            rows.append(row)
            print(row, flush=True)
    write_result(
        args.out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": "fast recipes at their precision (auto: bf16 where native), batch 16; medians of alternating "
            "timed blocks in one process",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
