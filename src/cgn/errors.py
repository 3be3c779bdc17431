"""Exceptions that carry a one-line message saying what is wrong and what to do.

The CLI prints any :class:`CGNError` as a single line and exits with status 2; library
users can catch the base class.
"""

from __future__ import annotations


class CGNError(Exception):
    """Base class for every error that ``cgn`` raises on purpose."""


class ConfigError(CGNError, ValueError):
    """An unknown key, a wrong type or an invalid value in a configuration."""


class DataUnavailableError(CGNError, FileNotFoundError):
    """Input data (MNIST, textures) is missing, incomplete or fails its checksum."""


class CheckpointError(CGNError, ValueError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


class LabelError(CGNError, ValueError):
    """Class labels outside ``0..num_classes-1`` or of the wrong shape."""
