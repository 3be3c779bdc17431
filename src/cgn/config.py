"""Experiment configuration: frozen dataclasses, loaded from TOML, with typed overrides.

A config file has the sections ``[model]``, ``[loss]`` and ``[train]`` (see ``configs/``).
Unknown keys, wrong types and invalid values are :class:`ConfigError` with a one-line
message; command-line overrides (``train.batch_size=64``) go through the same checks, so
they can never silently replace a value with a default (a pitfall of the original code).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgn.errors import ConfigError
from cgn.precision import PRECISIONS


@dataclass(frozen=True)
class ModelConfig:
    """The MNIST-scale CGN and its discriminator (PAPER.md §1.2)."""

    num_classes: int = 10
    latent_dim: int = 32
    ngf: int = 32
    ndf: int = 512
    image_size: int = 32
    generator: str = "cgn"  # "cgn", or "cgan": the Original + GAN baseline (no mechanisms)
    discriminator: str = "linear"  # "linear" or "conv"
    init_type: str = "orthogonal"  # "orthogonal" or "normal"
    init_gain: float = 0.1
    # Ours (0 = the paper): the mask is clamp(InstanceNorm(x) − offset). The instance-normalised
    # map has mean 0 and variance 1, so a binary mask covering a share p of the image has its
    # "on" value at sqrt((1 − p) / p): with offset 0.5 only masks up to 31 % coverage can be
    # binary, and at initialisation the mask covers about 31 % instead of 50 %.
    mask_offset: float = 0.0
    # The colour-blind shape-view discriminator of ``loss.shape_view_weight`` (ours; unused
    # while that weight is 0): its architecture by name, on one input channel, and its width.
    shape_discriminator: str = "linear_projection"
    shape_ndf: int = 512
    # How the mechanisms' up-blocks compute "upsample ×2, then conv 3×3": "interpolate" as the
    # paper's code, or "phase" (ours): the same function at the input's size, about half the
    # multiply-adds, equal up to float rounding (mechanisms.UpsampleConv2d).
    upsample_conv: str = "interpolate"
    # The texture and background mechanisms' convolution borders: "zeros" as the paper, or
    # "circular" (ours): the shuffler shifts each map circularly, and a map drawn with zero
    # borders shows the seam where its edges meet as a cross inside the shifted image.
    map_padding: str = "zeros"

    def validate(self) -> None:
        _check(
            self.init_type in ("orthogonal", "normal"),
            f"model.init_type must be 'orthogonal' or 'normal', not {self.init_type!r}",
        )
        _check(self.generator in ("cgn", "cgan"), f"model.generator must be 'cgn' or 'cgan', not {self.generator!r}")
        _check(
            self.upsample_conv in ("interpolate", "phase"),
            f"model.upsample_conv must be 'interpolate' or 'phase', not {self.upsample_conv!r}",
        )
        _check(
            self.map_padding in ("zeros", "circular"),
            f"model.map_padding must be 'zeros' or 'circular', not {self.map_padding!r}",
        )
        _check(
            self.map_padding == "zeros" or self.generator == "cgn",
            "model.map_padding applies to the CGN's texture and background maps; model.generator='cgan' has none",
        )
        _check(self.image_size % 4 == 0 and self.image_size > 0, "model.image_size must be a positive multiple of 4")
        for name in ("num_classes", "latent_dim", "ngf", "ndf", "shape_ndf"):
            _check(getattr(self, name) > 0, f"model.{name} must be positive")


@dataclass(frozen=True)
class LossConfig:
    """Generator and discriminator losses (PAPER.md §1.3)."""

    adversarial_weight: float = 1.0
    mask_weight: float = 0.1  # λ_mask for the binary-entropy mask loss
    style_weights: tuple[float, ...] = (0.05, 0.1, 0.01, 0.0)  # relu1_2, relu2_2, relu3_3, relu4_3
    style_network: str = "vgg16"  # "vgg16" (ImageNet weights), "vgg16_random", or "none"
    style_weights_path: str = ""  # torchvision vgg16 state dict; empty = torchvision's cache
    # Our addition (0 = off, the paper): hinge penalty on a mask's mean outside [min, max].
    mask_size_weight: float = 0.0
    mask_size_min: float = 0.05
    mask_size_max: float = 0.5
    # Our addition (0 = off, the paper): penalty on the mean mask over the frame's outer pixels.
    mask_border_weight: float = 0.0
    mask_border_width: int = 2  # also the frame width of train.frame_init
    # Our addition (0 = off, the paper): a mode-seeking term (Mao et al. 2019) on the shape
    # mechanism against masks that all look alike: 1 / (mean|m1 − m2| / mean|u1 − u2| + ε) for
    # two noise draws u1, u2 of the same class.
    mode_seeking_weight: float = 0.0
    # Ours (1 = throughout): the share of the schedule during which the mode-seeking term is
    # on; after it the shapes train on the adversarial and mask terms alone.
    mode_seeking_until: float = 1.0
    # Our addition (0 = off, the paper): the same term on the texture and on the background
    # mechanism, their maps compared by amplitude spectra (|2-D DFT| per channel), which the
    # shuffler's circular shift leaves unchanged; throughout the schedule. Against texture
    # mechanisms that draw one pattern per class whatever the noise.
    texture_mode_seeking_weight: float = 0.0
    # Our addition (0 = off, the paper): weight of the LSGAN loss of a second discriminator
    # (model.shape_discriminator, own optimiser) that sees each image only as its colour-blind
    # shape view (losses.shape_view), with the label. The main discriminator can tell classes
    # apart by colour alone; this one only by the digit's shape.
    shape_view_weight: float = 0.0
    # Ours: the shape view's colour distance from the frame, "euclidean" (to the frame's mean
    # colour), "mahalanobis" (in units of the frame's colour spread, whose 3 × 3 covariance
    # gets shape_view_variance_floor added: fades a textured background's edges) or
    # "two_gaussian" (tanh of the log ratio of each pixel's distances from the frame's colour
    # Gaussian and from one fitted to the digit's colours; tried on Wildlife, not adopted).
    shape_view_distance: str = "euclidean"
    shape_view_variance_floor: float = 1e-3
    # Ours: where the shape critic's gradient reaches the generator. "image": through the
    # composite into all three mechanisms; "mask": into the shape mechanism only (the critic
    # sees the same composite, built from a detached foreground and background).
    shape_view_gradient: str = "image"
    # Our addition (0 = off): a matching-aware shape critic (Reed et al. 2016). Its update also
    # scores each real shape view under a wrong label (drawn uniformly from the other classes)
    # as fake, with this weight relative to the fake term, so that it must judge whether the
    # digit is of the label's class rather than whether it looks like any digit.
    shape_view_mismatch_weight: float = 0.0
    # Our addition (0 = off): the same for the main discriminator, whose class evidence is the
    # digit's texture and the background as much as the shape.
    mismatch_weight: float = 0.0
    # Ours (0 = from the first step): the share of the schedule after which the two
    # matching-aware terms above switch on, so that the masks first settle under the plain
    # critics.
    mismatch_start: float = 0.0
    # Our addition (0 = off, the paper): the R1 penalty (Mescheder et al. 2018) on the main
    # discriminator, r1_weight / 2 · E‖∇ₓ D(x_real)‖², which damps the critic's oscillation
    # around the real data. Lazy (Karras et al. 2020): applied every r1_every-th step, scaled
    # by r1_every.
    r1_weight: float = 0.0
    r1_every: int = 1
    # Our addition (0 = off, the paper): InfoGAN's term for a categorical code (Chen et al.
    # 2016) with the class label as the code. A small classifier (discriminator.MapLabelReader,
    # own optimiser) reads the label back from each generated foreground and background map;
    # generator and reader both minimise its cross-entropy, this weight times the sum of the
    # two maps' terms. Against texture mechanisms that draw some of one class's maps like
    # another class's (Wildlife: class 2's tiger stripes drawn as class 6's).
    label_info_weight: float = 0.0
    # Ours: what the reader sees. "map": the whole foreground and background maps (the first
    # try: the generator wrote labels into the maps' parts that no critic sees); "visible": each
    # map under another sample's mask (the batch rolled by one, without gradient): the
    # foreground inside it, the background outside it, so the label must show where a
    # composite shows the map, and the mask's shape does not give it away.
    label_info_view: str = "visible"
    # Ours (0 = from the first step): the share of the schedule before which the term trains
    # the reader alone (on the maps without gradient), so that the masks first settle under the
    # critics and the generator then meets a reader that already reads.
    label_info_start: float = 0.0

    def validate(self) -> None:
        _check(len(self.style_weights) == 4, "loss.style_weights needs 4 values (relu1_2, relu2_2, relu3_3, relu4_3)")
        _check(
            self.style_network in ("vgg16", "vgg16_random", "none"),
            f"loss.style_network must be 'vgg16', 'vgg16_random' or 'none', not {self.style_network!r}",
        )
        _check(
            0 <= self.mask_size_min < self.mask_size_max <= 1,
            "loss.mask_size_min < loss.mask_size_max must lie in [0, 1]",
        )
        _check(self.mask_border_width > 0, "loss.mask_border_width must be positive")
        for name in ("adversarial_weight", "mask_weight", "mask_size_weight", "mask_border_weight"):
            _check(getattr(self, name) >= 0, f"loss.{name} must not be negative")
        _check(all(w >= 0 for w in self.style_weights), "loss.style_weights must not be negative")
        _check(self.mode_seeking_weight >= 0, "loss.mode_seeking_weight must not be negative")
        _check(self.texture_mode_seeking_weight >= 0, "loss.texture_mode_seeking_weight must not be negative")
        _check(self.shape_view_weight >= 0, "loss.shape_view_weight must not be negative")
        _check(
            self.shape_view_distance in ("euclidean", "mahalanobis", "two_gaussian"),
            "loss.shape_view_distance must be 'euclidean', 'mahalanobis' or 'two_gaussian', "
            f"not {self.shape_view_distance!r}",
        )
        _check(self.shape_view_variance_floor > 0, "loss.shape_view_variance_floor must be positive")
        _check(
            self.shape_view_gradient in ("image", "mask"),
            f"loss.shape_view_gradient must be 'image' or 'mask', not {self.shape_view_gradient!r}",
        )
        _check(self.mismatch_weight >= 0, "loss.mismatch_weight must not be negative")
        _check(self.shape_view_mismatch_weight >= 0, "loss.shape_view_mismatch_weight must not be negative")
        _check(
            not self.shape_view_mismatch_weight or self.shape_view_weight,
            "loss.shape_view_mismatch_weight needs the shape critic: set loss.shape_view_weight > 0",
        )
        _check(0 <= self.mismatch_start < 1, "loss.mismatch_start must lie in [0, 1) (0 = from the first step)")
        _check(self.r1_weight >= 0, "loss.r1_weight must not be negative (0 = no R1 penalty)")
        _check(self.label_info_weight >= 0, "loss.label_info_weight must not be negative (0 = off)")
        _check(0 <= self.label_info_start < 1, "loss.label_info_start must lie in [0, 1) (0 = from the first step)")
        _check(
            self.label_info_view in ("map", "visible"),
            f"loss.label_info_view must be 'map' or 'visible', not {self.label_info_view!r}",
        )
        _check(self.r1_every > 0, "loss.r1_every must be positive (1 = every step)")
        _check(0 < self.mode_seeking_until <= 1, "loss.mode_seeking_until must lie in (0, 1] (1 = the whole schedule)")

    @property
    def uses_style(self) -> bool:
        return self.style_network != "none" and any(w != 0 for w in self.style_weights)


@dataclass(frozen=True)
class TrainConfig:
    """The adversarial training schedule (PAPER.md §1.3)."""

    dataset: str = "colored_mnist"
    seed: int = 0
    batch_size: int = 16
    epochs: float = 15.0  # used when steps == 0
    steps: int = 0  # > 0 overrides epochs
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "auto" (bf16 where native: cgn.precision)
    # Ours (0 = off, the paper): keep an exponential moving average of the generator's weights
    # (decay per step) and use it for samples, the final weights and counterfactuals.
    ema_decay: float = 0.0
    # The average's warm-up: the decay after n updates is min(ema_decay, (1 + n) / (ema_warmup + n)).
    # With 10, a decay of 0.999 is reached only after 8,990 updates, so shorter runs average
    # over about their last tenth; 2 makes the first updates a plain running mean instead.
    ema_warmup: float = 10.0
    # Ours (False = the paper's init): start the background mechanism's output BatchNorm bias at
    # atanh of the real frames' mean colour, so that its first outputs already look like a
    # background (with the paper's zero bias, the batch mean of the map is mid-grey).
    frame_init: bool = False
    # Ours (0 = off, the paper): clip the discriminator's gradient to this L2 norm before each
    # update. A step under the limit is untouched (bit for bit); a spike is cut before it feeds
    # back through the generator (docs/recipes.md, "Loss spikes").
    d_grad_clip: float = 0.0
    # Ours (1 = a constant learning rate, the paper): from this share of the schedule on, both
    # learning rates fall linearly to 0 at the last step.
    lr_decay_start: float = 1.0
    # Ours ((1, 1, 1) = one learning rate, the paper's MNIST code): the shape, texture and
    # background mechanisms learn at lr times these factors (the ImageNet CGN gives each
    # mechanism its own rate, PAPER.md §2); the label embedding keeps lr.
    mechanism_lr_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    device: str = "auto"  # "auto", "cpu", "cuda"
    log_every: int = 50
    sample_every: int = 2000
    checkpoint_every: int = 1000

    def validate(self) -> None:
        _check(self.batch_size > 0, "train.batch_size must be positive")
        _check(self.steps >= 0, "train.steps must not be negative (0 = train for train.epochs)")
        _check(self.epochs >= 0, "train.epochs must not be negative")
        _check(self.steps > 0 or self.epochs > 0, "train.steps or train.epochs must be positive")
        _check(all(0 <= b < 1 for b in self.betas), "train.betas must lie in [0, 1) (Adam's decay rates)")
        _check(
            self.precision in PRECISIONS, f"train.precision must be 'fp32', 'bf16' or 'auto', not {self.precision!r}"
        )
        _check(
            self.device in ("auto", "cpu", "cuda"), f"train.device must be 'auto', 'cpu' or 'cuda', not {self.device!r}"
        )
        _check(self.lr > 0, "train.lr must be positive")
        _check(0 <= self.ema_decay < 1, "train.ema_decay must lie in [0, 1) (0 = no moving average)")
        _check(self.ema_warmup > 1, "train.ema_warmup must be greater than 1 (10 = the default warm-up)")
        _check(self.d_grad_clip >= 0, "train.d_grad_clip must be non-negative (0 = no clipping)")
        _check(0 <= self.lr_decay_start <= 1, "train.lr_decay_start must lie in [0, 1] (1 = constant learning rate)")
        _check(
            len(self.mechanism_lr_scale) == 3 and all(f > 0 for f in self.mechanism_lr_scale),
            "train.mechanism_lr_scale must be three positive factors (shape, texture, background)",
        )
        for name in ("log_every", "sample_every", "checkpoint_every"):
            _check(getattr(self, name) > 0, f"train.{name} must be positive")


@dataclass(frozen=True)
class CGNConfig:
    """Everything that defines a CGN training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> CGNConfig:
        self.model.validate()
        self.loss.validate()
        self.train.validate()
        from cgn.data import DATASETS
        from cgn.discriminator import DISCRIMINATORS

        DATASETS.get(self.train.dataset)
        DISCRIMINATORS.get(self.model.discriminator)
        _check(
            self.model.shape_discriminator in DISCRIMINATORS,
            f"model.shape_discriminator must be one of {', '.join(DISCRIMINATORS.names())}, "
            f"not {self.model.shape_discriminator!r}",
        )
        _check(
            not self.loss.label_info_weight or self.model.generator == "cgn",
            "loss.label_info_weight reads labels from the CGN's texture and background maps; "
            "model.generator='cgan' has none",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists), so it compares equal to a reloaded config.json."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CGNConfig:
        return from_dict(cls, data).validate()

    def matches(self, saved: dict[str, Any]) -> bool:
        """Whether a saved config (config.json, checkpoint metadata) describes this run.

        Keys the saved one lacks take their defaults: options added since it was written are
        off by default, so older runs and checkpoints stay resumable.
        """
        try:
            return CGNConfig.from_dict(saved) == self
        except ConfigError:
            return False

    def override(self, *overrides: str) -> CGNConfig:
        """A copy with ``section.key=value`` overrides applied (checked like a config file)."""
        data = self.to_dict()
        for item in overrides:
            apply_override(data, item)
        return CGNConfig.from_dict(data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a table, not {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            near = f"{path}.{close[0]}" if close and path else (close[0] if close else "")
            hint = f"; did you mean {near!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {where!r}{hint}")
        values[key] = _coerce(hints[key], value, where)
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, not {type(value).__name__} ({value!r})")
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not variadic and len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} values, not {len(value)}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where} must be {hint.__name__}, not {type(value).__name__} ({value!r})")


# The paper's settings per dataset (PAPER.md §1.3, the authors' released cfg files).
PAPER_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "colored_mnist": {
        "model": {"discriminator": "linear", "ndf": 512, "init_type": "orthogonal", "init_gain": 0.1},
        "loss": {"mask_weight": 0.1, "style_weights": (0.05, 0.1, 0.01, 0.0)},
    },
    "double_colored_mnist": {
        "model": {"discriminator": "linear", "ndf": 512, "init_type": "orthogonal", "init_gain": 0.2},
        "loss": {"mask_weight": 0.3, "style_weights": (0.0, 0.05, 0.0, 0.05)},
    },
    "wildlife_mnist": {
        "model": {"discriminator": "conv", "ndf": 32, "init_type": "normal", "init_gain": 0.03},
        "loss": {"mask_weight": 0.3, "style_weights": (0.01, 0.05, 0.0, 0.01)},
    },
}


def paper_config(dataset: str, **sections: dict[str, Any]) -> CGNConfig:
    """The paper's configuration for ``dataset``; ``sections`` update it (e.g. train={...})."""
    if dataset not in PAPER_SETTINGS:
        raise ConfigError(f"no paper settings for {dataset!r}; choose one of: {', '.join(PAPER_SETTINGS)}")
    data = {k: dict(v) for k, v in PAPER_SETTINGS[dataset].items()}
    data["train"] = {"dataset": dataset}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return CGNConfig.from_dict(data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CGNConfig:
    """Read a TOML config (or the defaults) and apply ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; see configs/ for examples")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    for override in overrides:
        apply_override(data, override)
    return CGNConfig.from_dict(data)


def apply_override(data: dict[str, Any], override: str) -> None:
    """``train.batch_size=64`` → data["train"]["batch_size"] = 64 (value parsed as TOML)."""
    key, sep, raw = override.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override {override!r} must look like section.key=value, e.g. train.batch_size=64")
    section, name = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word is a string: train.dataset=wildlife_mnist
    data.setdefault(section, {})[name] = value
