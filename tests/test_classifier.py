"""The paper's classifier, its training loop, mixed sources and IRM."""

from __future__ import annotations

import pytest
import torch

from cgn.classifier import (
    ClassifierConfig,
    MixedSource,
    MNISTClassifier,
    Subset,
    accuracy,
    colour_typicality_environments,
    irm_penalty,
    train_classifier,
)
from cgn.data import build_dataset
from cgn.errors import ConfigError


def test_the_paper_cnn_maps_images_to_log_probabilities():
    model = MNISTClassifier()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)


def test_standardisation_makes_the_cnn_blind_to_contrast_and_brightness():
    torch.manual_seed(0)
    model = MNISTClassifier(standardize=True).eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    faint = 0.01 * x + torch.tensor([0.3, -0.2, 0.5])[:, None, None]  # 1 % contrast on a coloured base
    assert torch.allclose(model(x), model(faint), atol=1e-4)
    plain = MNISTClassifier().eval()  # the paper's CNN sees the difference
    assert not torch.allclose(plain(x), plain(faint), atol=1e-2)
    flat = torch.full((1, 3, 32, 32), 0.25)  # no contrast at all: finite output, no division by zero
    assert torch.isfinite(model(flat)).all()


@pytest.fixture(scope="module")
def colored(data_root):
    return {split: build_dataset("colored_mnist", split, 0, data_root) for split in ("train", "test")}


def test_training_learns_the_colour_shortcut_and_fails_the_decorrelated_test(colored):
    train = Subset(colored["train"], 1024)
    config = ClassifierConfig(epochs=3, batch_size=32)
    model, result = train_classifier(train, {"test": Subset(colored["test"], 1000)}, config, progress=False)
    # The fake digits carry no shape information, so colour is all there is to learn: the
    # train split is learned and the de-correlated test split stays near chance.
    assert result.train_acc > 60  # chance is 10
    assert result.eval_acc["test"] < 30
    assert result.images_per_s > 0 and result.config["epochs"] == 3
    assert accuracy(model, train) == pytest.approx(result.train_acc)


def test_training_is_seeded(colored):
    train = Subset(colored["train"], 256)
    runs = [train_classifier(train, {}, ClassifierConfig(epochs=1, seed=5), progress=False)[0] for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mixed_source_routes_indices(colored):
    first, second = Subset(colored["train"], 10), Subset(colored["test"], 20)
    mixed = MixedSource([first, second])
    assert len(mixed) == 30
    batch = mixed.batch([12, 3, 29])
    assert torch.equal(batch["image"][0], second.batch([2])["image"][0])
    assert torch.equal(batch["image"][1], first.batch([3])["image"][0])
    assert torch.equal(
        batch["label"],
        torch.stack([second.batch([2])["label"][0], first.batch([3])["label"][0], second.batch([19])["label"][0]]),
    )


def test_irm_environments_split_every_class_in_half(colored):
    train = Subset(colored["train"], 2000)
    env = colour_typicality_environments(train)
    labels = colored["train"].labels[:2000]
    for c in range(10):
        share = float(env[labels == c].float().mean())
        assert 0.4 < share <= 0.5


def test_irm_penalty_and_objective():
    labels = torch.tensor([0, 1, 1, 0])
    perfect = torch.log_softmax(torch.tensor([[9.0, -9], [-9, 9], [-9, 9], [9, -9]]), 1)
    assert float(irm_penalty(torch.nn.functional.pad(perfect, (0, 8), value=-30), labels).detach()) < 1e-6
    unsure = torch.zeros(4, 10, requires_grad=True)
    assert float(irm_penalty(unsure, labels).detach()) == 0.0  # uniform logits: scaling changes nothing
    confident_wrong = torch.log_softmax(torch.tensor([[-3.0, 3], [3, -3], [3, -3], [-3, 3]]), 1)
    assert float(irm_penalty(torch.nn.functional.pad(confident_wrong, (0, 8), value=-30), labels).detach()) > 1


def test_irm_training_runs_and_needs_environments(colored):
    train = Subset(colored["train"], 256)
    config = ClassifierConfig(epochs=2, objective="irm", irm_anneal_epochs=1)
    with pytest.raises(ConfigError, match="environment"):
        train_classifier(train, {}, config, progress=False)
    _, result = train_classifier(train, {}, config, environments=colour_typicality_environments(train), progress=False)
    assert 0 <= result.train_acc <= 100


def test_bad_classifier_configs():
    bad_values = (
        {"objective": "dro"},
        {"epochs": 0},
        {"precision": "fp8"},
        {"lr": 0.0},
        {"lr_gamma": 1.5},
        {"irm_penalty_weight": -1.0},
    )
    for bad in bad_values:
        with pytest.raises(ConfigError):
            ClassifierConfig(**bad).validate()


def test_the_config_switches_standardisation_on(colored):
    config = ClassifierConfig(epochs=1, batch_size=32, standardize=True)
    model, result = train_classifier(Subset(colored["train"], 64), {}, config, progress=False)
    assert model.standardize and result.config["standardize"] is True
