"""Disentanglement metrics of an MNIST CGN (PAPER.md §0, §1): does each mechanism do its job?

A trained CGN generates counterfactuals whose shape, texture and background labels are drawn
independently and uniformly; each mechanism's output is then judged on its own:

- ``shape_effectiveness``: the digit classifier (``cgn.digit_classifier``, trained on real
  MNIST masks) reads the mask as its shape label;
- ``texture_effectiveness`` / ``background_effectiveness``: the foreground / background map
  is nearest to the prototype of its label's colour (colored, double-colored MNIST) or texture
  (Wildlife MNIST). None where the dataset has no background attribute (colored MNIST);
- ``mask_mean`` and ``mask_binary_share`` (pixels below 0.1 or above 0.9): a good mask is
  binary and covers a digit-sized part of the image;
- ``mask_diversity``: the mean absolute difference between two masks of the same shape label
  (paired within each batch), averaged over the classes. It falls when a shape mechanism draws
  every digit of a class alike (mode collapse), which effectiveness cannot see: a classifier
  trained on such counterfactuals then misreads the real digits' other styles. Real MNIST
  masks score about 0.16;
- ``by_class=True`` adds ``shape_effectiveness_by_class`` (and the texture and background
  ones, and the two leakages): the rate per label 0-9, so a single failing class (an inverted
  mask, a digit drawn as another, one map the digit judge happens to read as its label) shows
  by name instead of as a small shift of the mean;
- ``shape_leakage_foreground`` / ``shape_leakage_background``: the digit classifier's accuracy
  on the grey-scaled maps (stretched per image to [0, 1], see ``stretched_grey``) against their
  own labels; about 0.10 (chance) means no digit shape leaked into them (a map showing its own
  label's digit as a bright shape scores high). Textured maps can sit off chance by
  coincidence (a texture the classifier reads as some digit): ``evaluate_real_data`` gives
  the no-leak reference of each dataset. Blind spot: the classifier knows bright digits on a
  dark ground, so a dark digit on a bright map is mostly missed (real masks drawn that way
  score 0.28, drawn bright 0.99).

``fidelity=True`` adds how close each mechanism's maps come to real ones, which effectiveness
cannot tell (a mechanism that draws one prototypical digit or texture per class scores 1.0):

- ``shape_frechet`` / ``texture_frechet`` / ``background_frechet``: per label, the Fréchet
  distance between Gaussians fitted to features of the generated maps and of the real test
  split's maps of that class (as FID does with Inception features), averaged over the labels.
  The features are the judges' own: the digit classifier's penultimate layer (128-d) for the
  masks, the appearance judge's scaled features for the foreground and background maps (the
  mean colour in the colour datasets, texture statistics on Wildlife). Lower is closer; the
  real training split's maps score about 0 (sampling noise: 0.14 / 0.12 for Wildlife's
  textures and backgrounds). It grows as fewer maps are drawn: compare CGNs on equal
  ``num_samples``;
- ``shape_spread`` / ``texture_spread`` / ``background_spread``: the generated maps' feature
  variance (trace of the covariance) over the real maps', averaged over the labels: below 1,
  the maps of a class vary less than real ones (a sign of mode collapse). The colour datasets'
  real maps vary by their colour jitter.

``evaluate_real_data`` computes the same numbers on a real split, where masks, colours and
textures are the truth: the scores a perfect CGN would reach, and a check of the judges.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cgn.data import DATASETS, build_dataset
from cgn.data.base import IMAGE_SIZE, NUM_CLASSES
from cgn.data.mnist import MNIST
from cgn.data.textures import load_textures, texture_dir
from cgn.data.wildlife import WildlifeMNIST, crop, prepare_texture_bank
from cgn.digit_classifier import DigitClassifier, load_or_train_digit_classifier
from cgn.model import CGN
from cgn.seeding import make_generator

log = logging.getLogger(__name__)

METRICS = (
    "shape_effectiveness",
    "texture_effectiveness",
    "background_effectiveness",
    "mask_mean",
    "mask_binary_share",
    "mask_diversity",
    "shape_leakage_foreground",
    "shape_leakage_background",
)
BINARY_LOW, BINARY_HIGH = 0.1, 0.9
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")
# The judges are fixed: their seeds do not change with the evaluation seed.
JUDGE_SEED = 0
CROPS_PER_TEXTURE = 1000
PROTOTYPES_PER_TEXTURE = 16
HISTOGRAM_BINS = 4  # per channel: a 4×4×4 joint colour histogram

Metrics = dict[str, float | list[float | None] | None]  # METRICS; with by_class, also BY_CLASS
BY_CLASS = {f"{name}_effectiveness_by_class": name for name in ("shape", "texture", "background")} | {
    f"shape_leakage_{where}_by_class": f"leak_{where}" for where in ("foreground", "background")
}
MECHANISMS = ("shape", "texture", "background")
FIDELITY = (*(f"{m}_frechet" for m in MECHANISMS), *(f"{m}_spread" for m in MECHANISMS))
FeatureSet = tuple[torch.Tensor, torch.Tensor]  # features (B, D) and labels (B,) of one mechanism's maps


# -- appearance features and nearest-prototype classifiers ------------------------------------
def to_unit(maps: torch.Tensor) -> torch.Tensor:
    """RGB maps in [-1, 1] → [0, 1] (clamped)."""
    return ((maps + 1) / 2).clamp(0.0, 1.0)


def to_grey(maps: torch.Tensor) -> torch.Tensor:
    """RGB maps (B, 3, H, W) in [-1, 1] → grey (B, 1, H, W) in [0, 1] (luma weights)."""
    weights = torch.tensor(LUMA, dtype=maps.dtype, device=maps.device)
    return torch.einsum("bchw,c->bhw", to_unit(maps), weights)[:, None]  # (B, 1, H, W)


def stretched_grey(maps: torch.Tensor) -> torch.Tensor:
    """Grey maps (B, 1, H, W) stretched per image to span [0, 1]; flat maps (range < 1e-3) → 0.

    What the leakage metrics show the digit classifier. Without the stretch a shape-free but
    label-coloured map is read as whatever digit its grey level resembles, so a constant map
    scores k/10 by coincidence (0.2 on real colored MNIST, 0.004 on double-colored). Stretched,
    every flat map is the same input and scores chance; a faint leaked shape is amplified.
    """
    grey = to_grey(maps)  # (B, 1, H, W)
    low = grey.amin((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    span = grey.amax((1, 2, 3), keepdim=True) - low
    return torch.where(span > 1e-3, (grey - low) / span.clamp_min(1e-3), torch.zeros_like(grey))


def mean_color(maps: torch.Tensor) -> torch.Tensor:
    """The spatial mean colour (B, 3) in [0, 1] of RGB maps (B, 3, H, W) in [-1, 1]."""
    return to_unit(maps).mean((2, 3))


def texture_features(maps: torch.Tensor) -> torch.Tensor:
    """Shift-invariant texture statistics (B, 76) of RGB maps (B, 3, H, W) in [-1, 1].

    Per-channel mean and std (6), a 4×4×4 joint colour histogram (64) and the mean absolute
    horizontal and vertical differences per channel (6, stripe direction and frequency). All
    are invariant to the CGN's random circular shift.
    """
    x = to_unit(maps)  # (B, 3, H, W)
    mean, std = x.mean((2, 3)), x.std((2, 3))  # (B, 3) each
    q = (x * HISTOGRAM_BINS).long().clamp(max=HISTOGRAM_BINS - 1)  # (B, 3, H, W) bin per channel
    code = (q[:, 0] * HISTOGRAM_BINS + q[:, 1]) * HISTOGRAM_BINS + q[:, 2]  # (B, H, W)
    code = code.flatten(1)  # (B, H · W)
    histogram = torch.zeros(len(x), HISTOGRAM_BINS**3, dtype=x.dtype, device=x.device)
    histogram.scatter_add_(
        1, code, torch.full(code.shape, 1.0 / code.shape[1], dtype=x.dtype, device=x.device)
    )  # (B, 64)
    dx = (x[..., 1:] - x[..., :-1]).abs().mean((2, 3))  # (B, 3)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((2, 3))  # (B, 3)
    return torch.cat([mean, std, histogram, dx, dy], dim=1)


def seam_contrast(maps: torch.Tensor) -> float:
    """How much the seam where a map's opposite edges meet stands out, for maps (B, C, H, W).

    The mean absolute difference across the wrap (last column against first, last row against
    first) over the mean absolute difference between neighbours inside the map, both axes
    pooled. The shuffler's circular shift puts that seam inside the image: 1 means it looks like
    any other pair of neighbours (a map that tiles seamlessly), larger means a visible cross.
    """
    x = maps.float()
    inside = torch.cat([(x[..., 1:] - x[..., :-1]).flatten(), (x[..., 1:, :] - x[..., :-1, :]).flatten()])
    wrap = torch.cat([(x[..., 0] - x[..., -1]).flatten(), (x[..., 0, :] - x[..., -1, :]).flatten()])
    return (wrap.abs().mean() / inside.abs().mean().clamp_min(1e-12)).item()


@dataclass
class PrototypeClassifier:
    """Nearest prototype in a scaled feature space: ``argmin_p ‖(φ(x) − c_p) / s‖`` → label of p."""

    features: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [-1, 1] → (B, D)
    prototypes: torch.Tensor  # (P, D)
    prototype_labels: torch.Tensor  # (P,)
    scale: torch.Tensor  # (D,)

    @torch.no_grad()
    def predict(self, maps: torch.Tensor) -> torch.Tensor:
        """Class predictions (B,) for RGB maps (B, 3, H, W) in [-1, 1]."""
        feats = self.features(maps).float()  # (B, D)
        scale = self.scale.to(feats.device)
        distances = torch.cdist(feats / scale, self.prototypes.to(feats.device) / scale)  # (B, P)
        return self.prototype_labels.to(feats.device)[distances.argmin(1)]


def color_classifier(colors: torch.Tensor) -> PrototypeClassifier:
    """Nearest palette colour (10, 3) in [0, 1] to a map's mean colour."""
    return PrototypeClassifier(mean_color, colors.float(), torch.arange(len(colors)), torch.ones(colors.shape[1]))


def texture_classifier(
    bank: torch.Tensor,
    *,
    seed: int = JUDGE_SEED,
    crops_per_texture: int = CROPS_PER_TEXTURE,
    prototypes_per_texture: int = PROTOTYPES_PER_TEXTURE,
) -> PrototypeClassifier:
    """Prototypes of each texture of a Wildlife bank (10, 156, 156, 3) from random 32×32 crops.

    A 150×150 texture photo is not stationary (a stripy part, a plain part), so one mean per
    class mixes its modes; each class gets ``prototypes_per_texture`` k-means centres instead.
    Features are scaled by their pooled within-class standard deviation.
    """
    generator = make_generator(seed, "texture_prototypes")
    classes = len(bank)
    labels = torch.arange(classes).repeat_interleave(crops_per_texture)  # (10 · n,)
    feats = texture_features(random_crops(bank, labels, generator))  # (10 · n, D)
    grouped = feats.view(classes, crops_per_texture, -1)  # (10, n, D)
    scale = (grouped - grouped.mean(1, keepdim=True)).flatten(0, 1).std(0) + 1e-2  # (D,); floor for empty bins
    centres = kmeans(grouped / scale, prototypes_per_texture, generator) * scale  # (10, k, D)
    return PrototypeClassifier(
        texture_features,
        centres.flatten(0, 1),  # (10 · k, D)
        torch.arange(classes).repeat_interleave(prototypes_per_texture),
        scale,
    )


def random_crops(bank: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniformly placed 32×32 crops (B, 3, 32, 32) in [-1, 1] of ``bank[labels]``."""
    high = bank.shape[1] - IMAGE_SIZE + 1
    return crop(bank, labels, torch.randint(0, high, (len(labels), 2), generator=generator))


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 25) -> torch.Tensor:
    """Lloyd's k-means of each group of points (G, N, D) from ``k`` seeded random starts → (G, k, D)."""
    groups, n, dim = x.shape
    starts = torch.stack([torch.randperm(n, generator=generator)[:k] for _ in range(groups)])  # (G, k)
    centres = torch.gather(x, 1, starts[..., None].expand(groups, k, dim))  # (G, k, D)
    offsets = torch.arange(groups)[:, None] * k  # (G, 1): cluster ids are unique across groups
    for _ in range(iterations):
        assignment = (torch.cdist(x, centres).argmin(2) + offsets).flatten()  # (G · N,)
        sums = torch.zeros(groups * k, dim, dtype=x.dtype).index_add_(0, assignment, x.reshape(-1, dim))  # (G · k, D)
        counts = torch.bincount(assignment, minlength=groups * k)[:, None]  # (G · k, 1)
        flat = torch.where(counts > 0, sums / counts.clamp_min(1), centres.reshape(-1, dim))  # empty clusters stay
        centres = flat.reshape(groups, k, dim)
    return centres


def appearance_classifiers(
    dataset: str, data_root: str | os.PathLike | None = None
) -> tuple[PrototypeClassifier, PrototypeClassifier | None]:
    """(foreground, background) judges of a dataset; background None where it has no attribute."""
    cls = DATASETS.get(dataset)
    if issubclass(cls, WildlifeMNIST):
        return _texture_judges(texture_dir(data_root).resolve())
    foreground = color_classifier(cls.foreground_colors)
    background = color_classifier(cls.background_colors) if cls.has_background_attribute else None
    return foreground, background


@functools.lru_cache(maxsize=4)
def _texture_judges(folder: Path) -> tuple[PrototypeClassifier, PrototypeClassifier]:
    """The Wildlife judges of a texture folder, built once per process (a few seconds each)."""
    textures = load_textures(folder.parent)
    return (
        texture_classifier(prepare_texture_bank(textures["object"])),
        texture_classifier(prepare_texture_bank(textures["background"])),
    )


# -- mask statistics and tallies --------------------------------------------------------------
def mask_statistics(masks: torch.Tensor) -> tuple[float, float]:
    """(mean value, share of pixels below 0.1 or above 0.9) of masks in [0, 1]."""
    binary = (masks < BINARY_LOW) | (masks > BINARY_HIGH)
    return float(masks.double().mean()), float(binary.double().mean())


def shape_leakage(classifier: DigitClassifier, maps: torch.Tensor, labels: torch.Tensor) -> float:
    """Digit-classifier accuracy on stretched grey RGB maps (B, 3, H, W) in [-1, 1] against ``labels``."""
    return float((classifier.predict(stretched_grey(maps)).cpu() == labels.cpu()).double().mean())


class _Tally:
    """Running sums of correct predictions and mask statistics over batches."""

    def __init__(self) -> None:
        self.correct: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.by_label: dict[str, torch.Tensor] = {}  # name → (2, K): correct, seen per label
        self.mask_sum = self.mask_binary = 0.0
        self.mask_pixels = 0
        self.pair_sums = torch.zeros(NUM_CLASSES, dtype=torch.float64)
        self.pair_counts = torch.zeros(NUM_CLASSES, dtype=torch.long)

    def add(self, name: str, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        hits, labels = predictions.cpu() == labels.cpu(), labels.cpu()
        self.correct[name] = self.correct.get(name, 0) + int(hits.sum())
        self.counts[name] = self.counts.get(name, 0) + len(labels)
        by_label = self.by_label.setdefault(name, torch.zeros(2, NUM_CLASSES, dtype=torch.long))
        by_label[0].index_add_(0, labels, hits.long())  # correct per label
        by_label[1].index_add_(0, labels, torch.ones_like(labels))  # seen per label

    def add_masks(self, masks: torch.Tensor, labels: torch.Tensor) -> None:
        self.mask_sum += float(masks.double().sum())
        self.mask_binary += float(((masks < BINARY_LOW) | (masks > BINARY_HIGH)).sum())
        self.mask_pixels += masks.numel()
        flat, labels = masks.flatten(1).double().cpu(), labels.cpu()
        for c in labels.unique().tolist():
            same = flat[labels == c]  # (n_c, H·W)
            half = len(same) // 2  # pair the first half with the second
            if half:
                self.pair_sums[c] += (same[:half] - same[half : 2 * half]).abs().mean(1).sum()
                self.pair_counts[c] += half

    def result(self) -> Metrics:
        rate = {name: self.correct[name] / self.counts[name] for name in self.counts}
        return {
            "shape_effectiveness": rate.get("shape"),
            "texture_effectiveness": rate.get("texture"),
            "background_effectiveness": rate.get("background"),
            "mask_mean": self.mask_sum / self.mask_pixels,
            "mask_binary_share": self.mask_binary / self.mask_pixels,
            "mask_diversity": self._mask_diversity(),
            "shape_leakage_foreground": rate.get("leak_foreground"),
            "shape_leakage_background": rate.get("leak_background"),
        }

    def per_label(self) -> Metrics:
        """The rates per label (None for a label never drawn) under the ``BY_CLASS`` keys."""
        out: Metrics = {}
        for key, name in BY_CLASS.items():
            if name not in self.by_label:
                out[key] = None
                continue
            correct, seen = self.by_label[name].tolist()
            out[key] = [c / n if n else None for c, n in zip(correct, seen, strict=True)]
        return out

    def _mask_diversity(self) -> float | None:
        seen = self.pair_counts > 0
        if not seen.any():
            return None
        return float((self.pair_sums[seen] / self.pair_counts[seen]).mean())


Judges = tuple[DigitClassifier, PrototypeClassifier, PrototypeClassifier | None]  # digits, texture, background
Labels = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # shape, texture, background labels (B,)


def _tally_batch(
    tally: _Tally,
    judges: Judges,
    mask: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor | None,
    labels: Labels,
) -> None:
    """Judge one batch: mask (B, 1, H, W) in [0, 1], maps (B, 3, H, W) in [-1, 1], three labels."""
    digits, texture_judge, background_judge = judges
    y_shape, y_texture, y_background = labels
    tally.add("shape", digits.predict(mask), y_shape)
    tally.add("texture", texture_judge.predict(foreground), y_texture)
    tally.add("leak_foreground", digits.predict(stretched_grey(foreground)), y_texture)
    tally.add_masks(mask, y_shape)
    if background is not None and y_background is not None:
        if background_judge is not None:
            tally.add("background", background_judge.predict(background), y_background)
        tally.add("leak_background", digits.predict(stretched_grey(background)), y_background)


def _digit_judge(
    digit_classifier: DigitClassifier | None, data_root: str | os.PathLike | None, device: torch.device
) -> DigitClassifier:
    classifier = digit_classifier
    if classifier is None:
        classifier = load_or_train_digit_classifier(data_root, seed=JUDGE_SEED)
    if classifier.device != device:
        classifier = copy.deepcopy(classifier).to(device)  # leave the caller's model where it is
    return classifier.eval()


# -- how close the maps come to real ones ------------------------------------------------------
def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to samples a (N, D) and b (M, D), in float64:
    ``‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa^½ Σb Σa^½)^½``. Needs two samples on each side."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))  # (D, D), also for D = 1
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def _per_label(fn: Callable[[torch.Tensor, torch.Tensor], float | None], feats, labels, real_feats, real_labels):
    """``fn(generated, real)`` for each label 0-9 with at least two maps on both sides, else None."""
    out: list[float | None] = []
    for k in range(NUM_CLASSES):
        generated, real = feats[labels == k], real_feats[real_labels == k]
        out.append(fn(generated, real) if len(generated) > 1 and len(real) > 1 else None)
    return out


def _spread(generated: torch.Tensor, real: torch.Tensor) -> float | None:
    real_variance = float(real.double().var(0).sum())
    return float(generated.double().var(0).sum()) / real_variance if real_variance > 1e-12 else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def judge_features(judge: PrototypeClassifier, maps: torch.Tensor) -> torch.Tensor:
    """The judge's features (B, D) of RGB maps, divided by its scale: the space it classifies in."""
    return judge.features(maps).float().cpu() / judge.scale


def map_fidelity(
    generated: dict[str, FeatureSet | None], real: dict[str, FeatureSet | None], by_class: bool = False
) -> Metrics:
    """``FIDELITY`` (module docstring) from the features and labels of each mechanism's
    generated and real maps (keys ``MECHANISMS``: masks in the digit judge's space
    (``DigitClassifier.embed``), foreground and background maps in their appearance judge's
    scaled space (:func:`judge_features`)); a mechanism's entries are None where either side
    is None or missing (no background attribute)."""
    metrics: Metrics = {}
    for mechanism in MECHANISMS:
        gen, ref = generated.get(mechanism), real.get(mechanism)
        distances = None if gen is None or ref is None else _per_label(frechet_distance, *gen, *ref)
        spreads = None if gen is None or ref is None else _per_label(_spread, *gen, *ref)
        metrics[f"{mechanism}_frechet"] = None if distances is None else _mean(distances)
        metrics[f"{mechanism}_spread"] = None if spreads is None else _mean(spreads)
        if by_class:
            metrics[f"{mechanism}_frechet_by_class"], metrics[f"{mechanism}_spread_by_class"] = distances, spreads
    order = [*FIDELITY, *(f"{k}_by_class" for k in FIDELITY if by_class)]
    return {key: metrics[key] for key in order}


def _real_maps(ds, n: int, batch_size: int):
    """Batches of a real split up to ``n``: (masks (b, 32, 32) bool, foreground, background or
    None, (digit labels, foreground attribute, background attribute or None))."""
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n))
        attributes = {k: v[index] for k, v in ds.attributes.items()}
        masks = ds.masks[index]  # (b, 32, 32) bool
        foreground = ds.render(torch.ones_like(masks), attributes)  # (b, 3, 32, 32)
        background = ds.render(torch.zeros_like(masks), attributes) if ds.has_background_attribute else None
        y_background = attributes["background_attr"] if ds.has_background_attribute else None
        yield masks, foreground, background, (ds.labels[index], attributes["foreground_attr"], y_background)


def _add_features(
    collected: dict[str, list[FeatureSet]],
    judges: Judges,
    mask: torch.Tensor,
    foreground: torch.Tensor,
    background: torch.Tensor | None,
    labels: Labels,
) -> None:
    """Append one batch's features and labels per mechanism to ``collected`` (arguments as for
    ``_tally_batch``): masks in the digit judge's space, maps in their appearance judges'."""
    digits, texture_judge, background_judge = judges
    y_shape, y_texture, y_background = labels
    collected.setdefault("shape", []).append((digits.embed(mask).cpu(), y_shape.cpu()))
    collected.setdefault("texture", []).append((judge_features(texture_judge, foreground), y_texture.cpu()))
    if background is not None and background_judge is not None and y_background is not None:
        features = judge_features(background_judge, background)
        collected.setdefault("background", []).append((features, y_background.cpu()))


def _feature_sets(collected: dict[str, list[FeatureSet]]) -> dict[str, FeatureSet | None]:
    """The batches of :func:`_add_features` joined per mechanism; None for a mechanism never added."""
    return {
        m: (torch.cat([f for f, _ in collected[m]]), torch.cat([y for _, y in collected[m]]))
        if m in collected
        else None
        for m in MECHANISMS
    }


@functools.lru_cache(maxsize=4)
def real_features(
    dataset: str,
    root: Path | None,
    digits: DigitClassifier,
    split: str = "test",
    max_samples: int | None = None,
) -> dict[str, FeatureSet | None]:
    """Features and labels of a real split's masks (in ``digits``' space), foreground and
    background maps (in their judges' spaces; background None where the dataset has none),
    built once per process: the reference of :func:`map_fidelity` (the test split, as
    ``evaluate_cgn`` uses it)."""
    ds = build_dataset(dataset, split, JUDGE_SEED, root)
    judges = (digits, *appearance_classifiers(dataset, root))
    collected: dict[str, list[FeatureSet]] = {}
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    for masks, foreground, background, labels in _real_maps(ds, n, 1000):
        _add_features(collected, judges, masks[:, None].float(), foreground, background, labels)
    return _feature_sets(collected)


# -- how far a rate can be trusted ------------------------------------------------------------
RATES = (
    "shape_effectiveness",
    "texture_effectiveness",
    "background_effectiveness",
    "shape_leakage_foreground",
    "shape_leakage_background",
)


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % at z = 1.96) of a rate measured on ``n`` independent draws.

    Unlike the normal approximation it stays inside [0, 1] and does not shrink to a point at
    rates of 0 or 1: 10,000 of 10,000 right gives [0.99962, 1.0].
    """
    if n <= 0:
        raise ValueError(f"a rate needs at least one draw, got n={n}")
    shrink = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(max(rate * (1 - rate), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def confidence_intervals(metrics: Metrics, num_samples: int) -> dict[str, tuple[float, float]]:
    """95 % Wilson intervals of the effectiveness and leakage rates of ``evaluate_cgn``'s metrics
    (each counted over all ``num_samples`` counterfactuals; rates that are None are left out).
    Two CGNs whose intervals overlap are not told apart by that many counterfactuals."""
    return {key: wilson_interval(metrics[key], num_samples) for key in RATES if metrics.get(key) is not None}


# -- the two entry points ---------------------------------------------------------------------
def evaluate_cgn(
    model: CGN,
    dataset: str,
    *,
    num_samples: int = 10_000,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    batch_size: int = 500,
    digit_classifier: DigitClassifier | None = None,
    shape_noise_scale: float = 1.0,
    by_class: bool = False,
    fidelity: bool = False,
) -> Metrics:
    """The disentanglement metrics (module docstring) of ``model`` trained on ``dataset``.

    Generates ``num_samples`` counterfactuals in eval mode, with shape, texture and background
    labels drawn independently and uniformly and independent noise per mechanism, all from a
    generator seeded by ``(seed, dataset)``. The judges are fixed (seed 0) so that scores of
    different seeds and models are comparable; ``digit_classifier`` defaults to the cached one
    of ``data_root`` (trained on first use). Returns fractions in [0, 1] (the Fréchet
    distances and spreads excepted); the background
    metrics are None where the dataset has none. ``shape_noise_scale`` scales the shape
    mechanism's noise, as ``GenerationSpec.shape_noise_scale`` does for generated datasets.
    ``by_class`` adds the effectiveness and leakage per label (``BY_CLASS``); ``fidelity`` adds
    ``FIDELITY`` against the real test split (and their ``_by_class`` lists with ``by_class``).
    """
    if num_samples <= 0 or batch_size <= 0:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples} and {batch_size}")
    texture_judge, background_judge = appearance_classifiers(dataset, data_root)
    digits = _digit_judge(digit_classifier, data_root, model.device)
    generator = make_generator(seed, "evaluate_cgn", dataset)
    tally = _Tally()
    generated: dict[str, list[FeatureSet]] = {}  # with fidelity: each batch's features per mechanism
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - start)
                y_shape, y_texture, y_background = torch.randint(
                    0, NUM_CLASSES, (3, n), generator=generator
                )  # (n,) each
                u_shape, u_texture, u_background = (model.sample_noise(n, generator) for _ in range(3))
                noise = (u_shape * shape_noise_scale, u_texture, u_background)
                out = model(y_shape, y_texture, y_background, noise=noise, generator=generator)
                _tally_batch(
                    tally,
                    (digits, texture_judge, background_judge),
                    out.mask,  # (n, 1, 32, 32)
                    out.foreground,  # (n, 3, 32, 32)
                    out.background,  # (n, 3, 32, 32)
                    (y_shape, y_texture, y_background),
                )
                if fidelity:
                    judges = (digits, texture_judge, background_judge)
                    labels = (y_shape, y_texture, y_background)
                    _add_features(generated, judges, out.mask, out.foreground, out.background, labels)
    finally:
        model.train(was_training)
    metrics = tally.result() | (tally.per_label() if by_class else {})
    if background_judge is None:
        metrics["background_effectiveness"] = None
    if fidelity:
        root = None if data_root is None else Path(data_root).resolve()
        metrics |= map_fidelity(_feature_sets(generated), real_features(dataset, root, digits), by_class)
    log.info("evaluate_cgn(%s, n=%d, seed=%d): %s", dataset, num_samples, seed, metrics)
    return metrics


@torch.no_grad()
def evaluate_real_data(
    dataset: str,
    *,
    split: str = "test",
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    max_samples: int | None = None,
    batch_size: int = 1000,
    digit_classifier: DigitClassifier | None = None,
    mnist: MNIST | None = None,
    by_class: bool = False,
) -> Metrics:
    """The metrics of ``evaluate_cgn`` on a real split: what a perfect CGN would score.

    The mask is the real binary digit mask, the foreground / background map the full-frame
    colour or texture crop the dataset composes (its ``render`` with an all-foreground /
    all-background mask), the labels the digit label and the two attribute indices. Expect
    effectiveness ≈ 1, a binary share of 1 and leakage ≈ 0.1. Leakage on the background is
    None where the dataset has no background attribute (its background is black).
    ``by_class`` adds the rates per label, as for ``evaluate_cgn``.
    """
    ds = build_dataset(dataset, split, seed, data_root, mnist=mnist)
    texture_judge, background_judge = appearance_classifiers(dataset, data_root)
    digits = _digit_judge(digit_classifier, data_root, torch.device("cpu"))
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    tally = _Tally()
    for masks, foreground, background, labels in _real_maps(ds, n, batch_size):
        judges = (digits, texture_judge, background_judge)
        _tally_batch(tally, judges, masks[:, None].float(), foreground, background, labels)
    metrics = tally.result() | (tally.per_label() if by_class else {})
    log.info("evaluate_real_data(%s/%s, n=%d): %s", dataset, split, n, metrics)
    return metrics
