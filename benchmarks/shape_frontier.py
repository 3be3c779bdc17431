"""Shape effectiveness against mask diversity: our CGNs and the authors' at the same variety.

Shape effectiveness rewards masks that all look like the class's most typical digit: a shape
mechanism that draws one digit per class scores highest and teaches the least (docs/table2.md, "Shape
noise"). So this compares CGNs at equal mask diversity (mean L1 distance between two masks of
one class; real MNIST: 0.158). Scaling the shape noise (u ~ N(0, s²I), s ≤ 1) moves one
generator along its own curve of variety against effectiveness. For each dataset it evaluates
our checkpoints and the authors' released one (imported from
$CGN_DATA_MIRROR/original_mnist_checkpoints) at each scale, then reads our curve at the
diversity of the authors' checkpoint as released (scale 1) by linear interpolation.

Writes results/shape_frontier.json.
Usage: python benchmarks/shape_frontier.py CKPT [CKPT ...] [--scales 1.0 0.9 0.8 0.7] [--samples 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from cgn_quality import ORIGINAL, mirror  # benchmarks/ is on the path when run as a script

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.environment import write_result
from cgn.evaluation import evaluate_cgn
from cgn.original import import_original

KEYS = ("shape_effectiveness", "mask_diversity", "texture_effectiveness", "background_effectiveness", "mask_mean")


def curve(model, dataset: str, scales: list[float], samples: int) -> list[dict]:
    points = []
    for scale in scales:
        metrics = evaluate_cgn(model, dataset, num_samples=samples, shape_noise_scale=scale)
        points.append({"shape_noise_scale": scale, **{k: metrics[k] for k in KEYS}})
        print(dataset, scale, {k: metrics[k] for k in KEYS[:2]}, flush=True)
    return points


def at_diversity(points: list[dict], diversity: float) -> float | None:
    """Shape effectiveness where the curve reaches ``diversity`` (None outside its range)."""
    ordered = sorted(points, key=lambda p: p["mask_diversity"])
    xs = [p["mask_diversity"] for p in ordered]
    if not xs[0] <= diversity <= xs[-1]:
        return None
    return float(np.interp(diversity, xs, [p["shape_effectiveness"] for p in ordered]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="our CGN checkpoints (.safetensors)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7])
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--out", type=Path, default=Path("results/shape_frontier.json"))
    args = parser.parse_args()
    args.scales = sorted(set(args.scales) | {1.0}, reverse=True)  # scale 1 is the generator as released
    ours: dict[str, list[dict]] = {}
    for path in args.checkpoints:
        model, config, _ = load_cgn(path)
        points = curve(model, config.train.dataset, args.scales, args.samples)
        ours.setdefault(config.train.dataset, []).append({"checkpoint": str(path), "curve": points})
    datasets = {}
    for dataset, runs in ours.items():
        original, _ = import_original(mirror() / "original_mnist_checkpoints" / f"cgn_{ORIGINAL[dataset]}.pth", dataset)
        authors = curve(original, dataset, args.scales, args.samples)
        released = next(p for p in authors if p["shape_noise_scale"] == 1.0)
        for run in runs:
            run["shape_effectiveness_at_authors_diversity"] = at_diversity(run["curve"], released["mask_diversity"])
        matched = [r["shape_effectiveness_at_authors_diversity"] for r in runs]
        reached = [m for m in matched if m is not None]
        datasets[dataset] = {
            "authors": {"curve": authors, "released": released},
            "ours": runs,
            "summary": {
                "authors_diversity": released["mask_diversity"],
                "authors_shape_effectiveness": released["shape_effectiveness"],
                "ours_shape_effectiveness_at_scale_1": statistics.mean(
                    next(p for p in r["curve"] if p["shape_noise_scale"] == 1.0)["shape_effectiveness"] for r in runs
                ),
                "ours_diversity_at_scale_1": statistics.mean(
                    next(p for p in r["curve"] if p["shape_noise_scale"] == 1.0)["mask_diversity"] for r in runs
                ),
                # Checkpoints less varied than the authors' even at scale 1 cannot be matched (None).
                "ours_shape_effectiveness_at_authors_diversity": statistics.mean(reached) if reached else None,
                "checkpoints_matched": f"{len(reached)} of {len(matched)}",
                "ours_at_authors_diversity_per_checkpoint": matched,
            },
        }
        print(dataset, json.dumps(datasets[dataset]["summary"]), flush=True)
    write_result(args.out, {"samples": args.samples, "scales": args.scales, "datasets": datasets})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
