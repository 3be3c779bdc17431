"""The shared machinery of the biased MNIST datasets (PAPER.md §1.1).

A sample is a binary digit mask composed over a foreground and a background appearance:
``image = mask * foreground + (1 - mask) * background``. On the biased ``train`` split both
appearances follow the label; on the de-correlated test splits their attribute indices are
drawn uniformly and independently of the label.

Randomness is explicit. Every per-sample random quantity (attribute indices, colour noise,
texture crops) is drawn for the whole split at once from a generator seeded by
``(seed, dataset, split, epoch)`` and stored, so ``__getitem__`` is pure indexing: the same
seed gives byte-identical samples in every process and DataLoader worker. Test splits are
frozen (always epoch 0); the train split redraws its jitter for each epoch (``set_epoch``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from cgn.data.mnist import MNIST, load_mnist
from cgn.errors import ConfigError
from cgn.seeding import make_generator

IMAGE_SIZE = 32
NUM_CLASSES = 10
NO_ATTRIBUTE = -1  # the background attribute of datasets without one (colored MNIST)
BINARISE_THRESHOLD = 0.1

Attributes = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SplitSpec:
    """Which MNIST images a split uses, and whether its attributes follow the label."""

    mnist_part: str  # "train" or "test": the official MNIST part
    start: int
    stop: int
    decorrelated: bool
    stream: str | None = None  # draw attributes as this split does (default: its own name)


# double-colored and Wildlife MNIST: train on MNIST-train [0, 50000), test on [50000, 60000).
HELD_OUT_SPLITS = {
    "train": SplitSpec("train", 0, 50_000, decorrelated=False),
    "test": SplitSpec("train", 50_000, 60_000, decorrelated=True),
    "test_official": SplitSpec("test", 0, 10_000, decorrelated=True),
}


def digit_masks(images: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(N, 28, 28) uint8 digits → (N, size, size) bool masks.

    Nearest-neighbour resize as ``F.interpolate(mode="nearest")`` does it (source index
    ``floor(i * 28 / size)``), then binarise at ``> 0.1`` of the full intensity.
    """
    src = (np.arange(size) * images.shape[1]) // size
    resized = images[:, src][:, :, src]  # (N, size, size)
    return torch.from_numpy(resized.astype(np.float32) / 255.0 > BINARISE_THRESHOLD)


def hex_to_rgb(color: str) -> tuple[float, float, float]:
    """'#rrggbb' → (r, g, b) in [0, 1]."""
    value = color.lstrip("#")
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


class BiasedMNIST(Dataset):
    """Base class: subclasses set ``name``, ``splits`` and implement the two hooks."""

    name: ClassVar[str]
    splits: ClassVar[dict[str, SplitSpec]]
    has_background_attribute: ClassVar[bool] = True
    num_classes: ClassVar[int] = NUM_CLASSES
    image_size: ClassVar[int] = IMAGE_SIZE

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        root: str | os.PathLike | None = None,
        *,
        mnist: MNIST | None = None,
    ) -> None:
        if split not in self.splits:
            raise ConfigError(f"{self.name} has no split {split!r}; choose one of: {', '.join(self.splits)}")
        spec = self.splits[split]
        images, labels = (mnist if mnist is not None else load_mnist(root)).split(spec.mnist_part)
        images, labels = images[spec.start : spec.stop], labels[spec.start : spec.stop]
        self.split = split
        self.seed = int(seed)
        self.decorrelated = spec.decorrelated
        self.stream = spec.stream or split
        self.masks = digit_masks(images)  # (N, 32, 32) bool
        self.labels = torch.from_numpy(labels.astype(np.int64))  # (N,)
        self.epoch: int | None = None
        self.attributes: Attributes = {}
        self.set_epoch(0)

    # -- hooks ------------------------------------------------------------------------------
    def draw_appearance(self, fg: torch.Tensor, bg: torch.Tensor, generator: torch.Generator) -> Attributes:
        """Per-sample appearance parameters (colour noise, crop offsets) for all samples."""
        raise NotImplementedError

    def render(self, masks: torch.Tensor, attributes: Attributes) -> torch.Tensor:
        """(B, 32, 32) bool masks + per-sample attributes → (B, 3, 32, 32) images in [-1, 1]."""
        raise NotImplementedError

    # -- randomness -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Redraw the train split's jitter for ``epoch``; test splits stay frozen."""
        epoch = 0 if self.decorrelated else int(epoch)
        if epoch == self.epoch:
            return
        generator = make_generator(self.seed, self.name, self.stream, epoch)
        n = len(self.labels)
        if self.decorrelated:
            fg = torch.randint(0, self.num_classes, (n,), generator=generator)
            bg = torch.randint(0, self.num_classes, (n,), generator=generator)
        else:
            fg, bg = self.labels.clone(), self.labels.clone()
        if not self.has_background_attribute:
            bg = torch.full((n,), NO_ATTRIBUTE, dtype=torch.long)
        self.attributes = {"foreground_attr": fg, "background_attr": bg, **self.draw_appearance(fg, bg, generator)}
        self.epoch = epoch

    # -- access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (vectorised); the fast path for training loops."""
        index = torch.as_tensor(index, dtype=torch.long)
        attributes = {k: v[index] for k, v in self.attributes.items()}
        masks = self.masks[index]  # (B, 32, 32)
        return {
            "image": self.render(masks, attributes),  # (B, 3, 32, 32) in [-1, 1]
            "label": self.labels[index],
            "foreground_attr": attributes["foreground_attr"],
            "background_attr": attributes["background_attr"],
            "mask": masks[:, None].float(),  # (B, 1, 32, 32) in {0, 1}
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {self.name}/{self.split} of length {n}")
        return {k: v[0] for k, v in self.batch([i % n]).items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Used by DataLoader for batched fetching: one vectorised call per batch."""
        batch = self.batch(indices)
        return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, seed={self.seed}, n={len(self)})"


def compose_colors(masks: torch.Tensor, fg_rgb: torch.Tensor, bg_rgb: torch.Tensor) -> torch.Tensor:
    """Masks (B, H, W) with one colour per image (B, 3) in [0, 1] → images in [-1, 1]."""
    fg = fg_rgb[:, :, None, None] * 2 - 1
    bg = bg_rgb[:, :, None, None] * 2 - 1
    return torch.where(masks[:, None], fg, bg)  # (B, 3, H, W)


def jittered(means: torch.Tensor, index: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Colour ``means[index]`` plus N(0, std²) per RGB component, clamped to [0, 1]."""
    noise = torch.randn((len(index), 3), generator=generator) * std
    return (means[index] + noise).clamp(0.0, 1.0)
