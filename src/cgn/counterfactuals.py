"""Counterfactual datasets (PAPER.md §1.4): generate, store as uint8 shards, read back.

Generation, per chunk of masks: draw shape labels and shape noise, compute each mask once,
then for each of ``per_mask`` counterfactuals draw a texture label, a background label (both
uniform on 0..9 and independent of the shape label and of each other), fresh texture and
background noise and shuffler offsets, and compose. The generator runs in eval mode. (The
original permuted the batch's shape labels to get texture labels, which is only roughly
independent; it also stored the shape label alone. We store all three.)

A conditional GAN (the Original + GAN baseline) has no mechanisms: each image is one draw and
its three label vectors are equal.

On disk, a folder with ``shard_00000.safetensors`` … (``images`` uint8 (N, 3, 32, 32), and int64
``shape``, ``texture``, ``background``) and ``manifest.json`` (count, seed, per-mask count,
parent checkpoint SHA-256, its config, package version, shard hashes). Shard ``k`` draws from a
generator seeded by ``(seed, k)`` alone, so the same seed gives the same bytes, finished shards
survive an interruption, and the manifest (written last) marks a complete dataset.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cgn.checkpoint import load_cgn
from cgn.composer import compose
from cgn.errors import CheckpointError, ConfigError, DataUnavailableError
from cgn.files import atomic_path, sha256_file, write_text
from cgn.precision import check_precision, resolve_precision
from cgn.seeding import make_generator

FORMAT = "cgn-counterfactuals/1"
MANIFEST = "manifest.json"
LABEL_KEYS = ("shape", "texture", "background")


@dataclass(frozen=True)
class GenerationSpec:
    """What determines a counterfactual dataset's bytes (besides the parent weights)."""

    num: int = 100_000
    per_mask: int = 10
    seed: int = 0
    shard_size: int = 10_000
    masks_per_chunk: int = 100
    precision: str = "fp32"  # or "bf16" autocast (about 2× faster on a CPU with bf16 units), "auto" (bf16 there)
    # Ours (1.0 = the paper): the shape mechanism's noise is drawn from N(0, s²I) (a cGAN's
    # noise likewise): the "truncation trick" for masks, fewer malformed digits, less variety.
    shape_noise_scale: float = 1.0

    def validate(self) -> GenerationSpec:
        if self.num <= 0 or self.per_mask <= 0 or self.shard_size <= 0 or self.masks_per_chunk <= 0:
            raise ConfigError("--num, --per-mask, shard size and chunk size must be positive")
        check_precision(self.precision, "generation precision")
        if not self.shape_noise_scale > 0:
            raise ConfigError(f"--shape-noise-scale must be positive, not {self.shape_noise_scale}")
        return self


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats → uint8 0..255 (rounded)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 → float32 in [-1, 1]."""
    return images.float() / 127.5 - 1


@torch.inference_mode()
def generate_chunk(
    model, num_masks: int, per_mask: int, generator: torch.Generator, shape_noise_scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """``num_masks × per_mask`` counterfactuals: uint8 images and the three label vectors (CPU)."""
    classes = model.config.num_classes
    n = num_masks * per_mask
    if model.config.generator == "cgan":  # no mechanisms: one draw per image, one label
        y = torch.randint(0, classes, (n,), generator=generator)
        image = model(y, noise=model.sample_noise(n, generator) * shape_noise_scale).image
        return {"images": to_uint8(image).cpu(), "shape": y, "texture": y.clone(), "background": y.clone()}
    y_shape = torch.randint(0, classes, (num_masks,), generator=generator)
    mask = model.make_mask(model.sample_noise(num_masks, generator) * shape_noise_scale, y_shape.to(model.device))
    mask = mask.repeat_interleave(per_mask, dim=0)  # each mask reused per_mask times
    y_texture = torch.randint(0, classes, (n,), generator=generator)
    y_background = torch.randint(0, classes, (n,), generator=generator)
    foreground = model.make_foreground(model.sample_noise(n, generator), y_texture.to(model.device), generator)
    background = model.make_background(model.sample_noise(n, generator), y_background.to(model.device), generator)
    image = compose(mask, foreground, background)
    return {
        "images": to_uint8(image).cpu(),
        "shape": y_shape.repeat_interleave(per_mask),
        "texture": y_texture,
        "background": y_background,
    }


def generate_shard(model, spec: GenerationSpec, index: int, count: int) -> dict[str, torch.Tensor]:
    """Shard ``index`` of ``count`` images, from a generator seeded by (seed, index) only."""
    generator = make_generator(spec.seed, "counterfactuals", index)
    per_mask = 1 if model.config.generator == "cgan" else spec.per_mask
    parts = []
    remaining = count
    precision = resolve_precision(spec.precision, model.device)
    autocast = torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    while remaining > 0:
        masks = min(spec.masks_per_chunk, math.ceil(remaining / per_mask))
        with autocast:
            chunk = generate_chunk(model, masks, per_mask, generator, spec.shape_noise_scale)
        parts.append({k: v[:remaining] for k, v in chunk.items()})
        remaining -= len(parts[-1]["images"])
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def generate_counterfactuals(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: GenerationSpec | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Write a counterfactual dataset from a generator checkpoint; resumable, deterministic.

    Returns ``out_dir``. A complete folder with the same spec and parent is left as it is.
    """
    spec = (spec or GenerationSpec()).validate()
    out_dir = Path(out_dir)
    parent_sha = sha256_file(checkpoint) if Path(checkpoint).is_file() else None
    model, config, _ = load_cgn(checkpoint, device)  # eval mode; clear error when unreadable
    spec = replace(spec, precision=resolve_precision(spec.precision, model.device))  # the manifest states it
    manifest_path = out_dir / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("spec") == spec.__dict__ and manifest.get("parent", {}).get("sha256") == parent_sha:
            return out_dir
        raise ConfigError(f"{out_dir} holds another counterfactual dataset; choose a new --out or delete it")
    counts = [min(spec.shard_size, spec.num - start) for start in range(0, spec.num, spec.shard_size)]
    stamp = {"seed": spec.seed, "parent_sha256": parent_sha, "spec": spec.__dict__}
    shards = []
    bar = tqdm(total=spec.num, desc=f"generate {config.train.dataset}", unit="img", disable=not progress)
    for index, count in enumerate(counts):
        path = out_dir / f"shard_{index:05d}.safetensors"
        # One metadata entry of canonical JSON: safetensors orders several entries arbitrarily.
        metadata = {"cgn_shard": json.dumps({**stamp, "index": index, "count": count}, sort_keys=True)}
        if not _shard_matches(path, metadata):
            tensors = generate_shard(model, spec, index, count)
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata=metadata)
        shards.append({"file": path.name, "count": count, "sha256": sha256_file(path)})
        bar.update(count)
    bar.close()
    from cgn import __version__

    manifest = {
        "format": FORMAT,
        "count": spec.num,
        "per_mask": 1 if config.model.generator == "cgan" else spec.per_mask,
        "seed": spec.seed,
        "spec": spec.__dict__,
        "dataset": config.train.dataset,
        "generator": config.model.generator,
        "parent": {"path": str(checkpoint), "sha256": parent_sha},
        "config": config.to_dict(),
        "cgn_version": __version__,
        "labels": "shape, texture and background drawn independently and uniformly"
        if config.model.generator == "cgn"
        else "one class label per image (conditional GAN)",
        "shards": shards,
    }
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return out_dir


def _shard_matches(path: Path, metadata: dict[str, str]) -> bool:
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() == metadata
    except (SafetensorError, OSError):
        return False


class CounterfactualDataset(Dataset):
    """A generated counterfactual folder, held in memory as uint8 (300 MB for 100k images).

    Items and :meth:`batch` follow the biased datasets' keys: ``image`` in [-1, 1], ``label``
    (the shape label, the class to learn), ``foreground_attr`` (texture) and
    ``background_attr`` (background), so real and counterfactual data mix freely.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = False) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataUnavailableError(
                f"{self.path} is not a complete counterfactual dataset (no {MANIFEST}); "
                "create it with `cgn generate CKPT --out DIR` (an interrupted run resumes)"
            )
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataUnavailableError(f"{manifest_path} is not a {FORMAT} manifest")
        parts = [self._read_shard(shard, verify) for shard in self.manifest["shards"]]
        self.images = torch.cat([p["images"] for p in parts])  # (N, 3, H, W) uint8
        self.labels = torch.cat([p["shape"] for p in parts])
        self.texture = torch.cat([p["texture"] for p in parts])
        self.background = torch.cat([p["background"] for p in parts])
        if len(self.images) != self.manifest["count"]:
            raise DataUnavailableError(
                f"{self.path} holds {len(self.images)} images, its manifest says {self.manifest['count']}"
            )

    def _read_shard(self, shard: dict, verify: bool) -> dict[str, torch.Tensor]:
        path = self.path / shard["file"]
        if verify and (not path.is_file() or sha256_file(path) != shard["sha256"]):
            raise DataUnavailableError(
                f"{path} is missing or does not match its SHA-256 in the manifest; regenerate it"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {key: f.get_tensor(key) for key in ("images", *LABEL_KEYS)}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"{path} is unreadable ({e}); delete it and rerun `cgn generate` to redo it"
            ) from None
        if len(tensors["images"]) != shard["count"]:
            raise DataUnavailableError(
                f"{path} holds {len(tensors['images'])} images, the manifest says {shard['count']}"
            )
        return tensors

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Generated data has no per-epoch jitter (kept for the training loops' interface)."""

    def batch(self, index: torch.Tensor | list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        return {
            "image": from_uint8(self.images[index]),
            "label": self.labels[index],
            "foreground_attr": self.texture[index],
            "background_attr": self.background[index],
        }

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for {len(self)} counterfactuals")
        return {k: v[0] for k, v in self.batch([i % len(self)]).items()}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(indices)
        return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]

    def __repr__(self) -> str:
        m = self.manifest
        return f"CounterfactualDataset({str(self.path)!r}, n={len(self)}, dataset={m['dataset']}, generator={m['generator']})"
