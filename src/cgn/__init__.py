"""Counterfactual Generative Networks (Sauer & Geiger, ICLR 2021) in PyTorch."""

from importlib import metadata

from cgn.data import build_dataset, dataset_names
from cgn.errors import CGNError, CheckpointError, ConfigError, DataUnavailableError

try:
    __version__ = metadata.version("cgn")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "CGNError",
    "CheckpointError",
    "ConfigError",
    "DataUnavailableError",
    "build_dataset",
    "dataset_names",
    "__version__",
]
