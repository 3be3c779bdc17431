"""Training speed with and without the critics' two reuses (``--reuse``).

``fake_scores`` (the default): a critic with BatchNorm (Wildlife's conv critics) scored each
generated batch twice per step: once for the generator's loss and once, on the same images
with the same weights, for its own update. The trainer now reuses the first scores
(:func:`cgn.trainer.critic_scores`), which gives the same numbers bit for bit
(tests/test_trainer.py) for one forward pass fewer. Timed on Wildlife's fast recipe and its
paper config without the style loss.

``real_features``: the matching-aware terms (``loss.mismatch_weight``,
``loss.shape_view_mismatch_weight``) score the real batch under wrong labels; a projection
critic now takes those scores from the real batch's features instead of running its trunk
again. Timed on Wildlife's fast recipe with both terms on from the first step
(``loss.mismatch_start=0``; the recipe switches them on after a fifth of its steps).

Each variant pair is timed in alternating blocks in one process
(:func:`cgn.trainer.trainer_speed`), at the config's own batch size and precision.
Writes results/critic_reuse_speed.json or results/critic_feature_reuse_speed.json (--out).
Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/critic_reuse_speed.py [--reuse fake_scores|real_features] [--steps 50] [--blocks 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.config import load_config
from cgn.environment import write_result
from cgn.trainer import Trainer, speed_row, trainer_speed

CONFIGS = {
    "fake_scores": {
        "wildlife fast recipe": ("configs/fast/wildlife_mnist.toml", []),
        "wildlife paper, no style loss": ("configs/wildlife_mnist.toml", ["loss.style_network=none"]),
    },
    "real_features": {
        "wildlife fast recipe, matching-aware terms on": (
            "configs/fast/wildlife_mnist.toml",
            ["loss.mismatch_start=0"],
        ),
    },
}
OUT = {
    "fake_scores": Path("results/critic_reuse_speed.json"),
    "real_features": Path("results/critic_feature_reuse_speed.json"),
}
NOTES = {
    "fake_scores": "score_again = the critic scores the fakes a second time for its update (before 2026-11-30); "
    "reuse = the generator step's scores reused",
    "real_features": "score_again = a projection critic runs its trunk on the real batch again for the wrong-label "
    "scores (before 2026-12-06); reuse = the real batch's features reused",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per variant (median)")
    parser.add_argument("--reuse", choices=sorted(CONFIGS), default="fake_scores")
    parser.add_argument("--out", type=Path, help="default: " + ", ".join(f"{p} ({k})" for k, p in OUT.items()))
    args = parser.parse_args()
    attribute = f"reuse_{args.reuse}"
    out = args.out or OUT[args.reuse]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (path, overrides) in CONFIGS[args.reuse].items():
            config = load_config(path, overrides)
            trainers = {}
            for reuse in (False, True):
                trainer = Trainer(config, Path(tmp) / f"{len(rows)}_{reuse}")
                setattr(trainer, attribute, reuse)
                trainers["reuse" if reuse else "score_again"] = trainer
            speed = trainer_speed(trainers, args.steps, args.blocks)
            rows.append(speed_row(label, path, overrides, speed, baseline="score_again", variant="reuse"))
            print(rows[-1], flush=True)
    write_result(
        out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "reuse": args.reuse,
            "notes": f"{NOTES[args.reuse]}; medians of {args.blocks} alternating timed blocks of "
            f"{args.steps} steps after one untimed block each, in one process",
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
