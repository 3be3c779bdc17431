"""The `cgn` command: train-cgn, import-original, and one-line errors."""

from __future__ import annotations

import json

import pytest

from cgn.checkpoint import load_cgn
from cgn.cli import main
from tests.conftest import REPO, mirror


def test_train_cgn_writes_a_run(tmp_path, data_root, capsys):
    args = ["train-cgn", "--config", str(REPO / "configs" / "debug.toml"), "train.steps=3", "train.checkpoint_every=3"]
    assert main([*args, "--out-dir", str(tmp_path), "--data-dir", str(data_root)]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    _, config, _ = load_cgn(tmp_path / "debug_seed0" / "cgn.safetensors")
    assert config.train.steps == 3


def test_train_cgn_reports_bad_overrides_in_one_line(tmp_path, capsys):
    assert main(["train-cgn", "--dataset", "wildlife_mnist", "train.batchsize=3", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'train.batch_size'" in err


def test_import_original(tmp_path, capsys):
    source = mirror() / "original_mnist_checkpoints" / "cgn_double_colored_MNIST.pth"
    if not source.exists():
        pytest.skip(f"{source} is missing")
    out = tmp_path / "authors.safetensors"
    assert main(["import-original", str(source), "--dataset", "double_colored_mnist", "--out", str(out)]) == 0
    _, config, metadata = load_cgn(out)
    assert config.train.dataset == "double_colored_mnist" and "imported_from" in metadata
    assert (
        main(["import-original", str(tmp_path / "missing.pth"), "--dataset", "wildlife_mnist", "--out", str(out)]) == 2
    )
    assert capsys.readouterr().err.startswith("error:")


def test_generate_and_train_classifier(tmp_path, data_root, capsys):
    assert (
        main(
            [
                "train-cgn",
                "--config",
                str(REPO / "configs" / "debug.toml"),
                "train.steps=2",
                "--out-dir",
                str(tmp_path),
                "--data-dir",
                str(data_root),
            ]
        )
        == 0
    )
    checkpoint = tmp_path / "debug_seed0" / "cgn.safetensors"
    out = tmp_path / "cf"
    assert (
        main(["generate", str(checkpoint), "--num", "120", "--per-mask", "4", "--out", str(out), "--device", "cpu"])
        == 0
    )
    assert "n=120" in capsys.readouterr().out and (out / "manifest.json").exists()
    args = [
        "train-classifier",
        "--dataset",
        "double_colored_mnist",
        "--data",
        "mixed",
        "--epochs",
        "1",
        "--limit",
        "100",
    ]
    assert main([*args, "--data-dir", str(data_root), "--out", str(tmp_path / "clf.json")]) == 2  # no --counterfactuals
    assert "--counterfactuals" in capsys.readouterr().err
    assert (
        main([*args, "--counterfactuals", str(out), "--data-dir", str(data_root), "--out", str(tmp_path / "clf.json")])
        == 0
    )
    assert "test_official" in capsys.readouterr().out and (tmp_path / "clf.json").exists()
    assert main(["generate", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2


def test_evaluate_cgn_reports_fidelity_unless_switched_off(tmp_path, data_root, capsys, monkeypatch):
    import cgn.evaluation as evaluation
    from cgn.digit_classifier import load_or_train_digit_classifier

    def small(root, seed=0):  # the evaluation tests' classifier (1,000 fake masks), cached in data_root
        return load_or_train_digit_classifier(root, seed, max_train=1000, epochs=1)

    monkeypatch.setattr(evaluation, "load_or_train_digit_classifier", small)
    config = ["--config", str(REPO / "configs" / "debug.toml"), "train.steps=2", "train.checkpoint_every=2"]
    assert main(["train-cgn", *config, "--out-dir", str(tmp_path), "--data-dir", str(data_root)]) == 0
    checkpoint, out = tmp_path / "debug_seed0" / "cgn.safetensors", tmp_path / "eval.json"
    evaluate = ["evaluate-cgn", str(checkpoint), "--num", "100", "--out", str(out), "--data-dir", str(data_root)]
    assert main(evaluate) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["shape_frechet"] > 0 and len(report["metrics"]["texture_frechet_by_class"]) == 10
    assert "texture_frechet" in capsys.readouterr().out
    assert main([*evaluate, "--no-fidelity"]) == 0
    assert not any("frechet" in key or "spread" in key for key in json.loads(out.read_text())["metrics"])
