"""Wildlife MNIST (PAPER.md §1.1): a textured digit on a textured background.

The digit takes one of 10 "striped" textures, the background one of 10 "veined" ones. Each
texture is resized (nearest) to 150×150 once; per sample a 32×32 window is cropped from it
after reflect padding of 3 pixels (as ``RandomCrop(32, padding=3, padding_mode="reflect")``).
Train: both textures follow the label; test: both indices independent and uniform.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cgn.data.base import HELD_OUT_SPLITS, IMAGE_SIZE, BiasedMNIST
from cgn.data.textures import load_textures

TEXTURE_SIZE = 150
CROP_PADDING = 3


def prepare_texture_bank(images: list[np.ndarray]) -> torch.Tensor:
    """10 × (H, W, 3) uint8 photos → (10, 156, 156, 3) float in [-1, 1], reflect-padded."""
    bank = []
    for image in images:
        resized = np.asarray(Image.fromarray(image).resize((TEXTURE_SIZE, TEXTURE_SIZE), Image.NEAREST))
        tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 127.5 - 1  # (3, 150, 150)
        padded = F.pad(tensor[None], (CROP_PADDING,) * 4, mode="reflect")[0]  # (3, 156, 156)
        bank.append(padded.permute(1, 2, 0))  # channels last for the crop gather
    return torch.stack(bank).contiguous()


def crop(bank: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """32×32 windows of ``bank[index]`` at ``offsets`` (B, 2) → (B, 3, 32, 32)."""
    steps = torch.arange(IMAGE_SIZE)
    rows = offsets[:, 0, None] + steps  # (B, 32)
    cols = offsets[:, 1, None] + steps  # (B, 32)
    patches = bank[index[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, 32, 32, 3)
    return patches.permute(0, 3, 1, 2)


class WildlifeMNIST(BiasedMNIST):
    name = "wildlife_mnist"
    splits = HELD_OUT_SPLITS

    def __init__(self, split: str = "train", seed: int = 0, root: str | os.PathLike | None = None, *, mnist=None):
        textures = load_textures(root)
        self.object_bank = prepare_texture_bank(textures["object"])
        self.background_bank = prepare_texture_bank(textures["background"])
        super().__init__(split, seed, root, mnist=mnist)

    def draw_appearance(self, fg, bg, generator):
        high = self.object_bank.shape[1] - IMAGE_SIZE + 1  # offsets 0..124
        return {
            "foreground_offset": torch.randint(0, high, (len(fg), 2), generator=generator),
            "background_offset": torch.randint(0, high, (len(bg), 2), generator=generator),
        }

    def render(self, masks, attributes):
        fg = crop(self.object_bank, attributes["foreground_attr"], attributes["foreground_offset"])
        bg = crop(self.background_bank, attributes["background_attr"], attributes["background_offset"])
        return torch.where(masks[:, None], fg, bg)
