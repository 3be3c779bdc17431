"""The three biased MNIST datasets (PAPER.md §1.1) on a fake MNIST with the official sizes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cgn.data import NO_ATTRIBUTE, build_dataset, dataset_names, dataset_statistics
from cgn.data.base import digit_masks
from cgn.data.double_colored import DoubleColoredMNIST
from cgn.errors import ConfigError

NAMES = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]
SIZES = {
    ("colored_mnist", "train"): 60_000,
    ("colored_mnist", "test"): 10_000,
    ("double_colored_mnist", "train"): 50_000,
    ("double_colored_mnist", "test"): 10_000,
    ("wildlife_mnist", "train"): 50_000,
    ("wildlife_mnist", "test"): 10_000,
}


@pytest.fixture(scope="module")
def datasets(data_root, fake_mnist):
    cache = {}

    def get(name, split="train", seed=0):
        key = (name, split, seed)
        if key not in cache:
            cache[key] = build_dataset(name, split, seed, data_root, mnist=fake_mnist)
        return cache[key]

    return get


def digest(batch: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(batch):
        h.update(batch[key].contiguous().numpy().tobytes())
    return h.hexdigest()


def test_registry_lists_the_three_datasets():
    assert dataset_names() == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test", "test_official"])
def test_shapes_dtypes_and_ranges(datasets, name, split):
    ds = datasets(name, split)
    assert len(ds) == SIZES.get((name, split), 10_000)
    sample = ds[7]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, 32, 32) and set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
    assert sample["label"].dtype == torch.int64 and 0 <= int(sample["label"]) < 10
    batch = ds.batch(torch.arange(512))
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["image"].min() < -0.5 and batch["image"].max() > 0.5  # uses the whole range
    bg = batch["background_attr"]
    if name == "colored_mnist":
        assert (bg == NO_ATTRIBUTE).all()
        assert (batch["image"] * (1 - batch["mask"]) == -(1 - batch["mask"])).all()  # black background
    else:
        assert ((bg >= 0) & (bg < 10)).all()


@pytest.mark.parametrize("name", NAMES)
def test_train_attributes_follow_the_label(datasets, name):
    ds = datasets(name, "train")
    assert torch.equal(ds.attributes["foreground_attr"], ds.labels)
    if name != "colored_mnist":
        assert torch.equal(ds.attributes["background_attr"], ds.labels)


def chi_square_independent(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Pearson's test on the 10×10 contingency table at α = 0.001 (Wilson–Hilferty quantile)."""
    table = torch.bincount(a * 10 + b, minlength=100).double().reshape(10, 10)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    df, z = 81, 3.090  # z of the 0.999 quantile
    critical = df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3
    return chi2 < critical


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["test", "test_official"])
def test_test_attributes_are_independent_of_the_label(datasets, name, split):
    ds = datasets(name, split)
    fg, bg = ds.attributes["foreground_attr"], ds.attributes["background_attr"]
    assert chi_square_independent(ds.labels, fg)
    counts = torch.bincount(fg, minlength=10)
    assert counts.min() > 850 and counts.max() < 1150  # uniform over 10 000 samples
    if name != "colored_mnist":
        assert chi_square_independent(ds.labels, bg)
        assert chi_square_independent(fg, bg)


def test_the_independence_check_can_fail(datasets):
    ds = datasets("double_colored_mnist", "train")
    assert not chi_square_independent(ds.labels[:10_000], ds.attributes["foreground_attr"][:10_000])


def test_double_colored_noise_std_is_001(datasets):
    ds = datasets("double_colored_mnist", "test")
    batch = ds.batch(torch.arange(10_000))
    fg_mean = DoubleColoredMNIST.foreground_colors[batch["foreground_attr"]]  # (N, 3) in [0, 1]
    m = batch["mask"]
    fg_observed = ((batch["image"] + 1) / 2 * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1)  # (N, 3)
    residual = fg_observed - fg_mean
    has_digit = m.sum((1, 2, 3))[:, None] > 0
    interior = (fg_mean > 0.05) & (fg_mean < 0.95) & has_digit  # components not clamped at 0 or 1
    std = float(residual[interior].std())
    assert 0.009 < std < 0.011, std
    # one colour per image: constant over the digit's pixels
    spread = ((batch["image"] + 1) / 2 - fg_observed[:, :, None, None]).abs() * m
    assert float(spread.max()) < 1e-5


def test_mask_follows_the_binarisation_rule(fake_mnist):
    images = fake_mnist.train_images[:100]
    reference = (
        F.interpolate(torch.from_numpy(images).float()[:, None] / 255.0, size=(32, 32), mode="nearest")[:, 0] > 0.1
    )
    assert torch.equal(digit_masks(images), reference)
    edge = torch.zeros(1, 28, 28, dtype=torch.uint8)
    edge[0, :, :] = 25  # 25/255 = 0.098 is below the threshold, 26/255 above
    assert not digit_masks(edge.numpy()).any()
    assert digit_masks((edge + 1).numpy()).all()


@pytest.mark.parametrize("name", NAMES)
def test_images_compose_mask_over_appearances(datasets, name):
    ds = datasets(name, "test")
    batch = ds.batch(torch.arange(64))
    assert torch.equal(batch["mask"][:, 0].bool(), ds.masks[:64])


def test_test_splits_are_frozen_and_train_jitter_is_per_epoch(datasets, data_root, fake_mnist):
    test = datasets("wildlife_mnist", "test")
    before = digest(test.batch(torch.arange(256)))
    test.set_epoch(3)
    assert digest(test.batch(torch.arange(256))) == before
    train = build_dataset("double_colored_mnist", "train", 0, data_root, mnist=fake_mnist)
    epoch0 = digest(train.batch(torch.arange(256)))
    train.set_epoch(1)
    assert digest(train.batch(torch.arange(256))) != epoch0
    train.set_epoch(0)
    assert digest(train.batch(torch.arange(256))) == epoch0


def test_seeds_change_the_test_draws(datasets):
    a, b = datasets("double_colored_mnist", "test", 0), datasets("double_colored_mnist", "test", 1)
    assert not torch.equal(a.attributes["foreground_attr"], b.attributes["foreground_attr"])


def test_colored_official_test_is_the_test_split(datasets):
    a, b = datasets("colored_mnist", "test"), datasets("colored_mnist", "test_official")
    assert digest(a.batch(torch.arange(1000))) == digest(b.batch(torch.arange(1000)))


def test_same_bytes_in_another_process(datasets, data_root):
    """A fresh interpreter (here: reading the fake cache from disk) gives identical bytes."""
    code = f"""
import hashlib, torch
from cgn.data import build_dataset
h = {{}}
for name in {NAMES!r}:
    ds = build_dataset(name, "test", 0, {str(data_root)!r})
    b = ds.batch(torch.arange(0, 10_000, 37))
    d = hashlib.sha256()
    for k in sorted(b):
        d.update(b[k].contiguous().numpy().tobytes())
    h[name] = d.hexdigest()
print(__import__("json").dumps(h))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    theirs = json.loads(out)
    for name in NAMES:
        assert theirs[name] == digest(datasets(name, "test").batch(torch.arange(0, 10_000, 37)))


def test_dataloader_workers_give_the_same_batches(datasets):
    ds = datasets("wildlife_mnist", "test")
    subset = torch.utils.data.Subset(ds, range(0, 1024))
    single = [digest(b) for b in DataLoader(subset, batch_size=64, num_workers=0)]
    multi = [digest(b) for b in DataLoader(subset, batch_size=64, num_workers=2)]
    assert single == multi


def test_getitem_matches_batch_and_checks_bounds(datasets):
    ds = datasets("double_colored_mnist", "test")
    sample, batch = ds[5], ds.batch([5])
    assert all(torch.equal(sample[k], batch[k][0]) for k in sample)
    assert torch.equal(ds[-1]["image"], ds[len(ds) - 1]["image"])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_unknown_name_and_split_are_clear_errors(data_root, fake_mnist):
    with pytest.raises(ConfigError, match="unknown dataset 'fashion_mnist'; choose one of: colored_mnist"):
        build_dataset("fashion_mnist", "train", 0, data_root, mnist=fake_mnist)
    with pytest.raises(ConfigError, match="has no split 'val'; choose one of: train, test, test_official"):
        build_dataset("wildlife_mnist", "val", 0, data_root, mnist=fake_mnist)


def test_statistics(datasets):
    stats = dataset_statistics(datasets("double_colored_mnist", "train"))
    assert stats["n"] == 50_000 and sum(stats["class_counts"]) == 50_000
    assert stats["foreground_matches_label"] == 1.0 and stats["background_matches_label"] == 1.0
    assert 0 < stats["mask_coverage"] < 1
