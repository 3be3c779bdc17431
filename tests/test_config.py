"""Configs: TOML files, typed overrides, one-line errors, the paper's settings."""

from __future__ import annotations

import pytest

from cgn.config import CGNConfig, load_config, paper_config
from cgn.errors import ConfigError
from tests.conftest import REPO

DATASETS = ["colored_mnist", "double_colored_mnist", "wildlife_mnist"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_config_files_hold_the_paper_settings(dataset):
    assert load_config(REPO / "configs" / f"{dataset}.toml") == paper_config(dataset)


def test_paper_table():
    wildlife = paper_config("wildlife_mnist")
    assert (wildlife.model.discriminator, wildlife.model.ndf, wildlife.model.init_type) == ("conv", 32, "normal")
    assert wildlife.model.init_gain == 0.03 and wildlife.loss.mask_weight == 0.3
    assert wildlife.loss.style_weights == (0.01, 0.05, 0.0, 0.01)
    colored = paper_config("colored_mnist")
    assert colored.train.batch_size == 16 and colored.train.lr == 2e-4 and colored.train.betas == (0.5, 0.999)
    assert colored.train.epochs == 15 and colored.model.latent_dim == 32 and colored.model.ngf == 32


def test_overrides_are_typed():
    config = load_config(
        REPO / "configs" / "debug.toml", ["train.batch_size=64", "train.dataset=wildlife_mnist", "train.lr=1e-3"]
    )
    assert config.train.batch_size == 64 and config.train.dataset == "wildlife_mnist" and config.train.lr == 1e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batchsize=4", "unknown config key 'train.batchsize'; did you mean 'train.batch_size'?"),
        ("train.batch_size=1.5", "train.batch_size must be int, not float"),
        ("train.batch_size=abc", "train.batch_size must be int, not str"),
        ("loss.style_weights=[1, 2]", "loss.style_weights needs 4 values"),
        ("train.betas=[0.5]", "train.betas must have 2 values, not 1"),
        ("train.betas=[0.5, 1.0]", "train.betas must lie in [0, 1)"),
        ("train.steps=-3", "train.steps must not be negative"),
        ("train.epochs=-1", "train.epochs must not be negative"),
        ("loss.mask_weight=-0.1", "loss.mask_weight must not be negative"),
        ("loss.adversarial_weight=-1", "loss.adversarial_weight must not be negative"),
        ("loss.style_weights=[0.1, -0.1, 0, 0]", "loss.style_weights must not be negative"),
        (
            "model.discriminator=mlp",
            "unknown discriminator 'mlp'; choose one of: conv, conv_projection, linear, linear_projection",
        ),
        ("model.shape_discriminator=cnn", "model.shape_discriminator must be one of conv, conv_projection, linear,"),
        ("loss.shape_view_weight=-1", "loss.shape_view_weight must not be negative"),
        ("loss.texture_mode_seeking_weight=-1", "loss.texture_mode_seeking_weight must not be negative"),
        (
            "loss.shape_view_distance=cosine",
            "loss.shape_view_distance must be 'euclidean', 'mahalanobis' or 'two_gaussian'",
        ),
        ("loss.shape_view_variance_floor=0", "loss.shape_view_variance_floor must be positive"),
        ("loss.shape_view_gradient=texture", "loss.shape_view_gradient must be 'image' or 'mask'"),
        ("loss.mismatch_weight=-1", "loss.mismatch_weight must not be negative"),
        ("loss.shape_view_mismatch_weight=-1", "loss.shape_view_mismatch_weight must not be negative"),
        ("loss.shape_view_mismatch_weight=1", "loss.shape_view_mismatch_weight needs the shape critic"),
        ("loss.mismatch_start=1", "loss.mismatch_start must lie in"),
        ("loss.r1_weight=-0.5", "loss.r1_weight must not be negative"),
        ("loss.r1_every=0", "loss.r1_every must be positive"),
        ("loss.label_info_weight=-1", "loss.label_info_weight must not be negative"),
        ("loss.label_info_view=image", "loss.label_info_view must be 'map' or 'visible'"),
        ("loss.label_info_start=1", "loss.label_info_start must lie in [0, 1)"),
        ("model.upsample_conv=transposed", "model.upsample_conv must be 'interpolate' or 'phase'"),
        ("model.map_padding=reflect", "model.map_padding must be 'zeros' or 'circular'"),
        ("train.dataset=svhn", "unknown dataset 'svhn'"),
        ("train.precision=fp16", "train.precision must be 'fp32', 'bf16' or 'auto'"),
        ("nonsense", "must look like section.key=value"),
        ("optim.lr=1", "unknown config key 'optim'"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_circular_map_padding_needs_the_cgn_mechanisms():
    with pytest.raises(ConfigError, match="model.generator='cgan' has none"):
        load_config(None, ["model.generator=cgan", "model.map_padding=circular"])
    with pytest.raises(ConfigError, match="model.generator='cgan' has none"):
        load_config(None, ["model.generator=cgan", "loss.label_info_weight=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nbatch_size = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_round_trip_through_dict():
    config = paper_config("wildlife_mnist", train={"steps": 7})
    assert CGNConfig.from_dict(config.to_dict()) == config


def test_saved_configs_without_newer_options_still_match():
    config = load_config(REPO / "configs" / "debug.toml")
    saved = config.to_dict()
    assert config.matches(saved)
    del saved["loss"]["mode_seeking_weight"]  # a config.json written before the option existed
    assert config.matches(saved)
    assert not config.override("loss.mode_seeking_weight=0.1").matches(saved)
    saved["loss"]["no_such_key"] = 1
    assert not config.matches(saved)
