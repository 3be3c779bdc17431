"""Counterfactual Generative Networks (Sauer & Geiger, ICLR 2021) in PyTorch."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING

# The public names, and the module each lives in. They are imported on first use (PEP 562), so
# that ``import cgn.errors`` or the ``cgn`` command's launcher does not pay for importing torch.
_EXPORTS = {
    "load_cgn": "cgn.checkpoint",
    "ClassifierConfig": "cgn.classifier",
    "MixedSource": "cgn.classifier",
    "train_classifier": "cgn.classifier",
    "compose": "cgn.composer",
    "CGNConfig": "cgn.config",
    "load_config": "cgn.config",
    "paper_config": "cgn.config",
    "CounterfactualDataset": "cgn.counterfactuals",
    "GenerationSpec": "cgn.counterfactuals",
    "generate_counterfactuals": "cgn.counterfactuals",
    "build_dataset": "cgn.data",
    "dataset_names": "cgn.data",
    "CGNError": "cgn.errors",
    "CheckpointError": "cgn.errors",
    "ConfigError": "cgn.errors",
    "DataUnavailableError": "cgn.errors",
    "LabelError": "cgn.errors",
    "evaluate_cgn": "cgn.evaluation",
    "CGN": "cgn.model",
    "CGNOutput": "cgn.model",
    "train_cgn": "cgn.trainer",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
    from cgn.checkpoint import load_cgn
    from cgn.classifier import ClassifierConfig, MixedSource, train_classifier
    from cgn.composer import compose
    from cgn.config import CGNConfig, load_config, paper_config
    from cgn.counterfactuals import CounterfactualDataset, GenerationSpec, generate_counterfactuals
    from cgn.data import build_dataset, dataset_names
    from cgn.errors import CGNError, CheckpointError, ConfigError, DataUnavailableError, LabelError
    from cgn.evaluation import evaluate_cgn
    from cgn.model import CGN, CGNOutput
    from cgn.trainer import train_cgn


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cgn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


try:
    __version__ = metadata.version("cgn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    # the model
    "CGN",
    "CGNConfig",
    "CGNOutput",
    "compose",
    "load_cgn",
    "load_config",
    "paper_config",
    # the pipeline: train, evaluate, generate, classify
    "train_cgn",
    "evaluate_cgn",
    "generate_counterfactuals",
    "GenerationSpec",
    "CounterfactualDataset",
    "train_classifier",
    "ClassifierConfig",
    "MixedSource",
    "LabelError",
    "CGNError",
    "CheckpointError",
    "ConfigError",
    "DataUnavailableError",
    "build_dataset",
    "dataset_names",
    "__version__",
]
