"""Where prepared data lives: ``$CGN_DATA``, else a per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "CGN_DATA"
MIRROR_ENV = "CGN_DATA_MIRROR"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$CGN_DATA``, else ``~/.cache/cgn``."""
    if root is not None:
        return Path(root)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cgn"


def mirror_root() -> Path | None:
    """A local mirror of upstream files (``$CGN_DATA_MIRROR``), used by tests and CI."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None
