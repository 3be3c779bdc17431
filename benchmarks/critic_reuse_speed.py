"""Training speed with and without the reuse of a BatchNorm critic's scores of the fakes.

A critic with BatchNorm (Wildlife's conv critics) scored each generated batch twice per step:
once for the generator's loss and once, on the same images with the same weights, for its own
update. The trainer now reuses the first scores (:func:`cgn.trainer.critic_pair`), which gives
the same numbers bit for bit (tests/test_trainer.py) for one forward pass fewer. This times
both in alternating blocks in one process (:func:`cgn.trainer.trainer_speed`), for Wildlife's
fast recipe and its paper config without the style loss, at each config's own batch size and
precision.

Writes results/critic_reuse_speed.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/critic_reuse_speed.py [--steps 50] [--blocks 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cgn.config import load_config
from cgn.environment import write_result
from cgn.trainer import Trainer, resolve_run_config, trainer_speed

CONFIGS = {
    "wildlife fast recipe": ("configs/fast/wildlife_mnist.toml", []),
    "wildlife paper, no style loss": ("configs/wildlife_mnist.toml", ["loss.style_network=none"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per variant (median)")
    parser.add_argument("--out", type=Path, default=Path("results/critic_reuse_speed.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (path, overrides) in CONFIGS.items():
            config = load_config(path, overrides)
            trainers = {}
            for reuse in (False, True):
                trainer = Trainer(config, Path(tmp) / f"{len(rows)}_{reuse}")
                trainer.reuse_fake_scores = reuse
                trainers["reuse" if reuse else "score_again"] = trainer
            speed = trainer_speed(trainers, args.steps, args.blocks)
            run = resolve_run_config(config).train
            rows.append(
                {
                    "config": label,
                    "command_config": f"{path} {' '.join(overrides)}".strip(),
                    "batch_size": run.batch_size,
                    "precision": run.precision,  # what "auto" resolved to here
                    "images_per_s": {name: round(v, 1) for name, v in speed.items()},
                    "speedup": round(speed["reuse"] / speed["score_again"], 3),
                }
            )
            print(rows[-1], flush=True)
    write_result(
        args.out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": f"score_again = the critic scores the fakes a second time for its update (before 2026-11-30); "
            f"reuse = the generator step's scores reused; medians of {args.blocks} alternating timed blocks of "
            f"{args.steps} steps after one untimed block each, in one process",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
