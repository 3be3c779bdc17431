"""What the style loss alone costs a training step: VGG-16 to relu4_3 at batch 16 on this CPU.

Times the part of a style-loss step that no implementation of the loss can avoid: the frozen
VGG-16 trunk (as the trainer runs it: channels-last, in bf16 stored in bf16, the 4×4 maps'
convolutions as matrix products, ``StyleLoss.feature_maps``) forward on the real batch without
autograd, forward on the generated batch with autograd, and the backward pass to the generated
images (no weight gradients). Adding a step without the style loss (from
results/train_speed.json, the same precision) gives an upper bound on the images per second a
step with the style loss can reach here, whatever the rest of it costs.

Writes results/style_bound.json. Usage: python benchmarks/style_bound.py [--repeats 20] [--blocks 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
from pathlib import Path

import torch
from train_speed import AUTHORS  # benchmarks/ is on the path when run as a script
from workers import ms_per_step

from cgn.allocator import reexec_with_allocator
from cgn.environment import write_result
from cgn.losses import VGG16_STYLE_LAYERS, StyleLoss, vgg16_features

DEEPEST = VGG16_STYLE_LAYERS[-1]  # relu4_3

DATASETS = ("double_colored_mnist", "wildlife_mnist")


def vgg_ms(loss: StyleLoss, batch: int, precision: str, repeats: int, blocks: int) -> float:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(batch, 3, 32, 32, generator=g).mul(2).sub(1).to(memory_format=torch.channels_last)
    generated = torch.rand(batch, 3, 32, 32, generator=g).mul(2).sub(1).to(memory_format=torch.channels_last)
    generated.requires_grad_()

    def once() -> None:
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with cast:
            with torch.no_grad():
                loss.feature_maps(real)
            out = loss.feature_maps(generated)[DEEPEST]
        out.float().sum().backward()

    return statistics.median(ms_per_step(once, 3, repeats, blocks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--speed", type=Path, default=Path("results/train_speed.json"))
    parser.add_argument("--out", type=Path, default=Path("results/style_bound.json"))
    args = parser.parse_args()
    # The trunk to relu4_3 as the style loss runs it (StyleLoss.feature_maps: on the CPU, the
    # relu4 convolutions on 4×4 maps as matrix products).
    trunk = StyleLoss((0, 0, 0, 1), vgg16_features("vgg16_random")).to(memory_format=torch.channels_last)
    speed = json.loads(args.speed.read_text())["rows"] if args.speed.exists() else []
    rows = []
    for precision in ("fp32", "bf16"):
        # As the trainer keeps it: a bf16 run stores the frozen trunk in bf16 (no casts per call).
        stored = copy.deepcopy(trunk).to(torch.bfloat16) if precision == "bf16" else trunk
        ms = vgg_ms(stored, args.batch, precision, args.repeats, args.blocks)
        for dataset in DATASETS:
            plain_step = next(
                (
                    r
                    for r in speed
                    if r["dataset"] == dataset
                    and r["batch_size"] == args.batch
                    and not r["style_loss"]
                    and r["precision"] == precision
                ),
                None,
            )
            row = {"dataset": dataset, "precision": precision, "batch_size": args.batch, "vgg_ms": round(ms, 1)}
            if plain_step:
                step_ms = plain_step["seconds_per_step"] * 1000
                row["step_without_style_ms"] = round(step_ms, 1)
                row["max_images_per_s_with_style"] = round(args.batch / (ms + step_ms) * 1000, 1)
                row["twice_authors_style_images_per_s"] = round(2 * 16 / AUTHORS[dataset]["style"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_result(
        args.out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": "VGG-16 (random weights) to relu4_3 as StyleLoss.feature_maps runs it, channels-last, stored "
            "in bf16 for bf16: real batch "
            "forward without autograd, generated batch forward and backward to the input; step_without_style_ms "
            "from --speed",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
