"""What computing the up-blocks at the input's size saves (``model.upsample_conv``).

Three measurements, "interpolate" (nearest ×2 upsampling, then the 3×3 conv: the paper's code)
against "phase" (:class:`cgn.mechanisms.UpsampleConv2d`: the same function as a stride-2
transposed convolution of the input with the folded 4×4 kernel), each timed in alternating
blocks of one run:

- each up-block conv of the paper's mechanisms alone, forward + backward at batch 16;
- the training step of each fast recipe (``configs/fast/<dataset>.toml`` at its precision,
  batch 16), images/s and the recipe's minutes at that speed;
- counterfactual generation (the paper-size CGN, no gradients, batch 256), images/s.

Writes results/upsample_conv_speed.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/upsample_conv_speed.py [--steps 20] [--blocks 5] [--datasets ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.config import ModelConfig, load_config
from cgn.environment import median_seconds, write_result
from cgn.mechanisms import UpBlock
from cgn.model import CGN
from cgn.trainer import resolve_run_config, training_speed

DATASETS = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]
VARIANTS = ("interpolate", "phase")
# (in channels, out channels, input size) of the paper's up-blocks: the texture/background
# mechanisms' two, then the shape mechanism's two (ngf = 32).
LAYERS = [(64, 64, 8), (64, 32, 16), (64, 32, 8), (32, 1, 16)]


def layer_rows(blocks: int, repeats: int = 10) -> list[dict]:
    rows = []
    for cin, cout, size in LAYERS:
        torch.manual_seed(0)
        x = torch.randn(16, cin, size, size, requires_grad=True)
        convs = {name: torch.nn.Sequential(*list(UpBlock(cin, cout, name))[:2]) for name in VARIANTS}  # upsample, conv
        convs["phase"].load_state_dict(convs["interpolate"].state_dict())
        upstream = torch.randn(16, cout, 2 * size, 2 * size)

        def run(conv: torch.nn.Module, x: torch.Tensor = x, upstream: torch.Tensor = upstream) -> None:
            for _ in range(repeats):
                conv(x).backward(upstream)

        seconds = median_seconds({name: lambda c=conv: run(c) for name, conv in convs.items()}, blocks)
        ms = {name: round(s / repeats * 1000, 2) for name, s in seconds.items()}
        rows.append({"layer": f"{cin}->{cout} channels, {size}->{2 * size}", "ms_forward_backward": ms})
        print(rows[-1], flush=True)
    return rows


def step_rows(datasets: list[str], steps: int, blocks: int, run_root: Path) -> list[dict]:
    rows = []
    for dataset in datasets:
        path = Path("configs/fast") / f"{dataset}.toml"
        configs = {name: load_config(path, [f"model.upsample_conv={name}"]) for name in VARIANTS}
        speed = {name: round(v, 1) for name, v in training_speed(configs, run_root / dataset, steps, blocks).items()}
        recipe = resolve_run_config(configs["phase"])
        batch = recipe.train.batch_size
        rows.append(
            {
                "dataset": dataset,
                "precision": recipe.train.precision,  # what "auto" resolved to here
                "images_per_s": speed,
                "speedup": round(speed["phase"] / speed["interpolate"], 3),
                "recipe_minutes": {name: round(recipe.train.steps * batch / speed[name] / 60, 1) for name in VARIANTS},
            }
        )
        print(rows[-1], flush=True)
    return rows


def generation_row(blocks: int, batch: int = 256, repeats: int = 4) -> dict:
    torch.manual_seed(0)
    models = {name: CGN(ModelConfig(upsample_conv=name)).eval() for name in VARIANTS}
    models["phase"].load_state_dict(models["interpolate"].state_dict())
    labels = torch.arange(batch) % 10

    @torch.no_grad()
    def run(model: CGN) -> None:
        for i in range(repeats):
            model(labels, generator=torch.Generator().manual_seed(i))

    seconds = median_seconds({name: lambda m=m: run(m) for name, m in models.items()}, blocks)
    speed = {name: round(repeats * batch / s, 1) for name, s in seconds.items()}
    row = {"batch": batch, "images_per_s": speed, "speedup": round(speed["phase"] / speed["interpolate"], 3)}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant (median)")
    parser.add_argument("--out", type=Path, default=Path("results/upsample_conv_speed.json"))
    args = parser.parse_args()
    layers = layer_rows(args.blocks)
    with tempfile.TemporaryDirectory() as tmp:
        steps = step_rows(args.datasets, args.steps, args.blocks, Path(tmp))
    generation = generation_row(args.blocks)
    write_result(
        args.out,
        {
            "layers": layers,
            "training_steps": steps,
            "generation": generation,
            "torch_threads": torch.get_num_threads(),
            "notes": "interpolate = nearest x2 upsampling then the 3x3 conv (the paper's code); phase = the same "
            "function at the input's size (model.upsample_conv). Medians of alternating timed blocks in one process.",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
