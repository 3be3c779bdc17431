"""Double-colored MNIST (PAPER.md §1.1): a coloured digit on a coloured background.

Ten named colours in class order; the background of class i has colour i, the digit of class
i colour (i − 6) mod 10. Each image adds N(0, 0.01²) to each RGB component of both colours
(one colour per image, constant over pixels; clamped to [0, 1]). Train: both colours follow
the label; test: the two colour indices are independent and uniform.
"""

from __future__ import annotations

import torch

from cgn.data.base import HELD_OUT_SPLITS, BiasedMNIST, compose_colors, hex_to_rgb, jittered

# darkgreen, darkblue, #b03060, orangered, yellow, burlywood, lime, aqua, fuchsia, #6495ed
COLOR_HEX = (
    "#006400",
    "#00008b",
    "#b03060",
    "#ff4500",
    "#ffff00",
    "#deb887",
    "#00ff00",
    "#00ffff",
    "#ff00ff",
    "#6495ed",
)
COLOR_NOISE_STD = 0.01


class DoubleColoredMNIST(BiasedMNIST):
    name = "double_colored_mnist"
    splits = HELD_OUT_SPLITS
    background_colors = torch.tensor([hex_to_rgb(c) for c in COLOR_HEX])  # (10, 3)
    foreground_colors = background_colors[[(i - 6) % 10 for i in range(10)]]  # (10, 3)

    def draw_appearance(self, fg, bg, generator):
        return {
            "foreground_rgb": jittered(self.foreground_colors, fg, COLOR_NOISE_STD, generator),
            "background_rgb": jittered(self.background_colors, bg, COLOR_NOISE_STD, generator),
        }

    def render(self, masks, attributes):
        return compose_colors(masks, attributes["foreground_rgb"], attributes["background_rgb"])
