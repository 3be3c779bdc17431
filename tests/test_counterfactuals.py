"""Counterfactual datasets: shard writer and reader, manifest, determinism, label independence."""

from __future__ import annotations

import json

import pytest
import torch

from cgn.checkpoint import save_weights
from cgn.config import load_config
from cgn.counterfactuals import CounterfactualDataset, GenerationSpec, from_uint8, generate_counterfactuals, to_uint8
from cgn.errors import ConfigError, DataUnavailableError
from cgn.files import sha256_file
from cgn.model import CGN, ConditionalGAN
from tests.conftest import REPO


def checkpoint(tmp_path, generator: str = "cgn"):
    config = load_config(REPO / "configs" / "debug.toml", [f"model.generator={generator}"])
    torch.manual_seed(0)
    model = (CGN if generator == "cgn" else ConditionalGAN)(config.model)
    return save_weights(tmp_path / f"{generator}.safetensors", model, config=config, kind="cgn", step=0)


SPEC = GenerationSpec(num=250, per_mask=5, seed=3, shard_size=100, masks_per_chunk=7)


def test_round_trip_and_manifest(tmp_path):
    ckpt = checkpoint(tmp_path)
    out = generate_counterfactuals(ckpt, tmp_path / "cf", SPEC, progress=False)
    data = CounterfactualDataset(out, verify=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(data) == 250 and manifest["count"] == 250 and manifest["seed"] == 3 and manifest["per_mask"] == 5
    assert manifest["parent"]["sha256"] == sha256_file(ckpt)
    assert manifest["config"]["model"]["ngf"] == 8 and manifest["cgn_version"]
    assert [s["count"] for s in manifest["shards"]] == [100, 100, 50]
    assert data.images.dtype == torch.uint8 and data.images.shape == (250, 3, 32, 32)
    item = data[7]
    assert item["image"].shape == (3, 32, 32) and item["image"].min() >= -1 and item["image"].max() <= 1
    assert {"label", "foreground_attr", "background_attr"} <= set(item)
    batch = data.batch([0, 5, 249])
    assert torch.equal(batch["label"], data.labels[[0, 5, 249]])


def test_uint8_conversion_round_trips():
    x = torch.linspace(-1, 1, 256)
    assert torch.allclose(from_uint8(to_uint8(x)), x, atol=1 / 255)
    assert torch.equal(to_uint8(from_uint8(torch.arange(256, dtype=torch.uint8))), torch.arange(256, dtype=torch.uint8))


def test_same_seed_same_bytes_and_resume(tmp_path):
    ckpt = checkpoint(tmp_path)
    a = generate_counterfactuals(ckpt, tmp_path / "a", SPEC, progress=False)
    b = tmp_path / "b"
    generate_counterfactuals(ckpt, b, SPEC, progress=False)
    # An interruption: the manifest and one shard are lost; the rerun redoes only what is missing.
    (b / "manifest.json").unlink()
    (b / "shard_00001.safetensors").unlink()
    kept = (b / "shard_00000.safetensors").stat().st_mtime_ns
    generate_counterfactuals(ckpt, b, SPEC, progress=False)
    assert (b / "shard_00000.safetensors").stat().st_mtime_ns == kept
    for name in ("shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    other = generate_counterfactuals(
        ckpt, tmp_path / "c", GenerationSpec(**{**SPEC.__dict__, "seed": 4}), progress=False
    )
    assert not torch.equal(CounterfactualDataset(a).images, CounterfactualDataset(other).images)


def test_labels_are_independent_and_masks_are_shared(tmp_path):
    spec = GenerationSpec(num=20_000, per_mask=10, seed=0, shard_size=20_000, masks_per_chunk=200)
    data = CounterfactualDataset(generate_counterfactuals(checkpoint(tmp_path), tmp_path / "cf", spec, progress=False))
    shape, texture, background = data.labels, data.texture, data.background
    # Ten counterfactuals per mask: the shape label is constant within a group, the others vary.
    groups = shape.view(-1, 10)
    assert bool((groups == groups[:, :1]).all())
    assert (texture.view(-1, 10) != texture.view(-1, 10)[:, :1]).any(1).float().mean() > 0.99
    # Independence: every (shape, texture) and (shape, background) cell holds about 1 % of the data.
    for other in (texture, background):
        table = torch.bincount(shape * 10 + other, minlength=100).float() / len(shape)
        assert table.min() > 0.006 and table.max() < 0.014
    assert float((texture == shape).float().mean()) == pytest.approx(0.1, abs=0.01)
    assert float((texture == background).float().mean()) == pytest.approx(0.1, abs=0.01)


def test_a_conditional_gan_gives_one_label_per_image(tmp_path):
    out = generate_counterfactuals(checkpoint(tmp_path, "cgan"), tmp_path / "gan", SPEC, progress=False)
    data = CounterfactualDataset(out)
    assert data.manifest["generator"] == "cgan" and data.manifest["per_mask"] == 1
    assert torch.equal(data.labels, data.texture) and torch.equal(data.labels, data.background)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataUnavailableError, match="cgn generate"):
        CounterfactualDataset(tmp_path)
    ckpt = checkpoint(tmp_path)
    out = generate_counterfactuals(ckpt, tmp_path / "cf", SPEC, progress=False)
    with pytest.raises(ConfigError, match="another counterfactual dataset"):
        generate_counterfactuals(ckpt, out, GenerationSpec(num=10), progress=False)
    (out / "shard_00001.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataUnavailableError, match="SHA-256"):
        CounterfactualDataset(out, verify=True)
    with pytest.raises(ConfigError):
        GenerationSpec(num=0).validate()


def test_shape_noise_scale_narrows_the_masks_of_a_class(tmp_path, monkeypatch):
    from cgn.counterfactuals import generate_chunk

    config = load_config(REPO / "configs" / "debug.toml")
    torch.manual_seed(0)
    model = CGN(config.model).eval()
    masks = []
    make_mask = model.make_mask
    monkeypatch.setattr(model, "make_mask", lambda noise, labels: masks.append(make_mask(noise, labels)) or masks[-1])

    def spread(scale: float) -> float:  # mean per-pixel std of the masks of shape class 3
        chunk = generate_chunk(model, 200, 2, torch.Generator().manual_seed(1), shape_noise_scale=scale)
        return masks[-1][chunk["shape"][::2] == 3].std(0).mean().item()

    assert spread(1e-6) < 1e-4 < spread(0.5) < spread(1.0)
    with pytest.raises(ConfigError, match="shape-noise-scale"):
        GenerationSpec(shape_noise_scale=0).validate()
