"""Where the shape-leakage numbers come from: a digit drawn into the maps, or the judge's reading of flat maps?

``evaluate_cgn`` scores shape leakage as the digit judge's accuracy, against a map's own label,
on the foreground / background maps grey-scaled and stretched per image to [0, 1]. The stretch
makes a flat map neutral but amplifies whatever faint pattern a nearly flat map has. This
script takes the numbers apart, for our checkpoints and the authors' (imported from
$CGN_DATA_MIRROR/original_mnist_checkpoints), per map (foreground, and background where the
dataset has one), on ``--num`` maps with uniformly drawn labels:

- ``leakage`` / ``leakage_by_class``: as ``evaluate_cgn`` computes it (shuffled maps);
- ``judge_reads``: how often the judge says each digit, whatever the label (a judge that reads
  most shape-free maps as one digit d scores a class whose map it reads as d as a "leak");
- ``lift_by_class``: P(judge says c | label c) - P(judge says c | label not c);
- ``contrast_by_class``: the median per-map standard deviation of the grey map, in [0, 1] grey
  units (1/255 is one grey level); real colored MNIST foregrounds are flat (0);
- ``leakage_unshuffled_interior``: the same judge on the mechanism's own map before the
  shuffler, its outer 3 pixels cut off and the rest resized to 32x32: no wrap seam, and a digit
  drawn by the mechanism would sit where it was drawn;
- ``leakage_visible``: leakage counting only maps whose contrast reaches ``--visible`` (others
  count as chance, 0.1).

``real`` holds the leakage of the real test split's maps (``evaluate_real_data``, the first
``--num`` images), the score of a CGN that draws exactly the data's colours and textures.

Usage: python benchmarks/leakage_diagnosis.py DATASET=CKPT [DATASET=CKPT ...] [--num 10000]
       [--out results/leakage_diagnosis.json]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from cgn_quality import ORIGINAL, mirror  # benchmarks/ is on the path when run as a script

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.data.base import NUM_CLASSES
from cgn.digit_classifier import load_or_train_digit_classifier
from cgn.environment import write_result
from cgn.evaluation import JUDGE_SEED, evaluate_cgn, evaluate_real_data, stretched_grey, to_grey
from cgn.model import CGN
from cgn.original import import_original
from cgn.seeding import make_generator

BORDER = 3  # pixels cut from each side of an unshuffled map


def rate_by_class(hits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [round(float(hits[labels == c].float().mean()), 4) for c in range(NUM_CLASSES)]


@torch.no_grad()
def diagnose(model: CGN, dataset: str, digits, num: int, visible: float) -> dict[str, dict]:
    """The breakdown of the module docstring for each map of ``model``."""
    model.eval()
    metrics = evaluate_cgn(model, dataset, num_samples=num, digit_classifier=digits, by_class=True)
    generator = make_generator(0, "leakage_diagnosis", dataset)
    labels = torch.randint(0, NUM_CLASSES, (num,), generator=generator)  # (N,)
    noise = model.sample_noise(num, generator)  # (N, latent)
    out = {}
    for where, mechanism in (("foreground", model.texture), ("background", model.background)):
        if metrics[f"shape_leakage_{where}"] is None:
            continue
        raw = mechanism(model._input(noise, labels))  # (N, 3, 32, 32), before the shuffler
        maps = model.shuffler(raw, generator)  # what the composer gets
        reads = digits.predict(stretched_grey(maps))  # (N,)
        interior = F.interpolate(raw[:, :, BORDER:-BORDER, BORDER:-BORDER], size=raw.shape[-1], mode="bilinear")
        reads_interior = digits.predict(stretched_grey(interior))
        contrast = to_grey(maps).std((1, 2, 3))  # (N,) in grey units of [0, 1]
        hits = reads == labels
        visible_hits = torch.where(contrast >= visible, hits.float(), torch.full_like(contrast, 0.1))
        out[where] = {
            "leakage": metrics[f"shape_leakage_{where}"],
            "leakage_by_class": [round(v, 4) for v in metrics[f"shape_leakage_{where}_by_class"]],
            "judge_reads": [round(float((reads == d).float().mean()), 4) for d in range(NUM_CLASSES)],
            "lift_by_class": [
                round(float((reads[labels == c] == c).float().mean() - (reads[labels != c] == c).float().mean()), 4)
                for c in range(NUM_CLASSES)
            ],
            "contrast_by_class": [round(float(contrast[labels == c].median()), 4) for c in range(NUM_CLASSES)],
            "leakage_unshuffled_interior": round(float((reads_interior == labels).float().mean()), 4),
            "leakage_unshuffled_interior_by_class": rate_by_class(reads_interior == labels, labels),
            "leakage_visible": round(float(visible_hits.mean()), 4),
            "visible_share": round(float((contrast >= visible).float().mean()), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="DATASET=CKPT, our checkpoint of each dataset")
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--visible", type=float, default=0.02, help="contrast (grey std) of a visible pattern")
    parser.add_argument("--out", type=Path, default=Path("results/leakage_diagnosis.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    digits = load_or_train_digit_classifier(None, seed=JUDGE_SEED).eval()
    result: dict[str, object] = {"num": args.num, "visible": args.visible, "border": BORDER}
    for item in args.checkpoints:
        dataset, _, path = item.partition("=")
        if dataset not in ORIGINAL or not path:
            parser.error(f"expected DATASET=CKPT with DATASET one of {sorted(ORIGINAL)}, got {item!r}")
        ours, _, _ = load_cgn(path)
        theirs, _ = import_original(mirror() / "original_mnist_checkpoints" / f"cgn_{ORIGINAL[dataset]}.pth", dataset)
        result[dataset] = {
            "ours": {"checkpoint": path, **diagnose(ours, dataset, digits, args.num, args.visible)},
            "original": diagnose(theirs, dataset, digits, args.num, args.visible),
            "real": {
                key: value
                for key, value in evaluate_real_data(
                    dataset, max_samples=args.num, digit_classifier=digits, by_class=True
                ).items()
                if key.startswith("shape_leakage")
            },
        }
        for who in ("ours", "original"):
            for where, d in result[dataset][who].items():
                if isinstance(d, dict):
                    print(
                        f"{dataset:22} {who:9} {where:11} leakage {d['leakage']:.3f}"
                        f" interior {d['leakage_unshuffled_interior']:.3f} visible {d['leakage_visible']:.3f}"
                        f" (share {d['visible_share']:.2f})",
                        flush=True,
                    )
    print(f"wrote {write_result(args.out, result)}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
