"""Disentanglement metrics (cgn.evaluation) and their digit classifier, on fake MNIST + real textures."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors import safe_open

from cgn.config import ModelConfig
from cgn.data import build_dataset
from cgn.data.colored import ColoredMNIST
from cgn.data.double_colored import DoubleColoredMNIST
from cgn.data.mnist import cache_path
from cgn.data.textures import load_textures
from cgn.data.wildlife import prepare_texture_bank
from cgn.digit_classifier import DigitClassifier, classifier_path, load_or_train_digit_classifier
from cgn.evaluation import (
    BY_CLASS,
    FIDELITY,
    METRICS,
    _Tally,
    appearance_classifiers,
    color_classifier,
    confidence_intervals,
    evaluate_cgn,
    evaluate_real_data,
    frechet_distance,
    map_fidelity,
    mask_statistics,
    random_crops,
    real_features,
    seam_contrast,
    shape_leakage,
    stretched_grey,
    texture_classifier,
    to_grey,
    wilson_interval,
)
from cgn.model import CGN
from cgn.seeding import make_generator

NAMES = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]


@pytest.fixture(scope="module")
def digits(data_root) -> DigitClassifier:
    """A digit classifier trained on 1000 fake masks: fast, and enough to exercise the pipeline."""
    return load_or_train_digit_classifier(data_root, seed=0, max_train=1000, epochs=1)


@pytest.fixture()
def own_root(tmp_path, data_root):
    """A fresh data folder with the fake MNIST cache, for tests that write the classifier cache."""
    shutil.copyfile(cache_path(data_root), cache_path(tmp_path))
    return tmp_path


# -- the appearance judges on real colours and textures --------------------------------------
@pytest.mark.parametrize("cls", [ColoredMNIST, DoubleColoredMNIST])
def test_color_classifier_recognises_the_palette_exactly(cls):
    colors = cls.foreground_colors  # (10, 3) in [0, 1]
    maps = colors[:, :, None, None].expand(10, 3, 32, 32) * 2 - 1  # (10, 3, 32, 32) in [-1, 1]
    assert torch.equal(color_classifier(colors).predict(maps), torch.arange(10))


@pytest.mark.parametrize("name", ["colored_mnist", "double_colored_mnist"])
def test_color_classifiers_on_real_jittered_colours(data_root, fake_mnist, name):
    ds = build_dataset(name, "test", 0, data_root, mnist=fake_mnist)
    index = torch.arange(3000)
    attributes = {k: v[index] for k, v in ds.attributes.items()}
    masks = ds.masks[index]
    foreground_judge, background_judge = appearance_classifiers(name, data_root)
    foreground = ds.render(torch.ones_like(masks), attributes)  # (B, 3, 32, 32) the full-frame digit colour
    accuracy = (foreground_judge.predict(foreground) == attributes["foreground_attr"]).double().mean()
    # colored MNIST's jitter (std 0.14) puts ~2% of colours nearer another mean: the Bayes limit
    assert accuracy >= (0.97 if name == "colored_mnist" else 0.999)
    if name == "colored_mnist":
        assert background_judge is None
    else:
        background = ds.render(torch.zeros_like(masks), attributes)
        assert (background_judge.predict(background) == attributes["background_attr"]).double().mean() >= 0.999


@pytest.mark.parametrize("kind", ["object", "background"])
def test_texture_classifier_on_fresh_real_crops(data_root, kind):
    bank = prepare_texture_bank(load_textures(data_root)[kind])  # (10, 156, 156, 3)
    judge = texture_classifier(bank)
    labels = torch.arange(10).repeat_interleave(200)
    crops = random_crops(bank, labels, make_generator(123, "fresh crops"))  # (2000, 3, 32, 32), unseen offsets
    assert (judge.predict(crops) == labels).double().mean() >= 0.98
    assert judge.prototypes.shape[0] == 10 * 16


def test_texture_classifier_is_deterministic(data_root):
    bank = prepare_texture_bank(load_textures(data_root)["object"])
    a, b = texture_classifier(bank, crops_per_texture=100), texture_classifier(bank, crops_per_texture=100)
    assert torch.equal(a.prototypes, b.prototypes) and torch.equal(a.scale, b.scale)


# -- masks and leakage ------------------------------------------------------------------------
def test_mask_statistics_on_hand_made_masks():
    values = torch.tensor([0.0, 0.05, 0.0999, 0.1, 0.5, 0.9, 0.9001, 1.0])  # 5 of 8 are < 0.1 or > 0.9
    mean, binary = mask_statistics(values.view(2, 1, 2, 2))
    assert mean == pytest.approx(float(values.double().mean()), abs=1e-12)
    assert binary == 5 / 8
    assert mask_statistics(torch.ones(3, 1, 4, 4)) == (1.0, 1.0)
    assert mask_statistics(torch.full((3, 1, 4, 4), 0.5)) == (0.5, 0.0)
    half = torch.zeros(1, 1, 4, 4)
    half[..., :2] = 1.0
    assert mask_statistics(half) == (0.5, 1.0)


def test_mask_diversity_sees_collapsed_and_varied_masks():
    labels = torch.tensor([0, 0, 1, 1, 1, 1])  # class 1 pairs its masks 2 with 4 and 3 with 5
    masks = torch.zeros(6, 1, 4, 4)
    masks[..., :2] = 1.0
    collapsed = _Tally()
    collapsed.add_masks(masks, labels)
    assert collapsed.result()["mask_diversity"] == 0.0
    masks[1] = 1 - masks[1]  # class 0's two masks now differ everywhere, class 1's not at all
    varied = _Tally()
    varied.add_masks(masks, labels)
    assert varied.result()["mask_diversity"] == 0.5


def test_grey_maps_lie_in_the_unit_interval():
    maps = torch.rand(4, 3, 8, 8) * 2 - 1
    for grey in (to_grey(maps), stretched_grey(maps)):
        assert grey.shape == (4, 1, 8, 8) and grey.min() >= 0 and grey.max() <= 1
    assert torch.allclose(to_grey(torch.ones(1, 3, 2, 2)), torch.ones(1, 1, 2, 2))
    assert torch.allclose(stretched_grey(maps).amax((1, 2, 3)), torch.ones(4))


def test_constant_maps_leak_no_shape(digits):
    """Label-coloured but shape-free maps score exactly chance on balanced labels."""
    labels = torch.arange(200) % 10
    colors = torch.rand(10, 3, generator=make_generator(0, "colours"))[labels] * 2 - 1  # one colour per label
    maps = colors[:, :, None, None].expand(200, 3, 32, 32)  # (200, 3, 32, 32)
    assert shape_leakage(digits, maps, labels) == pytest.approx(0.1, abs=1e-12)


# -- the digit classifier -----------------------------------------------------------------------
def test_digit_classifier_is_cached_with_its_accuracy(own_root):
    first = load_or_train_digit_classifier(own_root, seed=3, max_train=300, epochs=1)
    path = classifier_path(own_root)
    assert path.is_file()
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["train_images"] == "300" and metadata["seed"] == "3"
    assert float(metadata["heldout_accuracy"]) == first.heldout_accuracy
    assert 0.0 <= first.heldout_accuracy <= 1.0
    mtime = path.stat().st_mtime_ns
    again = load_or_train_digit_classifier(own_root, seed=3, max_train=300, epochs=1)
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not list(own_root.glob(".*.tmp"))  # the atomic write left no temporary file


def test_digit_classifier_training_is_deterministic_and_retrains_on_mismatch(own_root):
    first = load_or_train_digit_classifier(own_root, seed=1, max_train=300, epochs=1)
    classifier_path(own_root).unlink()
    second = load_or_train_digit_classifier(own_root, seed=1, max_train=300, epochs=1)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = load_or_train_digit_classifier(own_root, seed=2, max_train=300, epochs=1)  # other seed: retrained
    assert other.metadata["seed"] == "2"
    assert not torch.equal(other.head[-1].weight, first.head[-1].weight)


def test_a_corrupt_classifier_cache_is_retrained(own_root):
    classifier_path(own_root).write_bytes(b"not a safetensors file")
    model = load_or_train_digit_classifier(own_root, seed=0, max_train=200, epochs=1)
    assert model.heldout_accuracy is not None
    assert load_or_train_digit_classifier(own_root, seed=0, max_train=200, epochs=1).metadata["train_images"] == "200"


# -- the two entry points -----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_evaluate_cgn_on_a_tiny_random_cgn(data_root, digits, name):
    torch.manual_seed(0)
    model = CGN(ModelConfig(ngf=8, latent_dim=8)).train()
    kwargs = dict(num_samples=130, seed=5, data_root=data_root, batch_size=64, digit_classifier=digits)
    metrics = evaluate_cgn(model, name, **kwargs)
    assert list(metrics) == list(METRICS)
    for key, value in metrics.items():
        if name == "colored_mnist" and key == "background_effectiveness":
            assert value is None
        else:
            assert isinstance(value, float) and 0.0 <= value <= 1.0 and math.isfinite(value), (key, value)
    assert model.training  # the caller's mode is restored
    assert evaluate_cgn(model, name, **kwargs) == metrics  # seeded: the same numbers again
    narrow = evaluate_cgn(model, name, **kwargs, shape_noise_scale=1e-6)
    assert narrow["mask_mean"] != metrics["mask_mean"]  # the scale reaches the shape mechanism only:
    assert narrow["texture_effectiveness"] == metrics["texture_effectiveness"]  # same texture draws


def test_evaluate_cgn_trains_the_digit_classifier_on_first_use(own_root, monkeypatch):
    """Without a classifier argument, the cached one of the data folder is used (trained first)."""
    import cgn.evaluation as evaluation

    calls = []

    def small(root, seed=0):
        calls.append((root, seed))
        return load_or_train_digit_classifier(root, seed, max_train=200, epochs=1)

    monkeypatch.setattr(evaluation, "load_or_train_digit_classifier", small)
    metrics = evaluate_cgn(CGN(ModelConfig(ngf=8, latent_dim=8)), "colored_mnist", num_samples=20, data_root=own_root)
    assert calls == [(own_root, 0)] and classifier_path(own_root).is_file()
    assert metrics["background_effectiveness"] is None


@pytest.mark.parametrize("name", NAMES)
def test_real_data_scores_are_those_of_a_perfect_cgn(data_root, fake_mnist, digits, name):
    metrics = evaluate_real_data(
        name, data_root=data_root, max_samples=1500, digit_classifier=digits, mnist=fake_mnist, batch_size=500
    )
    assert list(metrics) == list(METRICS)
    assert metrics["mask_binary_share"] == 1.0
    assert 0.0 < metrics["mask_mean"] < 1.0
    assert 0.05 < metrics["mask_diversity"] < 0.5  # different digits of one class differ
    assert metrics["texture_effectiveness"] >= 0.97
    if name == "colored_mnist":
        assert metrics["background_effectiveness"] is None and metrics["shape_leakage_background"] is None
    else:
        assert metrics["background_effectiveness"] >= 0.98
    if name != "wildlife_mnist":  # flat colour maps: exactly the same classifier input for every label
        assert metrics["shape_leakage_foreground"] == pytest.approx(0.1, abs=0.03)


def test_unknown_dataset_is_a_clear_error(digits):
    from cgn.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown dataset"):
        evaluate_cgn(CGN(ModelConfig(ngf=8, latent_dim=8)), "imagenet", num_samples=4, digit_classifier=digits)


def test_tally_counts_hits_per_label():
    tally = _Tally()
    tally.add("shape", torch.tensor([1, 1, 2, 0]), torch.tensor([1, 2, 2, 0]))
    tally.add("shape", torch.tensor([3, 0]), torch.tensor([1, 0]))
    by_class = tally.per_label()
    assert by_class["shape_effectiveness_by_class"] == [1.0, 0.5, 0.5] + [None] * 7
    assert by_class["texture_effectiveness_by_class"] is None  # never judged
    tally.add_masks(torch.ones(6, 1, 2, 2), torch.tensor([1, 2, 2, 0, 1, 0]))
    assert tally.result()["shape_effectiveness"] == pytest.approx(4 / 6)  # the mean of the same hits


@pytest.mark.parametrize("name", ["colored_mnist", "double_colored_mnist"])
def test_evaluate_cgn_by_class(data_root, digits, name):
    torch.manual_seed(0)
    model = CGN(ModelConfig(ngf=8, latent_dim=8))
    kwargs = dict(num_samples=300, seed=1, data_root=data_root, batch_size=128, digit_classifier=digits)
    plain = evaluate_cgn(model, name, **kwargs)
    metrics = evaluate_cgn(model, name, **kwargs, by_class=True)
    assert list(metrics) == [*METRICS, *BY_CLASS]
    assert {k: metrics[k] for k in METRICS} == plain  # the same draws, the same scalars
    for key in ("shape_effectiveness_by_class", "texture_effectiveness_by_class", "shape_leakage_foreground_by_class"):
        assert len(metrics[key]) == 10 and all(0.0 <= v <= 1.0 for v in metrics[key])  # 300 draws hit every label
    # the leakage's mean over draws is its per-label rates weighted by how often each label came
    leak = metrics["shape_leakage_foreground_by_class"]
    assert min(leak) <= metrics["shape_leakage_foreground"] <= max(leak)
    assert len(metrics["shape_leakage_background_by_class"]) == 10  # a black background is still judged
    if name == "colored_mnist":  # no background attribute
        assert metrics["background_effectiveness_by_class"] is None
    else:
        assert len(metrics["background_effectiveness_by_class"]) == 10


# -- fidelity -------------------------------------------------------------------------------------
def test_frechet_distance_exact_cases():
    """A sample against itself is 0, against a shifted copy the squared shift, against a copy
    scaled by s around the origin ‖(1 − s) μ‖² + (1 − s)² tr Σ (both Gaussians' formulas)."""
    torch.manual_seed(0)
    a = torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64) + 3.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 2.0], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-8)
    s = 0.25
    expected = (1 - s) ** 2 * (float(a.mean(0).square().sum()) + float(torch.cov(a.T).trace()))
    assert frechet_distance(a, s * a) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a[:, :1], a[:, :1] + 2) == pytest.approx(4.0)  # one feature


@pytest.mark.parametrize("name", NAMES)
def test_real_maps_are_as_faithful_as_real_maps(data_root, digits, name):
    """The real training split's maps against the test split's: Fréchet distance near 0 and a
    spread near 1 for every mechanism; the test split against itself exactly 0 and 1."""
    root = data_root.resolve()
    test, train = real_features(name, root, digits), real_features(name, root, digits, "train", 5000)
    same = map_fidelity(test, test, by_class=True)
    assert list(same) == [*FIDELITY, *(f"{k}_by_class" for k in FIDELITY)]
    assert same["texture_frechet"] == pytest.approx(0.0, abs=1e-6)
    assert same["shape_frechet"] == pytest.approx(0.0, abs=1e-6)
    other = map_fidelity(train, test)
    for mechanism in ("shape", "texture", "background"):
        if name == "colored_mnist" and mechanism == "background":
            assert test["background"] is None and other["background_frechet"] is None
            continue
        assert same[f"{mechanism}_spread"] == pytest.approx(1.0)
        assert 0.8 < other[f"{mechanism}_spread"] < 1.25, mechanism
    assert 0.0 <= other["texture_frechet"] < 1.0
    # a few per cent of the masks' own variance: train and test digits are different digits
    assert 0.0 <= other["shape_frechet"] < 0.05 * float(test["shape"][0].double().var(0).sum())


@pytest.mark.parametrize("name", ["colored_mnist", "wildlife_mnist"])
def test_evaluate_cgn_fidelity(data_root, digits, name):
    torch.manual_seed(0)
    model = CGN(ModelConfig(ngf=8, latent_dim=8))
    kwargs = dict(num_samples=200, seed=1, data_root=data_root, batch_size=128, digit_classifier=digits)
    plain = evaluate_cgn(model, name, **kwargs)
    metrics = evaluate_cgn(model, name, **kwargs, fidelity=True, by_class=True)
    assert list(metrics) == [*METRICS, *BY_CLASS, *FIDELITY, *(f"{k}_by_class" for k in FIDELITY)]
    assert {k: metrics[k] for k in METRICS} == plain  # the same draws
    root = data_root.resolve()
    real = map_fidelity(real_features(name, root, digits, "train", 5000), real_features(name, root, digits))
    for mechanism in ("shape", "texture") if name == "colored_mnist" else ("shape", "texture", "background"):
        # an untrained CGN's maps are far from real ones
        assert metrics[f"{mechanism}_frechet"] > 10 * real[f"{mechanism}_frechet"], mechanism
        assert len(metrics[f"{mechanism}_frechet_by_class"]) == 10 and metrics[f"{mechanism}_spread"] > 0
    if name == "colored_mnist":
        assert metrics["background_frechet"] is None


# -- confidence intervals -------------------------------------------------------------------------
def test_wilson_interval_matches_textbook_values():
    assert wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # no collapse to a point
    assert wilson_interval(1.0, 10_000) == pytest.approx((0.99962, 1.0), abs=1e-5)
    low, high = wilson_interval(0.9995, 10_000)  # 5 misses in 10,000
    assert (low, high) == pytest.approx((0.99883, 0.99979), abs=1e-5)
    assert wilson_interval(0.9995, 100_000)[1] - wilson_interval(0.9995, 100_000)[0] < (high - low) / 3
    with pytest.raises(ValueError, match="at least one draw"):
        wilson_interval(0.5, 0)


def test_confidence_intervals_cover_the_rates_only():
    metrics = {key: None for key in METRICS} | {
        "shape_effectiveness": 0.9,
        "texture_effectiveness": 1.0,
        "mask_mean": 0.2,
        "shape_leakage_foreground": 0.1,
    }
    intervals = confidence_intervals(metrics, 1000)
    assert set(intervals) == {"shape_effectiveness", "texture_effectiveness", "shape_leakage_foreground"}
    for key, (low, high) in intervals.items():
        assert 0.0 <= low <= metrics[key] <= high <= 1.0


def test_seam_contrast_tells_a_tiling_map_from_a_ramp():
    """A periodic pattern's wrap looks like any neighbour pair (1); a ramp's jumps (31 steps)."""
    grid = torch.arange(32.0) / 32
    periodic = torch.sin(2 * torch.pi * (grid[:, None] + 2 * grid[None, :])).expand(2, 3, 32, 32)
    assert seam_contrast(periodic) == pytest.approx(1.0, rel=1e-3)
    ramp = (grid[:, None] + grid[None, :]).expand(2, 3, 32, 32)
    assert seam_contrast(ramp) == pytest.approx(31.0, rel=1e-3)
    shifted = torch.roll(periodic, shifts=(5, 9), dims=(2, 3))
    assert seam_contrast(shifted) == pytest.approx(seam_contrast(periodic), rel=1e-4)
