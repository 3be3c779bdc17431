"""Precision "auto": bf16 only where the device has native bf16 kernels, and every record states
what was computed."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import pytest
import torch

from cgn import precision
from cgn.classifier import ClassifierConfig
from cgn.config import load_config
from cgn.counterfactuals import GenerationSpec, generate_counterfactuals
from cgn.errors import ConfigError
from cgn.reproduce import QUICK, Reproduction, Schedule
from cgn.trainer import Trainer
from tests.conftest import REPO
from tests.test_counterfactuals import checkpoint


@pytest.fixture(params=[True, False], ids=["native_bf16", "no_bf16"])
def native(request, monkeypatch):
    """Pretend the CPU has (or lacks) native bf16 kernels, whatever this machine has."""
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: request.param)
    return request.param


def test_auto_picks_bf16_only_where_it_is_native(native):
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


def test_an_explicit_bf16_is_kept_and_warned_about_where_it_is_slow(monkeypatch, caplog):
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: False)
    precision._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="cgn.precision"):
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
        assert precision.resolve_precision("bf16", "cpu") == "bf16"
    assert len(caplog.records) == 1 and "'auto' or 'fp32'" in caplog.records[0].getMessage()


@pytest.mark.parametrize("bad", ["fp16", "BF16", ""])
def test_unknown_precisions_are_one_line_errors(bad):
    with pytest.raises(ConfigError, match="'fp32', 'bf16' or 'auto'"):
        ClassifierConfig(precision=bad).validate()
    with pytest.raises(ConfigError, match="'fp32', 'bf16' or 'auto'"):
        GenerationSpec(precision=bad).validate()


def test_the_fast_recipes_ask_for_auto():
    for path in sorted((REPO / "configs" / "fast").glob("*.toml")):
        assert load_config(path).train.precision == "auto", path.name


def test_a_run_records_the_precision_auto_resolved_to_and_resumes_with_auto(tmp_path, data_root, native):
    config = load_config(REPO / "configs" / "debug.toml", ["train.steps=2", "train.precision=auto"])
    expected = "bf16" if native else "fp32"
    trainer = Trainer(config, tmp_path / "run", data_root=data_root)
    assert trainer.config.train.precision == expected
    trainer.fit(stop_at=1, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["precision"] == expected
    # The same "auto" config continues the run on the same kind of machine.
    assert Trainer(config, tmp_path / "run", data_root=data_root).fit(resume=True, progress=False).steps == 2


def test_a_run_started_in_bf16_is_not_resumed_in_fp32_unnoticed(tmp_path, data_root, monkeypatch):
    config = load_config(REPO / "configs" / "debug.toml", ["train.steps=2", "train.precision=auto"])
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: True)
    Trainer(config, tmp_path / "run", data_root=data_root).fit(stop_at=1, progress=False)
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: False)  # another machine
    with pytest.raises(ConfigError, match="another config"):
        Trainer(config, tmp_path / "run", data_root=data_root).fit(resume=True, progress=False)


def test_a_counterfactual_manifest_states_the_resolved_precision(tmp_path, native):
    spec = GenerationSpec(num=20, per_mask=5, shard_size=20, precision="auto")
    out = generate_counterfactuals(checkpoint(tmp_path), tmp_path / "cf", spec, progress=False)
    assert json.loads((out / "manifest.json").read_text())["spec"]["precision"] == ("bf16" if native else "fp32")


def test_a_table_records_its_resolved_schedule_and_recipe(tmp_path, native):
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(REPO / "configs" / "debug.toml", configs / "colored_mnist.toml")
    schedule = replace(QUICK, cgn_config_dir=str(configs), cgn_overrides=("train.precision=auto",))
    assert isinstance(schedule, Schedule) and schedule.classifier.precision == "auto"
    reproduction = Reproduction(tmp_path / "runs", schedule, datasets=["colored_mnist"], progress=False)
    expected = "bf16" if native else "fp32"
    saved = json.loads((tmp_path / "runs" / "schedule.json").read_text())
    assert saved["classifier"]["precision"] == saved["generation_precision"] == expected
    assert reproduction.generator_config("colored_mnist", 0, "cgn").train.precision == expected


def test_the_classifier_computes_in_bf16_for_auto_only_where_it_is_native(native):
    from cgn.classifier import _autocast

    with _autocast("auto", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") == native
    with _autocast("fp32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
