"""How much a CGN's texture and background mechanisms vary with their noise (Wildlife MNIST).

For each checkpoint, and for real texture crops: the mean absolute difference between the
amplitude spectra (``losses.amplitude_spectrum``, blind to the shuffler's circular shift) of
two maps of the same class from independent noise, averaged over the classes. The real row
pairs two random 32×32 crops of the class's texture photo. 0 means one pattern per class
whatever the noise. Also writes a variety sheet per checkpoint (``viz.variety_sheet``).

Usage: python benchmarks/texture_variety.py NAME=CKPT ... [--pairs 2000] [--out results/texture_variety.json]
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
from cgn.evaluation import random_crops
from cgn.losses import amplitude_spectrum
from cgn.seeding import make_generator
from cgn.viz import save_image, variety_sheet


def spectral_variety(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Per class, mean |A(a) − A(b)| over the pairs (a_i, b_i) of that class."""
    gap = (amplitude_spectrum(a) - amplitude_spectrum(b)).abs().flatten(1).mean(1)  # (N,)
    return [gap[labels == c].mean().item() for c in range(classes)]


def summary(per_class: dict[str, list[float]]) -> dict[str, float | list[float]]:
    out: dict[str, float | list[float]] = {}
    for what, values in per_class.items():
        out[what] = sum(values) / len(values)
        out[f"{what}_by_class"] = [round(v, 5) for v in values]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=PATH of Wildlife CGN checkpoints")
    parser.add_argument("--pairs", type=int, default=2000, help="pairs of maps (spread over the classes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=Path("results/texture_variety.json"))
    parser.add_argument("--sheets", type=Path, default=Path("results/texture_variety"))
    parser.add_argument("--sheet-for", nargs="*", help="names to draw a variety sheet for (default: all)")
    args = parser.parse_args()

    classes = 10
    labels = torch.arange(args.pairs) % classes
    textures = load_textures(args.data_root)
    rows: dict[str, dict] = {}
    generator = make_generator(args.seed, "texture_variety", "real")
    crops = {}
    for what, folder in (("texture", "object"), ("background", "background")):
        bank = prepare_texture_bank(textures[folder])
        crops[what] = spectral_variety(
            random_crops(bank, labels, generator), random_crops(bank, labels, generator), labels, classes
        )
    rows["real crops"] = summary(crops)
    args.sheets.mkdir(parents=True, exist_ok=True)
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        model, config, _ = load_cgn(path)
        if config.train.dataset != "wildlife_mnist":
            sys.exit(f"{path} is a {config.train.dataset} CGN; this measure is for Wildlife MNIST")
        generator = make_generator(args.seed, "texture_variety", "noise")
        with torch.no_grad():
            u_a, u_b = model.sample_noise(args.pairs, generator), model.sample_noise(args.pairs, generator)
            maps = {
                "texture": spectral_variety(
                    model.texture_map(u_a, labels), model.texture_map(u_b, labels), labels, classes
                ),
                "background": spectral_variety(
                    model.background_map(u_a, labels), model.background_map(u_b, labels), labels, classes
                ),
            }
        rows[name] = {"checkpoint": path, **summary(maps)}
        if args.sheet_for is None or name in args.sheet_for:
            save_image(
                variety_sheet(model, 8, make_generator(args.seed, "texture_variety", "sheet"), scale=2),
                args.sheets / f"{name}.png",
            )
        print(f"{name:24s} texture {rows[name]['texture']:.4f}  background {rows[name]['background']:.4f}")
    print(
        f"{'real crops':24s} texture {rows['real crops']['texture']:.4f}  background {rows['real crops']['background']:.4f}"
    )
    write_result(args.out, {"rows": rows, "pairs": args.pairs, "seed": args.seed})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    reexec_with_allocator()
    main()
