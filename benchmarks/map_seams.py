"""How visible the seam of a CGN's texture and background maps is (``model.map_padding``).

The shuffler shifts each 32×32 map circularly, so the seam where the map's opposite edges meet
lands inside the image. For each checkpoint: ``evaluation.seam_contrast`` of its texture and
background maps before the shift (the wrap difference over the neighbour difference inside; 1 =
no visible seam), over ``--maps`` maps spread evenly over the classes, each class's value too.
The reference row is real texture crops, which never tile: what a seam between two unrelated
edges of a photo patch gives. ``--sheet`` also draws each class's first texture and background
map shifted by half its size, so that the seam is the cross through the middle, a row per
checkpoint and mechanism.

Usage: python benchmarks/map_seams.py NAME=CKPT ... [--maps 2000] [--out results/map_seams.json]
       [--sheet results/map_seams.png [--sheet-for NAME ...]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cgn.allocator import reexec_with_allocator
from cgn.checkpoint import load_cgn
from cgn.data.textures import load_textures
from cgn.data.wildlife import prepare_texture_bank
from cgn.environment import write_result
from cgn.evaluation import random_crops, seam_contrast
from cgn.seeding import make_generator
from cgn.viz import image_sheet, save_image

CLASSES = 10


def contrasts(maps: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float | list[float]]:
    """Seam contrast of each mechanism's maps, overall and per class."""
    out: dict[str, float | list[float]] = {}
    for what, x in maps.items():
        out[what] = round(seam_contrast(x), 4)
        out[f"{what}_by_class"] = [round(seam_contrast(x[labels == c]), 4) for c in range(CLASSES)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=PATH of CGN checkpoints")
    parser.add_argument("--maps", type=int, default=2000, help="maps per mechanism, spread over the classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="for the real crops' row (Wildlife textures)")
    parser.add_argument("--out", type=Path, default=Path("results/map_seams.json"))
    parser.add_argument("--sheet", type=Path, default=None, help="also draw the maps with the seam centred")
    parser.add_argument("--sheet-for", nargs="*", help="names to draw on the sheet (default: all)")
    args = parser.parse_args()

    labels = torch.arange(args.maps) % CLASSES
    rows: dict[str, dict] = {}
    sheet_rows: list[torch.Tensor] = []
    sheet_titles: list[str] = []
    textures = load_textures(args.data_root)
    generator = make_generator(args.seed, "map_seams", "real")
    real = {
        what: random_crops(prepare_texture_bank(textures[folder]), labels, generator)
        for what, folder in (("texture", "object"), ("background", "background"))
    }
    rows["real crops"] = contrasts(real, labels)
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        if not path:
            sys.exit(f"expected NAME=CHECKPOINT, got {spec!r}")
        model, config, _ = load_cgn(path)
        if config.model.generator != "cgn":
            sys.exit(f"{path} is a {config.model.generator} checkpoint; seams are a CGN's texture and background maps'")
        generator = make_generator(args.seed, "map_seams", "noise")
        with torch.no_grad():
            noise = model.sample_noise(args.maps, generator)
            maps = {"texture": model.texture_map(noise, labels), "background": model.background_map(noise, labels)}
        rows[name] = {"checkpoint": path, "map_padding": config.model.map_padding, **contrasts(maps, labels)}
        if args.sheet_for is None or name in args.sheet_for:
            for what, x in maps.items():
                half = (x.shape[2] // 2, x.shape[3] // 2)
                sheet_rows.append(torch.roll(x[:CLASSES], shifts=half, dims=(2, 3)).float())  # classes 0-9
                sheet_titles.append(f"{name} {what}")
    for name, row in rows.items():
        print(f"{name:24s} texture {row['texture']:.3f}  background {row['background']:.3f}")
    write_result(args.out, {"rows": rows, "maps": args.maps, "seed": args.seed})
    if args.sheet is not None:
        title = "classes 0-9, each map shifted by half: the seam is the cross through the middle"
        save_image(image_sheet(sheet_rows, row_titles=sheet_titles, title=title, scale=2), args.sheet)
        print(f"wrote {args.sheet}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
