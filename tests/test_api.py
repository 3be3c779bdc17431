"""The README's "pipeline in Python" through the public API (``import cgn``), at tiny sizes:
train, reload, evaluate, generate, read back, and train a classifier on real + counterfactual
data."""

from __future__ import annotations

import cgn
from cgn.classifier import Subset
from cgn.digit_classifier import load_or_train_digit_classifier
from tests.conftest import REPO


def test_the_public_api_names_what_it_exports():
    assert all(hasattr(cgn, name) for name in cgn.__all__)
    pipeline = {"train_cgn", "evaluate_cgn", "generate_counterfactuals", "CounterfactualDataset", "train_classifier"}
    assert pipeline <= set(cgn.__all__)


def test_the_pipeline_runs_end_to_end(tmp_path, data_root):
    config = cgn.load_config(REPO / "configs" / "debug.toml", ["train.steps=4", "train.checkpoint_every=2"])
    run = cgn.train_cgn(config, tmp_path / "run", data_root=data_root, progress=False)
    assert run.steps == 4 and run.checkpoint.is_file()

    model, loaded, _ = cgn.load_cgn(run.checkpoint)
    assert loaded.matches(config.to_dict()) and not model.training
    digits = load_or_train_digit_classifier(data_root, seed=0, max_train=300, epochs=1)
    metrics = cgn.evaluate_cgn(
        model, "double_colored_mnist", num_samples=60, data_root=data_root, digit_classifier=digits, by_class=True
    )
    assert 0 <= metrics["shape_effectiveness"] <= 1 and len(metrics["texture_effectiveness_by_class"]) == 10

    spec = cgn.GenerationSpec(num=40, per_mask=4, shard_size=20, masks_per_chunk=5)
    folder = cgn.generate_counterfactuals(run.checkpoint, tmp_path / "cf", spec, progress=False)
    counterfactuals = cgn.CounterfactualDataset(folder)
    assert len(counterfactuals) == 40

    real = Subset(cgn.build_dataset("double_colored_mnist", "train", seed=0, data_root=data_root), 80)
    test = Subset(cgn.build_dataset("double_colored_mnist", "test", seed=0, data_root=data_root), 50)
    schedule = cgn.ClassifierConfig(epochs=1, batch_size=16)
    _, result = cgn.train_classifier(cgn.MixedSource([real, counterfactuals]), {"test": test}, schedule, progress=False)
    assert 0 <= result.eval_acc["test"] <= 100 and 0 <= result.train_acc <= 100
