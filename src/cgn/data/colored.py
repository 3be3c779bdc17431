"""Colored MNIST (Kim et al. 2019, "Learning Not to Learn"), re-created (PAPER.md §1.1).

The digit stroke takes a class-specific mean colour plus Gaussian jitter of variance 0.02 per
RGB channel (one colour per image); the background is black. Train: colour follows the label;
test: colour index uniform and independent of the label. 60k train / 10k test from the
official MNIST splits (``test_official`` is the same images and attributes as ``test``).

The original generation script was never published, so the palette is ours: the seven
non-black corners of the RGB cube and the three face centres next to white, so that every pair
of mean colours is at least 0.71 apart (5 standard deviations of the jitter) and every colour
stands out on black.
"""

from __future__ import annotations

import math

import torch

from cgn.data.base import BiasedMNIST, SplitSpec, compose_colors, jittered

COLORS = (
    (1.0, 0.0, 0.0),  # 0 red
    (0.0, 1.0, 0.0),  # 1 green
    (0.0, 0.0, 1.0),  # 2 blue
    (1.0, 1.0, 0.0),  # 3 yellow
    (1.0, 0.0, 1.0),  # 4 magenta
    (0.0, 1.0, 1.0),  # 5 cyan
    (1.0, 1.0, 1.0),  # 6 white
    (1.0, 0.5, 0.5),  # 7 salmon
    (0.5, 1.0, 0.5),  # 8 light green
    (0.5, 0.5, 1.0),  # 9 light blue
)
COLOR_VARIANCE = 0.02


class ColoredMNIST(BiasedMNIST):
    name = "colored_mnist"
    has_background_attribute = False
    splits = {
        "train": SplitSpec("train", 0, 60_000, decorrelated=False),
        "test": SplitSpec("test", 0, 10_000, decorrelated=True),
        "test_official": SplitSpec("test", 0, 10_000, decorrelated=True, stream="test"),
    }
    foreground_colors = torch.tensor(COLORS)  # (10, 3) in [0, 1]

    def draw_appearance(self, fg, bg, generator):
        return {"foreground_rgb": jittered(self.foreground_colors, fg, math.sqrt(COLOR_VARIANCE), generator)}

    def render(self, masks, attributes):
        black = torch.zeros_like(attributes["foreground_rgb"])
        return compose_colors(masks, attributes["foreground_rgb"], black)
