"""The three biased MNIST datasets, their sources, and a registry to build them by name."""

from __future__ import annotations

import os

import torch

from cgn.data.base import NO_ATTRIBUTE, BiasedMNIST
from cgn.data.colored import ColoredMNIST
from cgn.data.double_colored import DoubleColoredMNIST
from cgn.data.mnist import MNIST, load_mnist, prepare_mnist
from cgn.data.textures import load_textures, prepare_textures
from cgn.data.wildlife import WildlifeMNIST
from cgn.registry import Registry

DATASETS: Registry[type[BiasedMNIST]] = Registry("dataset")
for _cls in (ColoredMNIST, DoubleColoredMNIST, WildlifeMNIST):
    DATASETS.register(_cls.name)(_cls)


def dataset_names() -> list[str]:
    return DATASETS.names()


def build_dataset(
    name: str,
    split: str = "train",
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    *,
    mnist: MNIST | None = None,
) -> BiasedMNIST:
    """Build a biased MNIST dataset by name, e.g. ``build_dataset("wildlife_mnist", "test")``;
    its files come from ``data_root`` (default: ``$CGN_DATA`` or ``~/.cache/cgn``)."""
    return DATASETS.get(name)(split, seed, data_root, mnist=mnist)


def dataset_statistics(dataset: BiasedMNIST, chunk: int = 4096) -> dict[str, object]:
    """Counts, attribute–label agreement, mask coverage and pixel moments of a split."""
    labels, fg, bg = dataset.labels, dataset.attributes["foreground_attr"], dataset.attributes["background_attr"]
    total, total_sq, coverage = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0.0
    for start in range(0, len(dataset), chunk):
        batch = dataset.batch(torch.arange(start, min(start + chunk, len(dataset))))
        images = batch["image"].double()
        total += images.sum((0, 2, 3))
        total_sq += (images**2).sum((0, 2, 3))
        coverage += float(batch["mask"].sum())
    pixels = len(dataset) * dataset.image_size**2
    mean = total / pixels
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "n": len(dataset),
        "class_counts": torch.bincount(labels, minlength=10).tolist(),
        "foreground_matches_label": float((fg == labels).double().mean()),
        "background_matches_label": None if bg[0] == NO_ATTRIBUTE else float((bg == labels).double().mean()),
        "mask_coverage": coverage / pixels,
        "pixel_mean": [round(v, 4) for v in mean.tolist()],
        "pixel_std": [round(v, 4) for v in (total_sq / pixels - mean**2).sqrt().tolist()],
    }


__all__ = [
    "BiasedMNIST",
    "ColoredMNIST",
    "DoubleColoredMNIST",
    "WildlifeMNIST",
    "NO_ATTRIBUTE",
    "DATASETS",
    "build_dataset",
    "dataset_names",
    "dataset_statistics",
    "load_mnist",
    "prepare_mnist",
    "load_textures",
    "prepare_textures",
]
