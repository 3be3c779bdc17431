"""The style loss's VGG-16 convolutions on small maps as one matrix product, against ``F.conv2d``.

At 32×32 input, VGG-16's relu4 block convolves 4×4 maps with 256 or 512 channels, where
oneDNN's convolution reaches a fraction of the CPU's matrix-product speed. ``StyleLoss`` runs
3×3 convolutions on maps of at most ``cgn.losses.SMALL_MAP_PIXELS`` pixels on the CPU as one
product over the input's 3×3 patches, and their input gradient as one product over the
output gradient's patches (``StyleLoss.small_map_matmul``, on by default).

Two parts, each timed in alternating blocks of one run:

- ``layers``: forward (no autograd, as for the real batch) and forward + backward to the input
  (as for the generated batch) of VGG-16's relu3 and relu4 convolutions at batch 16, fp32 and
  bf16 (channels-last, weights stored in the precision), with each implementation's largest
  difference from a float64 convolution;
- ``steps``: the paper config's training step with the style loss (VGG-16 with random
  weights, batch 16), ``small_map_matmul`` off and on, on double-colored and Wildlife MNIST.

Writes results/small_map_conv_speed.json (--out). Needs prepared data (`cgn data prepare`).
Usage: python benchmarks/small_map_conv_speed.py [--steps 30] [--blocks 5] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from train_speed import make_trainer  # benchmarks/ is on the path when run as a script

from cgn.allocator import reexec_with_allocator
from cgn.environment import matmul_gflops, write_result
from cgn.losses import SMALL_MAP_PIXELS, _SmallMapConv3x3, small_map_matrices
from cgn.trainer import trainer_speed

# (input channels, output channels, map size) of VGG-16's relu3 and relu4 convolutions at 32×32 input
LAYERS = ((128, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4))
DATASETS = ("double_colored_mnist", "wildlife_mnist")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def layer_row(c_in: int, c_out: int, size: int, precision: str, repeats: int, blocks: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    dtype = DTYPES[precision]
    weight = (torch.randn(c_out, c_in, 3, 3, generator=g) * (2 / (9 * c_in)) ** 0.5).to(dtype)
    bias = (torch.randn(c_out, generator=g) * 0.01).to(dtype)
    x = torch.randn(16, c_in, size, size, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(16, c_out, size, size, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    conv_weight = weight.contiguous(memory_format=torch.channels_last)
    matrices = small_map_matrices(weight)
    implementations = {
        "conv2d": lambda a: F.conv2d(a, conv_weight, bias, padding=1),
        "matmul": lambda a: _SmallMapConv3x3.apply(a, *matrices, bias),
    }

    def forward(fn):
        with torch.no_grad():
            fn(x)

    def forward_backward(fn):
        a = x.detach().requires_grad_(True)
        fn(a).backward(grad_out)

    ms = {f"{name}_{part}": [] for name in implementations for part in ("forward", "forward_backward")}
    for _ in range(blocks + 1):  # the first round warms up
        for name, fn in implementations.items():
            for part, run in (("forward", forward), ("forward_backward", forward_backward)):
                start = time.perf_counter()
                for _ in range(repeats):
                    run(fn)
                ms[f"{name}_{part}"].append((time.perf_counter() - start) / repeats * 1000)
    row = {"layer": f"{c_in}->{c_out} at {size}x{size}", "precision": precision, "batch_size": 16}
    row |= {key: round(statistics.median(times[1:]), 3) for key, times in ms.items()}
    exact_x = x.double().requires_grad_(True)
    exact = F.conv2d(exact_x, weight.double(), bias.double(), padding=1)
    (exact_grad,) = torch.autograd.grad(exact, exact_x, grad_out.double())
    for name, fn in implementations.items():
        a = x.detach().requires_grad_(True)
        y = fn(a)
        (grad,) = torch.autograd.grad(y, a, grad_out)
        row[f"{name}_max_error"] = (y.double() - exact).abs().max().item()
        row[f"{name}_max_grad_error"] = (grad.double() - exact_grad).abs().max().item()
    row["runs_as_matmul"] = size * size <= SMALL_MAP_PIXELS
    row["speedup_forward"] = round(row["conv2d_forward"] / row["matmul_forward"], 2)
    row["speedup_forward_backward"] = round(row["conv2d_forward_backward"] / row["matmul_forward_backward"], 2)
    return row


def step_row(dataset: str, precision: str, steps: int, blocks: int, tmp: Path) -> dict[str, object]:
    trainers = {}
    for on in (False, True):
        trainer = make_trainer(dataset, 16, True, precision, tmp / f"{dataset}_{precision}_{on}")
        trainer.loss.style.small_map_matmul = on
        trainers["matmul" if on else "conv2d"] = trainer
    speed = trainer_speed(trainers, steps, blocks)
    return {
        "dataset": dataset,
        "precision": precision,
        "batch_size": 16,
        "style_loss": "vgg16_random",
        "images_per_s": {name: round(v, 1) for name, v in speed.items()},
        "ms_per_step": {name: round(16_000 / v, 2) for name, v in speed.items()},
        "speedup": round(speed["matmul"] / speed["conv2d"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="calls per timed block (layers)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant (median)")
    parser.add_argument("--precisions", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("results/small_map_conv_speed.json"))
    args = parser.parse_args()
    gflops = {"before": {p: round(matmul_gflops(p), 1) for p in args.precisions}}
    layers = []
    for precision in args.precisions:
        for shape in LAYERS:
            layers.append(layer_row(*shape, precision, args.repeats, args.blocks))
            print(layers[-1], flush=True)
    steps = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            for precision in args.precisions:
                steps.append(step_row(dataset, precision, args.steps, args.blocks, Path(tmp)))
                print(steps[-1], flush=True)
    gflops["after"] = {p: round(matmul_gflops(p), 1) for p in args.precisions}
    write_result(
        args.out,
        {
            "layers": layers,
            "steps": steps,
            "machine_matmul_gflops": gflops,
            "torch_threads": torch.get_num_threads(),
            "notes": f"medians of {args.blocks} alternating timed blocks after one untimed round, in one "
            "process; layers: batch 16, channels-last, weights stored in the precision, errors against a "
            "float64 convolution; steps: the paper config with the style loss on VGG-16 (random weights), "
            "StyleLoss.small_map_matmul off (conv2d) and on (matmul), the trainer otherwise as it runs",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
