"""Image sheets: labelled grids of images in [-1, 1], saved as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cgn.files import atomic_path

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] (C = 1 or 3) → (B, H, W, 3) uint8."""
    images = images.detach().float().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_sheet(
    rows: Sequence[torch.Tensor],
    *,
    row_titles: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    scale: int = 3,
    pad: int = 4,
) -> Image.Image:
    """A grid with one row per tensor (B, C, H, W); optional row titles and per-image captions."""
    font = ImageFont.load_default()
    arrays = [to_uint8(r) for r in rows]
    h, w = arrays[0].shape[1] * scale, arrays[0].shape[2] * scale
    ncol = max(len(a) for a in arrays)
    left = 0 if row_titles is None else max(_text_width(font, t) for t in row_titles) + 2 * pad
    caption_h = 0 if captions is None else 12
    top = 0 if title is None else 16
    cell_h = h + caption_h + pad
    sheet = Image.new("RGB", (left + ncol * (w + pad) + pad, top + len(arrays) * cell_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title is not None:
        draw.text((pad, 2), title, fill=TEXT, font=font)
    for r, array in enumerate(arrays):
        y = top + pad + r * cell_h
        if row_titles is not None:
            draw.text((pad, y + h // 2 - 5), row_titles[r], fill=TEXT, font=font)
        for c, image in enumerate(array):
            x = left + pad + c * (w + pad)
            sheet.paste(Image.fromarray(image).resize((w, h), Image.NEAREST), (x, y))
            if captions is not None and c < len(captions[r]):
                draw.text((x, y + h + 1), captions[r][c], fill=TEXT, font=font)
    return sheet


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Save a PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def stack_vertically(images: Sequence[Image.Image], pad: int = 8) -> Image.Image:
    width = max(i.width for i in images)
    out = Image.new("RGB", (width, sum(i.height for i in images) + pad * (len(images) - 1)), BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height + pad
    return out


def _text_width(font: ImageFont.ImageFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def mechanism_sheet(out, labels: torch.Tensor, *, title: str | None = None) -> Image.Image:
    """A row per class: mask | foreground | background | composite, for each sample of the class."""
    classes = labels.unique(sorted=True).tolist()
    rows = []
    for c in classes:
        idx = torch.nonzero(labels.cpu() == c)[:, 0]
        cells = [t for i in idx for t in (out.mask[i] * 2 - 1, out.foreground[i], out.background[i], out.image[i])]
        rows.append(torch.stack([cell.expand(3, -1, -1).float().cpu() for cell in cells]))
    heading = "mask | foreground | background | composite"
    return image_sheet(rows, row_titles=[str(c) for c in classes], title=f"{title}: {heading}" if title else heading)


@torch.no_grad()
def counterfactual_sheet(model, shape: int, generator: torch.Generator, num_classes: int = 10) -> Image.Image:
    """One shape (fixed noise) composed with every texture (rows) and background (columns)."""
    k = num_classes
    u_shape, u_texture, u_background = (model.sample_noise(1, generator) for _ in range(3))
    textures = torch.arange(k).repeat_interleave(k)  # row = texture class
    backgrounds = torch.arange(k).repeat(k)  # column = background class
    noise = (u_shape.expand(k * k, -1), u_texture.expand(k * k, -1), u_background.expand(k * k, -1))
    out = model(torch.full((k * k,), shape), textures, backgrounds, noise=noise, generator=generator)
    rows = [out.image[r * k : (r + 1) * k] for r in range(k)]
    return image_sheet(
        rows, row_titles=[f"texture {t}" for t in range(k)], title=f"shape {shape}; columns: background 0..{k - 1}"
    )


@torch.no_grad()
def variety_sheet(model, per_class: int = 12, generator: torch.Generator | None = None, scale: int = 3) -> Image.Image:
    """What each texture mechanism draws for one label as its noise varies: a row per class of
    ``per_class`` texture maps, then the same for the background, before the shuffler's shift.
    A row of identical maps is a mechanism that ignores its noise."""
    k = model.config.num_classes
    labels = torch.arange(k, device=model.device).repeat_interleave(per_class)
    noise = model.sample_noise(len(labels), generator)
    rows = []
    for draw in (model.texture_map, model.background_map):
        maps = draw(noise, labels).float().cpu()
        rows += list(maps.view(k, per_class, *maps.shape[1:]))
    titles = [f"{what} {c}" for what in ("texture", "background") for c in range(k)]
    return image_sheet(
        rows, row_titles=titles, title="one label, fresh noise per column (before the shift)", scale=scale
    )
