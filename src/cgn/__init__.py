"""Counterfactual Generative Networks (Sauer & Geiger, ICLR 2021) in PyTorch."""

from importlib import metadata

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
