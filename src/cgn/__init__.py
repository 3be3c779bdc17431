"""Counterfactual Generative Networks (Sauer & Geiger, ICLR 2021) in PyTorch."""

from importlib import metadata

from cgn.checkpoint import load_cgn
from cgn.composer import compose
from cgn.config import CGNConfig, load_config, paper_config
from cgn.data import build_dataset, dataset_names
from cgn.errors import CGNError, CheckpointError, ConfigError, DataUnavailableError, LabelError
from cgn.model import CGN, CGNOutput

try:
    __version__ = metadata.version("cgn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "CGN",
    "CGNConfig",
    "CGNOutput",
    "compose",
    "load_cgn",
    "load_config",
    "paper_config",
    "LabelError",
    "CGNError",
    "CheckpointError",
    "ConfigError",
    "DataUnavailableError",
    "build_dataset",
    "dataset_names",
    "__version__",
]
