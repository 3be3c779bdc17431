"""Forward + backward time of the style loss's Gram-L1 term at the shapes training meets.

Three implementations of ``mean |Gram(F) − Gram(R)|`` (gradient to F only), timed in
alternating blocks of one run on bf16 features, as the style loss sees them under autocast:

- ``plain``: whole-batch (B, C, C) Grams compared by ``F.l1_loss`` (a straightforward port);
- ``rebuild``: our loss from 2026-11-29 to 2026-12-07: a few samples at a time, the difference
  F Fᵀ − R Rᵀ as one ``baddbmm`` onto one ``bmm``, the scale applied once to the sum, and the
  difference built again in the backward pass for ``2·sign·F``;
- ``ours``: ``cgn.losses.gram_l1_loss``: the same, with ``sign·F`` made in the forward pass
  while the difference is in cache, leaving the backward pass a scaling. (Before 2026-11-29
  both Grams were built, scaled and subtracted: docs/speed.md.)

Shapes: VGG-16's relu1_2, relu2_2, relu3_3 and relu4_3 on 32×32 images at batch 16.
Writes results/gram_l1_speed.json.
Usage: python benchmarks/gram_l1_speed.py [--repeats 30] [--blocks 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cgn.allocator import reexec_with_allocator
from cgn.environment import write_result
from cgn.losses import GRAM_CHUNK_FLOATS, _chunk_difference, gram, gram_l1_loss

SHAPES = {"relu1_2": (64, 32), "relu2_2": (128, 16), "relu3_3": (256, 8), "relu4_3": (512, 4)}


def plain(gen: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = gram(real)
    return F.l1_loss(gram(gen), target)


class _Rebuild(torch.autograd.Function):
    """The loss from 2026-11-29 to 2026-12-07 (kept here only to time it): the absolute sum in
    the forward pass, the difference built again for the gradient in the backward pass."""

    @staticmethod
    def forward(ctx, gen, real):
        b, c, hw = gen.shape
        step = max(1, GRAM_CHUNK_FLOATS // (c * c))
        total = gen.new_zeros((), dtype=torch.float32)
        for start in range(0, b, step):
            total += _chunk_difference(gen, real, start, start + step)[1].abs_().sum()
        ctx.save_for_backward(gen, real)
        return total / (b * c * c * c * hw)

    @staticmethod
    def backward(ctx, grad_output):
        gen, real = ctx.saved_tensors
        b, c, hw = gen.shape
        step = max(1, GRAM_CHUNK_FLOATS // (c * c))
        scale = 2 * grad_output / (b * c * c * c * hw)
        grad = torch.empty(gen.shape, dtype=torch.float32)
        for start in range(0, b, step):
            f, difference = _chunk_difference(gen, real, start, start + step)
            torch.bmm(difference.sign_(), f, out=grad[start : start + step]).mul_(scale)
        return grad.to(gen.dtype), None


def rebuild(gen: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    b, c, h, w = gen.shape
    with torch.autocast(gen.device.type, enabled=False):
        return _Rebuild.apply(gen.reshape(b, c, h * w), real.detach().reshape(b, c, h * w))


IMPLEMENTATIONS = {"plain": plain, "rebuild": rebuild, "ours": gram_l1_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30, help="forward + backward passes per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per implementation (median reported)")
    parser.add_argument("--out", default="results/gram_l1_speed.json")
    args = parser.parse_args()
    rows = []
    for layer, (channels, size) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        gen = torch.randn(args.batch, channels, size, size, generator=g).bfloat16().requires_grad_()
        real = torch.randn(args.batch, channels, size, size, generator=g).bfloat16()
        results = {}
        for name, fn in IMPLEMENTATIONS.items():
            value = fn(gen, real)
            (grad,) = torch.autograd.grad(value, gen)
            results[name] = {"value": value.item(), "grad": grad.float(), "ms": []}
        for _ in range(args.blocks):  # alternating blocks: the machine's drift hits all alike
            for name, fn in IMPLEMENTATIONS.items():
                for _ in range(3):
                    fn(gen, real).backward()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    fn(gen, real).backward()
                results[name]["ms"].append((time.perf_counter() - start) / args.repeats * 1000)
        reference = results["plain"]
        row = {"layer": layer, "features": [args.batch, channels, size * size]}
        for name, r in results.items():
            row[name] = {
                "ms_forward_backward": round(statistics.median(r["ms"]), 2),
                "relative_value_error": abs(r["value"] - reference["value"]) / abs(reference["value"]),
                "max_grad_error_vs_plain": (r["grad"] - reference["grad"]).abs().max().item(),
                "max_grad": reference["grad"].abs().max().item(),
            }
        row["speedup_ours_vs_rebuild"] = round(
            row["rebuild"]["ms_forward_backward"] / row["ours"]["ms_forward_backward"], 2
        )
        rows.append(row)
        print(layer, {n: row[n]["ms_forward_backward"] for n in IMPLEMENTATIONS})
    write_result(
        args.out,
        {
            "rows": rows,
            "torch_threads": torch.get_num_threads(),
            "notes": "bf16 features, gradient to the generated ones only; medians of alternating timed blocks",
        },
    )


if __name__ == "__main__":
    reexec_with_allocator()
    main()
