"""How much digit shape the shape view of real training images carries, for each distance.

The shape-view critic (``loss.shape_view_weight``) learns what a class's digit looks like from
the shape views of the real, biased training images; a view that hides the stroke in a
background's texture teaches it little. This reads the views of real training images with the
evaluation's digit judge (trained on grey MNIST strokes) and reports its accuracy per class,
and the correlation of each view with the true stroke, for ``loss.shape_view_distance``
"euclidean" and "mahalanobis" (several variance floors). No training involved.

Also "two_gaussian" for several shares of seed pixels (``losses.TWO_GAUSSIAN_SHARE``), and
``oracle_gaussians``, the two colour Gaussians fitted to the true stroke and its complement:
no critic could know them, so it bounds what a view built on colours could read.

Writes results/shape_view_readability.json.
Usage: python benchmarks/shape_view_readability.py [--samples 4000] [--floors 0.001 0.01 0.03] [--shares 0.1 0.15 0.2]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F

from cgn import losses
from cgn.allocator import reexec_with_allocator
from cgn.config import LossConfig
from cgn.data import build_dataset
from cgn.digit_classifier import load_or_train_digit_classifier
from cgn.environment import write_result
from cgn.evaluation import JUDGE_SEED
from cgn.losses import colour_gaussian, colour_log_density, shape_view

DATASETS = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]


def readability(view: torch.Tensor, stroke: torch.Tensor, labels: torch.Tensor, judge) -> dict[str, object]:
    """The judge's accuracy on views (B, 1, H, W) in [-1, 1], overall and per class, and the
    mean per-image correlation of view and stroke."""
    predictions = judge.predict((view + 1) / 2)
    hits = (predictions == labels).double()
    a, b = view.flatten(1), stroke.flatten(1)
    correlation = F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)).mean()
    return {
        "judge_accuracy": round(float(hits.mean()), 4),
        "judge_accuracy_by_class": [round(float(hits[labels == c].mean()), 3) for c in range(10)],
        "stroke_correlation": round(float(correlation), 4),
    }


def oracle_view(images: torch.Tensor, stroke: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """Each pixel's posterior (as 2p − 1) under colour Gaussians fitted to the true stroke and
    its complement: what a view built on colours could read at best."""
    pixels, weights = images.flatten(2), (stroke.flatten(2) > 0.5).float()
    foreground = colour_gaussian(pixels, weights, floor)
    background = colour_gaussian(pixels, 1 - weights, floor)
    posterior = torch.sigmoid(colour_log_density(pixels, *foreground) - colour_log_density(pixels, *background))
    return (2 * posterior - 1).view(images.shape[0], 1, *images.shape[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--samples", type=int, default=4000, help="random training images per dataset")
    parser.add_argument("--floors", nargs="+", type=float, default=[0.001, 0.01, 0.03])
    parser.add_argument("--shares", nargs="+", type=float, default=[0.1, 0.15, 0.2], help="two_gaussian seeds")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("results/shape_view_readability.json"))
    args = parser.parse_args()

    judge = load_or_train_digit_classifier(args.data_dir, seed=JUDGE_SEED)
    width = LossConfig().mask_border_width
    result: dict[str, object] = {"samples": args.samples, "frame_width": width}
    for dataset in args.datasets:
        data = build_dataset(dataset, split="train", seed=0, data_root=args.data_dir)
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: args.samples]
        batch = data.batch(index)
        images, stroke, labels = batch["image"], batch["mask"], batch["label"]
        rows = {"euclidean": readability(shape_view(images, width), stroke, labels, judge)}
        for floor in args.floors:
            view = shape_view(images, width, "mahalanobis", floor)
            rows[f"mahalanobis_floor_{floor:g}"] = readability(view, stroke, labels, judge)
        for share in args.shares:
            with patch.object(losses, "TWO_GAUSSIAN_SHARE", share):
                view = shape_view(images, width, "two_gaussian")
            rows[f"two_gaussian_share_{share:g}"] = readability(view, stroke, labels, judge)
        rows["oracle_gaussians"] = readability(oracle_view(images, stroke), stroke, labels, judge)
        rows["stroke_itself"] = readability(2 * stroke - 1, stroke, labels, judge)
        result[dataset] = rows
        print(dataset, {name: row["judge_accuracy"] for name, row in rows.items()})
    write_result(args.out, result)


if __name__ == "__main__":
    reexec_with_allocator()
    main()
