"""The analytic composer of a CGN (PAPER.md §0): the one place the formula lives."""

from __future__ import annotations

import torch


def compose(mask: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """``x = m ⊙ f + (1 − m) ⊙ b``; mask (B, 1, H, W) broadcasts over the channels of f and b."""
    return mask * foreground + (1 - mask) * background
