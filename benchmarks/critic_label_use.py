"""How much does a run's shape critic use the label? The diagnosis behind ``loss.shape_view_mismatch_weight``.

The shape critic (``loss.shape_view_weight``) is meant to tell the shape mechanism whether a mask
is a digit *of its label's class*. Its LSGAN loss only asks it to tell real shape views from
generated ones, under their own labels, so nothing forces it to read the class. For each run
directory (its last training checkpoint's shape critic, scored on the run's output generator):

- ``label_accuracy_real`` / ``label_accuracy_fake``: how often ``argmax_y D(view(x), y)`` is the
  image's own label, on the first ``--num`` real test images and on ``--num`` generated
  composites (shape, texture and background of one label); chance is 0.1;
- ``label_margin_real`` / ``label_margin_fake``: the mean of ``D(view(x), y) - mean over the nine
  other labels y' of D(view(x), y')``;
- ``auc_judge_correct``: on ``--num`` counterfactuals drawn as ``evaluate_cgn`` draws them, the
  AUC of the critic's score under the shape label for the digit judge reading the mask as that
  label (0.5: the critic cannot tell the masks the judge misreads), with ``shape_effectiveness``
  on the same masks.

Usage: python benchmarks/critic_label_use.py NAME=RUN_DIR [NAME=RUN_DIR ...] [--num 5000]
       [--out results/critic_label_use.json]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn, load_state, read_weights
from cgn.data import build_dataset
from cgn.data.base import NUM_CLASSES
from cgn.digit_classifier import load_or_train_digit_classifier
from cgn.discriminator import build_shape_discriminator
from cgn.environment import write_result
from cgn.errors import ConfigError
from cgn.evaluation import JUDGE_SEED
from cgn.losses import shape_view
from cgn.seeding import make_generator

BATCH = 500


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The probability that a positive scores above a negative (Mann-Whitney; ties are rare)."""
    ranks = scores.double().argsort().argsort().double() + 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def label_use(critic, views: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(argmax-label accuracy, mean margin of the own label over the others) of ``critic``."""
    scores = torch.stack([critic(views, torch.full_like(labels, k)).float() for k in range(NUM_CLASSES)], 1)
    own = scores.gather(1, labels[:, None])[:, 0]
    margin = own - (scores.sum(1) - own) / (NUM_CLASSES - 1)
    return float((scores.argmax(1) == labels).double().mean()), float(margin.mean())


@torch.no_grad()
def diagnose(run: Path, num: int, digits) -> dict[str, object]:
    model, config, _ = load_cgn(run / "cgn.safetensors")
    if not config.loss.shape_view_weight:
        raise ConfigError(f"{run} was trained without a shape critic (loss.shape_view_weight = 0)")
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    critic = build_shape_discriminator(config.model)
    load_state(critic, read_weights(last / "shape_discriminator.safetensors")[0], str(last))
    critic.eval()
    loss = config.loss

    def view(images: torch.Tensor) -> torch.Tensor:
        return shape_view(images, loss.mask_border_width, loss.shape_view_distance, loss.shape_view_variance_floor)

    real = build_dataset(config.train.dataset, "test", 0).batch(torch.arange(num))
    generator = make_generator(0, "critic_label_use", config.train.dataset)
    fake_labels = torch.randint(0, NUM_CLASSES, (num,), generator=generator)
    fake = torch.cat(
        [model(y, y, y, generator=generator).image for y in fake_labels.split(BATCH)]
    )  # one label per composite
    acc_real, margin_real = label_use(critic, view(real["image"]), real["label"])
    acc_fake, margin_fake = label_use(critic, view(fake), fake_labels)

    correct, scores = [], []
    for start in range(0, num, BATCH):  # counterfactuals: the three labels drawn independently
        n = min(BATCH, num - start)
        y_shape, y_texture, y_background = torch.randint(0, NUM_CLASSES, (3, n), generator=generator)
        out = model(y_shape, y_texture, y_background, generator=generator)
        correct.append(digits.predict(out.mask).cpu() == y_shape)
        scores.append(critic(view(out.image), y_shape).float())
    correct, scores = torch.cat(correct), torch.cat(scores)
    return {
        "critic_checkpoint": str(last),
        "label_accuracy_real": acc_real,
        "label_accuracy_fake": acc_fake,
        "label_margin_real": margin_real,
        "label_margin_fake": margin_fake,
        "auc_judge_correct": auc(scores, correct),
        "shape_effectiveness": float(correct.double().mean()),
        "shape_view_mismatch_weight": loss.shape_view_mismatch_weight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("results/critic_label_use.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    digits = load_or_train_digit_classifier(None, seed=JUDGE_SEED).eval()
    result: dict[str, object] = {"num": args.num}
    for item in args.runs:
        name, _, path = item.partition("=")
        if not name or not path:
            parser.error(f"expected NAME=RUN_DIR, got {item!r}")
        result[name] = {"run_dir": path, **diagnose(Path(path), args.num, digits)}
        row = result[name]
        print(
            f"{name:28} label acc real {row['label_accuracy_real']:.3f} fake {row['label_accuracy_fake']:.3f}"
            f"  AUC(judge right) {row['auc_judge_correct']:.3f}  shape eff {row['shape_effectiveness']:.3f}",
            flush=True,
        )
    print(f"wrote {write_result(args.out, result)}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
