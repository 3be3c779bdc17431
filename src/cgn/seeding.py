"""Seeds and random generators.

Randomness is passed, not global: library functions take a :class:`torch.Generator`.
Seeds for independent stages are derived by hashing names, so adding a stage never shifts
the random stream of another one.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends on ``seed`` and the names in ``parts`` only."""
    text = "/".join([str(int(seed)), *(str(p) for p in parts)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, *parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``derive_seed(seed, *parts)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *parts))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (for code we do not control)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
