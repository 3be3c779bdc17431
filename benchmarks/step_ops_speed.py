"""Training speed before and after two bit-identical rewrites of small operators (2026-12-06).

- The up-blocks' kernel fold (:func:`cgn.mechanisms.transposed_kernel`): before, an einsum
  ``"ak,bl,oikl->ioab"`` over the two 1-d folds; now one (O·I, 9) × (9, 16) product.
- The shuffler's circular shift (:func:`cgn.mechanisms._shift_gather`, forward and gradient):
  before, a 3-d advanced index of the (B, H, W, C) view; now one ``index_select`` of its
  (B·H·W, C) pixel rows.

Both give the same weights bit for bit (tests/test_model.py; checked here on every config:
fresh trainers, 20 steps each). The two trainers of a config take turns in alternating blocks in one
process (:func:`cgn.trainer.trainer_speed`), at the config's batch size and precision.
Writes results/step_ops_speed.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/step_ops_speed.py [--steps 30] [--blocks 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from unittest import mock

import torch

from cgn import mechanisms
from cgn.allocator import reexec_with_allocator
from cgn.config import load_config
from cgn.environment import write_result
from cgn.trainer import Trainer, speed_row, trainer_speed

CONFIGS = {
    "double-colored paper, phase up-blocks, bf16, no style loss": (
        "configs/double_colored_mnist.toml",
        ["model.upsample_conv=phase", "loss.style_network=none", "train.precision=bf16"],
    ),
    "wildlife paper, phase up-blocks, bf16, no style loss": (
        "configs/wildlife_mnist.toml",
        ["model.upsample_conv=phase", "loss.style_network=none", "train.precision=bf16"],
    ),
    "double-colored fast recipe": ("configs/fast/double_colored_mnist.toml", []),
    "wildlife fast recipe": ("configs/fast/wildlife_mnist.toml", []),
}


def einsum_fold(weight: torch.Tensor) -> torch.Tensor:
    """The fold as it was: an einsum over the two 1-d folds."""
    fold = torch.tensor(mechanisms._FOLD, dtype=weight.dtype, device=weight.device)
    return torch.einsum("ak,bl,oikl->ioab", fold, fold, weight)


def indexed_shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The shift as it was: a 3-d advanced index of the (B, H, W, C) view."""
    b, _, h, w = x.shape
    rows = (dy[:, None] + torch.arange(h, device=x.device)) % h
    cols = (dx[:, None] + torch.arange(w, device=x.device)) % w
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def with_previous_ops(trainer: Trainer) -> Trainer:
    """The trainer, its steps running the two operators as they were."""
    step = trainer.train_step

    def train_step() -> dict[str, torch.Tensor]:
        with (
            mock.patch.object(mechanisms, "transposed_kernel", einsum_fold),
            mock.patch.object(mechanisms, "_shift_gather", indexed_shift),
        ):
            return step()

    trainer.train_step = train_step
    return trainer


def same_weights(config, tmp: Path, steps: int = 20) -> bool:
    """Whether fresh trainers, before and now, hold the same weights after ``steps`` steps each
    (run one after the other: dropout draws from the global generator, seeded for each)."""
    trained = []
    for name in ("before", "now"):
        trainer = Trainer(config, tmp / f"check_{name}")
        trainer = with_previous_ops(trainer) if name == "before" else trainer
        torch.manual_seed(0)
        for _ in range(steps):
            trainer.train_step()
        trained.append([*trainer.generator.state_dict().values(), *trainer.discriminator.state_dict().values()])
    return all(torch.equal(a, b) for a, b in zip(*trained, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant (median)")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("results/step_ops_speed.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.configs:
            path, overrides = CONFIGS[label]
            config = load_config(path, overrides)
            trainers = {
                "before": with_previous_ops(Trainer(config, Path(tmp) / f"{len(rows)}_before")),
                "now": Trainer(config, Path(tmp) / f"{len(rows)}_now"),
            }
            speed = trainer_speed(trainers, args.steps, args.blocks)
            row = speed_row(label, path, overrides, speed, baseline="before", variant="now")
            rows.append(row | {"same_weights_after_20_steps": same_weights(config, Path(tmp) / str(len(rows)))})
            print(rows[-1], flush=True)
    write_result(
        args.out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": "before = the einsum fold and the advanced-index shift; now = one product and one "
            f"index_select; medians of {args.blocks} alternating timed blocks of {args.steps} steps after "
            "one untimed block each, in one process",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
