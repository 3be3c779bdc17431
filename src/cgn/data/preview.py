"""``cgn data preview``: biased train samples above de-correlated test samples, labelled."""

from __future__ import annotations

import os

import torch
from PIL import Image

from cgn.data import NO_ATTRIBUTE, BiasedMNIST, build_dataset
from cgn.data.mnist import MNIST
from cgn.viz import image_sheet, stack_vertically


def _panel(dataset: BiasedMNIST, per_class: int, title: str) -> Image.Image:
    rows, captions = [], []
    for r in range(per_class):
        index = torch.stack([torch.nonzero(dataset.labels == c)[r, 0] for c in range(dataset.num_classes)])
        batch = dataset.batch(index)
        rows.append(batch["image"])
        captions.append(
            [
                _caption(y, f, b)
                for y, f, b in zip(batch["label"], batch["foreground_attr"], batch["background_attr"], strict=True)
            ]
        )
    return image_sheet(rows, captions=captions, title=title)


def _caption(label: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> str:
    text = f"y{int(label)} f{int(fg)}"
    return text if int(bg) == NO_ATTRIBUTE else f"{text} b{int(bg)}"


def preview(
    name: str,
    *,
    seed: int = 0,
    per_class: int = 3,
    root: str | os.PathLike | None = None,
    mnist: MNIST | None = None,
) -> Image.Image:
    """A labelled sheet: ``y`` = label (shape), ``f`` / ``b`` = foreground / background attribute."""
    train = build_dataset(name, "train", seed, root, mnist=mnist)
    test = build_dataset(name, "test", seed, root, mnist=mnist)
    return stack_vertically(
        [
            _panel(train, per_class, f"{name} train (biased: attributes follow the label)"),
            _panel(test, per_class, f"{name} test (de-correlated: attributes independent of the label)"),
        ]
    )
