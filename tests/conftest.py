"""Shared fixtures: a fake MNIST with the official split sizes, and the texture mirror.

Tests never download: MNIST is replaced by random rectangles with balanced labels, and the
Wildlife textures come from the data mirror (``$CGN_DATA_MIRROR``, default ../shared/data).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cgn.data.mnist import MNIST, cache_path
from cgn.data.textures import prepare_textures

REPO = Path(__file__).resolve().parents[1]


def mirror() -> Path:
    return Path(os.environ.get("CGN_DATA_MIRROR") or REPO.parent / "shared" / "data")


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images of one random bright rectangle each, and balanced labels."""
    rng = np.random.default_rng(seed)
    r0, c0 = rng.integers(2, 12, (2, n, 1, 1))
    r1, c1 = r0 + rng.integers(6, 14, (2, n, 1, 1))
    i = np.arange(28)
    inside = (i[:, None] >= r0) & (i[:, None] < r1) & (i[None, :] >= c0) & (i[None, :] < c1)
    images = (inside * rng.integers(0, 256, (n, 28, 28))).astype(np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="session")
def fake_mnist() -> MNIST:
    return MNIST(*fake_digits(60_000, 1), *fake_digits(10_000, 2))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory, fake_mnist) -> Path:
    """A data folder with the fake MNIST cache and the verified textures."""
    root = tmp_path_factory.mktemp("cgn-data")
    np.savez(cache_path(root), **fake_mnist.__dict__)
    source = mirror() / "wildlife_textures"
    if not source.is_dir():
        pytest.skip(f"the texture mirror {source} is missing; set CGN_DATA_MIRROR")
    prepare_textures(root, source=source, download=False)
    return root
