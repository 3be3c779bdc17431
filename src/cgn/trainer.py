"""Adversarial training of the MNIST-scale CGN (PAPER.md §1.3), with exact resume.

One step: sample labels y ~ U{0..9} and one noise vector shared by the three mechanisms,
generate and compose; a generator step (LSGAN + mask entropy + style against an unpaired real
batch, + optional extras), then a discriminator step on the real batch and the same fakes (a
critic with BatchNorm reuses the generator step's scores of them: ``critic_scores``).

Everything random comes from seeded sources whose state is checkpointed: the trainer's
generator (labels, noise, shuffler), per-epoch data permutations derived from the seed, and
torch's global RNG (dropout). So N steps, a checkpoint, a resume and N more equal 2N steps
bit for bit on the CPU.

A run directory holds ``config.json``, ``environment.json``, ``metrics.jsonl``, ``samples/``,
``checkpoints/step_XXXXXXX/`` (generator, discriminator and, with ``train.ema_decay``, the
weight average as safetensors + ``state.pt``), the
atomically updated pointer ``checkpoints/latest``, and at the end ``cgn.safetensors`` and a
``done`` marker.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cgn.checkpoint import AVERAGE_KIND, calibration_generator, load_state, read_weights, save_weights
from cgn.composer import compose
from cgn.config import CGNConfig, load_config
from cgn.data import build_dataset
from cgn.data.base import BiasedMNIST
from cgn.discriminator import MapLabelReader, build_discriminator, build_shape_discriminator
from cgn.environment import describe, median_seconds
from cgn.errors import CheckpointError, ConfigError
from cgn.files import atomic_dir, atomic_path, write_text
from cgn.losses import (
    GeneratorLoss,
    discriminator_adversarial_loss,
    frame_pixels,
    generator_adversarial_loss,
    mismatch_loss,
    mode_seeking_loss,
    r1_penalty,
    shape_view,
    texture_mode_seeking_loss,
    wrong_labels,
)
from cgn.model import CGNOutput, build_generator, recalibrate_batchnorm
from cgn.precision import resolve_precision
from cgn.seeding import derive_seed, make_generator
from cgn.viz import counterfactual_sheet, image_sheet, mechanism_sheet, save_image, variety_sheet

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 2


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=auto")
    return torch.device(name)


def resolve_run_config(config: CGNConfig) -> CGNConfig:
    """The config as it runs here: ``train.precision = "auto"`` becomes "bf16" where this run's
    device has native bf16, "fp32" elsewhere, so that config.json, the checkpoints and a table's
    records state what was computed (and a resume on another kind of machine is caught)."""
    t = config.train
    if t.precision != "auto":
        return config
    precision = resolve_precision(t.precision, pick_device(t.device))
    log.info("train.precision = auto: %s on this machine", precision)
    return config.override(f"train.precision={precision}")


def build_models(config: CGNConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Generator (CGN or the cGAN baseline) and discriminator, initialised from the run's seed alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.train.seed, "init"))
        return build_generator(config.model), build_discriminator(config.model)


class WeightAverage:
    """An exponential moving average of a model's parameters, with BatchNorm statistics to match.

    ``train.ema_decay`` (ours, off by default): averaged GAN generators give cleaner samples
    than the last iterate (Yazıcı et al. 2019; BigGAN; StyleGAN). The decay warms up as
    ``min(decay, (1 + n) / (warmup + n))`` after n updates (``train.ema_warmup``, 10 by
    default), so short runs do not keep their random initial weights in the average
    (0.999⁵⁰⁰⁰ ≈ 0.7 % would remain after 5,000 steps). With warm-up 10 the decay stays under
    0.999 for 8,990 updates: a 5,000-step run averages over about its last 500 steps whatever
    ``ema_decay`` says.

    The live model's BatchNorm running statistics belong to the live weights, not to the
    average: the mechanisms end in a BatchNorm that sets the output colour, and borrowing them
    cost a Wildlife run 0.24 background effectiveness (0.76 against 1.00, docs/recipes.md). :meth:`calibrated` therefore
    recomputes them for the averaged weights, as SWA does (Izmailov et al. 2018).
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: float = 10.0) -> None:
        self.decay, self.warmup = decay, warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._calibrated: tuple[int, torch.nn.Module] | None = None

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates_so_far: int) -> None:
        decay = min(self.decay, (1 + updates_so_far) / (self.warmup + updates_so_far))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - decay)
        for average, live in zip(self.model.buffers(), model.buffers(), strict=True):
            average.copy_(live)
        self._calibrated = None

    def calibrated(self, generator: torch.Generator, key: int) -> torch.nn.Module:
        """The average with recalibrated BatchNorm statistics (cached until the next update)."""
        if self._calibrated is None or self._calibrated[0] != key:
            self._calibrated = (key, recalibrate_batchnorm(self.model, generator))
        return self._calibrated[1]


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    seconds: float


def init_background_bias(generator: torch.nn.Module, frame_colour: torch.Tensor, limit: float = 0.95) -> None:
    """Set the background mechanism's output bias to atanh of the mean real frame colour.

    Its last layers are BatchNorm then tanh: in training mode the batch mean of the map before
    the tanh is the BatchNorm bias, so with the paper's zero bias every batch of backgrounds is
    mid-grey on average; starting from the data's frame colour removes that pull (for colored
    MNIST's black background it is what turned masks inside out).
    """
    background = getattr(generator, "background", None)
    if background is None:
        raise ConfigError("train.frame_init needs a generator with a background mechanism (model.generator = 'cgn')")
    with torch.no_grad():
        background.out_norm.bias.copy_(torch.atanh(frame_colour.clamp(-limit, limit)))


def batch_independent(module: torch.nn.Module) -> bool:
    """Whether each sample's output depends on that sample alone (no batch statistics), so
    that one call on a concatenated batch gives what separate calls give."""
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


class CriticScores(NamedTuple):
    real: torch.Tensor
    fake: torch.Tensor
    wrong: torch.Tensor | None  # the real batch under wrong labels, when asked for


def critic_scores(
    critic: torch.nn.Module,
    real: tuple[torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor],
    fake_scores: torch.Tensor | None = None,
    wrong_labels: torch.Tensor | None = None,
    reuse_features: bool = True,
) -> CriticScores:
    """The critic's scores of a real and a fake batch (images, labels), and with
    ``wrong_labels`` of the real images under those labels (the matching-aware terms).

    A batch-independent critic scores real and fake in one call (one weight cast, one
    weight-gradient product: about 3 ms of a 35 ms double-colored bf16 step); one with
    BatchNorm gets two calls, as its batch statistics are per batch.

    ``fake_scores``: the same critic's scores of the same fakes, already computed with its
    graph (the generator step's). A critic with BatchNorm reuses them instead of its second
    call, which would repeat them bit for bit (same weights, same batch, train mode): one
    forward pass fewer, 1.10× (fp32, AVX2) to 1.33× (bf16, AVX-512) the speed of Wildlife's fast
    recipe step (``benchmarks/critic_reuse_speed.py``).

    A projection critic (``features`` then a head that alone sees the label) scores the wrong
    labels from the real batch's features (``reuse_features``) instead of running its trunk on
    that batch again. The real and fake scores are the same as without wrong labels, bit for
    bit; the wrong-label scores equal a separate call's for a critic without dropout (a
    BatchNorm critic sees the same batch, so the same statistics), while a critic with dropout
    scores them under the real scores' dropout masks instead of fresh ones.
    """
    keep_features = reuse_features and wrong_labels is not None and hasattr(critic, "features")

    def score(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores, and the features φ behind them when they are kept (``critic`` is head ∘ φ)."""
        if not keep_features:
            return critic(images, labels), None
        phi = critic.features(images)
        return critic.head(phi, labels), phi

    if batch_independent(critic):
        n = len(real[0])
        scores, phi = score(torch.cat([real[0], fake[0]]), torch.cat([real[1], fake[1]]))
        d_real, d_fake, phi = scores[:n], scores[n:], None if phi is None else phi[:n]
    else:
        (d_real, phi), d_fake = score(*real), critic(*fake) if fake_scores is None else fake_scores
    if wrong_labels is None:
        return CriticScores(d_real, d_fake, None)
    d_wrong = critic(real[0], wrong_labels) if phi is None else critic.head(phi, wrong_labels)
    return CriticScores(d_real, d_fake, d_wrong)


class Trainer:
    """Owns models, optimisers, data and random state of one run; ``fit`` runs it."""

    # False scores the fakes a second time in the critics' update: the same numbers for one
    # more forward pass (critic_scores), kept for the side-by-side timing and its test.
    reuse_fake_scores: bool = True
    # False runs a projection critic's trunk on the real batch again for the wrong-label scores
    # of the matching-aware terms (critic_scores), as before 2026-12-06.
    reuse_real_features: bool = True

    def __init__(self, config: CGNConfig, run_dir: str | Path, *, data_root: str | Path | None = None) -> None:
        self.config = config = resolve_run_config(config.validate())
        self.run_dir = Path(run_dir)
        t = config.train
        self.device = pick_device(t.device)
        self.dataset: BiasedMNIST = build_dataset(t.dataset, "train", t.seed, data_root)
        self.steps_per_epoch = len(self.dataset) // t.batch_size
        self.total_steps = t.steps if t.steps > 0 else math.ceil(t.epochs * self.steps_per_epoch)
        # Channels-last convolutions and the fused Adam: the same maths, 1.5-1.6x faster
        # batch-16 steps on the CPU (results/train_speed.json).
        self.generator, self.discriminator = (
            m.to(self.device, memory_format=torch.channels_last) for m in build_models(config)
        )
        if t.frame_init:
            init_background_bias(self.generator, self.real_frame_colour())
        self.loss = GeneratorLoss(config.loss).to(self.device, memory_format=torch.channels_last)
        if t.precision == "bf16" and self.loss.style is not None:
            # Frozen, so stored in bf16 it gives bit-identical losses and gradients; autocast
            # would otherwise cast its 7.6M weights twice a step (5 % of a batch-16 step).
            self.loss.style.features.to(torch.bfloat16)
        self.opt_g = torch.optim.Adam(self.generator_param_groups(), lr=t.lr, betas=t.betas, fused=True)
        self.generator_parameters = list(self.generator.parameters())  # what the generator's backward reaches
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr, betas=t.betas, fused=True)
        self.shape_discriminator, self.opt_s = None, None
        if config.loss.shape_view_weight:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(t.seed, "init", "shape_view"))
                self.shape_discriminator = build_shape_discriminator(config.model).to(
                    self.device, memory_format=torch.channels_last
                )
            self.opt_s = torch.optim.Adam(self.shape_discriminator.parameters(), lr=t.lr, betas=t.betas, fused=True)
        self.label_reader, self.opt_q = None, None
        if config.loss.label_info_weight:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(t.seed, "init", "label_reader"))
                self.label_reader = MapLabelReader(config.model.num_classes).to(
                    self.device, memory_format=torch.channels_last
                )
            self.opt_q = torch.optim.Adam(self.label_reader.parameters(), lr=t.lr, betas=t.betas, fused=True)
            # The reader learns from the generator's loss, in the same backward pass.
            self.generator_parameters += list(self.label_reader.parameters())
        self.critic_parameters = [  # what the critics' backward reaches
            p for c in (self.discriminator, self.shape_discriminator) if c is not None for p in c.parameters()
        ]
        self.average = WeightAverage(self.generator, t.ema_decay, t.ema_warmup) if t.ema_decay else None
        self.rng = make_generator(t.seed, "train")
        self.step = 0
        self.train_seconds = 0.0  # wall time spent in fit, summed over resumes
        self._permutation: tuple[int, torch.Tensor] | None = None

    # -- data ---------------------------------------------------------------------------------
    def real_batch(self, step: int) -> dict[str, torch.Tensor]:
        """The real batch of ``step``: a per-epoch permutation derived from the seed (no state)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._permutation is None or self._permutation[0] != epoch:
            order = torch.randperm(len(self.dataset), generator=make_generator(self.config.train.seed, "order", epoch))
            self._permutation = (epoch, order)
            self.dataset.set_epoch(epoch)
        b = self.config.train.batch_size
        return self.dataset.batch(self._permutation[1][position * b : (position + 1) * b])

    def real_frame_colour(self, images: int = 10_000) -> torch.Tensor:
        """Mean colour (3,) of the frame pixels of the first ``images`` training images (epoch 0),
        averaged per class first: training draws the generated labels uniformly."""
        n = min(images, len(self.dataset))
        batch = self.dataset.batch(torch.arange(n))
        per_image = frame_pixels(batch["image"], self.config.loss.mask_border_width).mean(2)  # (n, 3)
        classes = batch["label"].unique()
        return torch.stack([per_image[batch["label"] == c].mean(0) for c in classes]).mean(0)

    def autocast(self, enabled: bool = True):
        """bf16 autocast in bf16 runs. ``enabled=False`` inside it suspends it (for a backward
        pass) while keeping its cache of weight casts, which lives until the outer region ends."""
        if self.config.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)
        return contextlib.nullcontext()

    # -- one step -----------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """One generator and one discriminator update; returns the detached losses (no sync)."""
        real = self.real_batch(self.step)
        x_real = real["image"].to(self.device, non_blocking=True)
        y_real = real["label"].to(self.device, non_blocking=True)
        b = len(y_real)
        y_gen = torch.randint(0, self.config.model.num_classes, (b,), generator=self.rng).to(self.device)
        noise = self.generator.sample_noise(b, self.rng)  # shared by the three mechanisms

        self.set_learning_rate()
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_q is not None:
            self.opt_q.zero_grad(set_to_none=True)
        # One autocast region for both forward passes: the bf16 casts of the critics' weights
        # made for the generator's loss are cached and reused by the critics' own update
        # (bit-identical; about 1.5 ms of a 50 ms double-colored bf16 step). The backward passes
        # run with autocast suspended, as outside it. The generator's stops at its own
        # parameters, so it builds none of the critics' weight gradients.
        with self.autocast():
            out = self.generator(y_gen, noise=noise, generator=self.rng)
            d_fake = self.discriminator(out.image, y_gen)
            mask = out.mask.float() if out.mask is not None else None  # the cGAN baseline has none
            loss_g, parts = self.loss(d_fake.float(), mask, out.image, x_real)
            if self.shape_discriminator is not None:
                fake_view = self.shape_view(self.shape_critic_input(out))
                s_fake = self.shape_discriminator(fake_view, y_gen)
                parts["shape_view"] = self.config.loss.shape_view_weight * generator_adversarial_loss(s_fake.float())
                loss_g = loss_g + parts["shape_view"]
            shapes_seek, textures_seek = self.mode_seeking_on and mask is not None, self.texture_mode_seeking_on
            if shapes_seek or textures_seek:
                # Second maps per label from one fresh noise (drawn only when a term is on, so
                # runs without them keep their random streams).
                noise_b = self.generator.sample_noise(b, self.rng)
            if shapes_seek:
                mask_b = self.generator.make_mask(noise_b, y_gen).float()
                parts["mode_seeking"] = self.config.loss.mode_seeking_weight * mode_seeking_loss(
                    mask, mask_b, noise, noise_b
                )
                loss_g = loss_g + parts["mode_seeking"]
            if textures_seek:
                # The shuffled maps against unshuffled ones: their spectra ignore the shift.
                parts["texture_mode_seeking"] = self.config.loss.texture_mode_seeking_weight * (
                    texture_mode_seeking_loss(
                        out.foreground, self.generator.texture_map(noise_b, y_gen), noise, noise_b
                    )
                    + texture_mode_seeking_loss(
                        out.background, self.generator.background_map(noise_b, y_gen), noise, noise_b
                    )
                )
                loss_g = loss_g + parts["texture_mode_seeking"]
            if self.label_reader is not None:
                maps = self.label_reader_input(out)
                if not self.label_info_on:  # the reader learns to read; the generator waits
                    maps = tuple(m.detach() for m in maps)
                fg_logits, bg_logits = self.label_reader(*maps)
                parts["label_info"] = F.cross_entropy(fg_logits.float(), y_gen) + F.cross_entropy(
                    bg_logits.float(), y_gen
                )
                loss_g = loss_g + self.config.loss.label_info_weight * parts["label_info"]
            with self.autocast(enabled=False):
                loss_g.backward(inputs=self.generator_parameters, retain_graph=self.reuse_fake_scores)

            self.opt_d.zero_grad(set_to_none=True)
            if self.opt_s is not None:
                self.opt_s.zero_grad(set_to_none=True)
            # A critic with BatchNorm reuses its scores of the fakes from above (critic_scores).
            reuse = self.reuse_fake_scores
            r1_on = self.r1_on
            c_loss = self.config.loss
            x_critic = x_real.detach().requires_grad_(True) if r1_on else x_real
            mismatch_on = self.mismatch_on
            k = self.config.model.num_classes
            # Wrong labels are drawn only when a term is on: runs without keep their streams.
            y_wrong = wrong_labels(y_real, k, self.rng) if mismatch_on and c_loss.mismatch_weight else None
            d_real, d_fake, d_wrong = critic_scores(
                self.discriminator,
                (x_critic, y_real),
                (out.image.detach(), y_gen),
                d_fake if reuse else None,
                y_wrong,
                self.reuse_real_features,
            )
            loss_d = discriminator_adversarial_loss(d_real.float(), d_fake.float())
            if d_wrong is not None:
                parts["d_mismatch"] = mismatch_loss(d_wrong.float())
                loss_d = loss_d + c_loss.mismatch_weight * parts["d_mismatch"]
            if r1_on:
                with self.autocast(enabled=False):
                    parts["r1"] = r1_penalty(d_real, x_critic)
                loss_d = loss_d + c_loss.r1_weight * c_loss.r1_every / 2 * parts["r1"]
            if self.shape_discriminator is not None:
                real_view = self.shape_view(x_real)
                y_wrong = (
                    wrong_labels(y_real, k, self.rng) if mismatch_on and c_loss.shape_view_mismatch_weight else None
                )
                s_real, s_fake, s_wrong = critic_scores(
                    self.shape_discriminator,
                    (real_view, y_real),
                    (fake_view.detach(), y_gen),
                    s_fake if reuse else None,
                    y_wrong,
                    self.reuse_real_features,
                )
                parts["d_shape_view"] = discriminator_adversarial_loss(s_real.float(), s_fake.float())
                if s_wrong is not None:
                    parts["d_shape_mismatch"] = mismatch_loss(s_wrong.float())
                    parts["d_shape_view"] = (
                        parts["d_shape_view"] + c_loss.shape_view_mismatch_weight * parts["d_shape_mismatch"]
                    )
            with self.autocast(enabled=False):
                # The reused scores' graph reaches back into the generator: the critics' loss
                # must stop at the critics' parameters.
                critics_loss = loss_d + parts["d_shape_view"] if self.shape_discriminator is not None else loss_d
                critics_loss.backward(inputs=self.critic_parameters)
        self.opt_g.step()
        if self.opt_q is not None:
            self.opt_q.step()
        if self.average is not None:
            self.average.update(self.generator, self.step)

        if self.config.train.d_grad_clip:
            limit = self.config.train.d_grad_clip
            norm = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), limit)
            parts["d_grad_norm"], parts["d_clipped"] = norm, (norm > limit).float()  # window means
            if self.shape_discriminator is not None:
                norm = torch.nn.utils.clip_grad_norm_(self.shape_discriminator.parameters(), limit)
                parts["s_grad_norm"], parts["s_clipped"] = norm, (norm > limit).float()
        self.opt_d.step()
        if self.opt_s is not None:
            self.opt_s.step()
        self.step += 1
        return {"g": loss_g.detach(), "d": loss_d.detach(), **{k: v.detach() for k, v in parts.items()}}

    def label_reader_input(self, out: CGNOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """The foreground and background maps as ``loss.label_info_view`` shows them to the reader."""
        if self.config.loss.label_info_view == "map":
            return out.foreground, out.background
        other = out.mask.detach().roll(1, 0)  # another sample's mask: its shape says nothing of this label
        return other * out.foreground, (1 - other) * out.background

    def shape_critic_input(self, out: CGNOutput) -> torch.Tensor:
        """The composite whose shape view the shape critic judges; with ``shape_view_gradient``
        "mask" its gradient reaches the generator through the mask alone."""
        if self.config.loss.shape_view_gradient == "image" or out.mask is None:
            return out.image
        return compose(out.mask, out.foreground.detach(), out.background.detach())

    def shape_view(self, images: torch.Tensor) -> torch.Tensor:
        loss = self.config.loss
        view = shape_view(images, loss.mask_border_width, loss.shape_view_distance, loss.shape_view_variance_floor)
        return view.contiguous(memory_format=torch.channels_last)

    def learning_rate(self, step: int) -> float:
        """``train.lr``, falling linearly to 0 at the last step from ``train.lr_decay_start``
        of the schedule on (a function of the step alone, so a resume continues it exactly)."""
        t = self.config.train
        start = t.lr_decay_start * self.total_steps
        if step < start or start >= self.total_steps:
            return t.lr
        return t.lr * (self.total_steps - step) / (self.total_steps - start)

    def generator_param_groups(self) -> list[dict[str, Any]]:
        """The generator's parameters as Adam groups, each with its ``lr_scale``: one group when
        ``train.mechanism_lr_scale`` is (1, 1, 1), so that default runs and their checkpoints
        keep the plain optimiser; else one group per mechanism and one for the rest."""
        t = self.config.train
        if tuple(t.mechanism_lr_scale) == (1.0, 1.0, 1.0):
            return [{"params": list(self.generator.parameters()), "lr_scale": 1.0}]
        mechanisms = [getattr(self.generator, name, None) for name in ("shape", "texture", "background")]
        if any(m is None for m in mechanisms):
            raise ConfigError(
                f"train.mechanism_lr_scale needs a CGN with three mechanisms; "
                f"{type(self.generator).__name__} has none: leave it at [1.0, 1.0, 1.0]"
            )
        owned = {id(p) for m in mechanisms for p in m.parameters()}
        rest = [p for p in self.generator.parameters() if id(p) not in owned]
        groups = [
            {"params": list(m.parameters()), "lr": t.lr * scale, "lr_scale": scale}
            for m, scale in zip(mechanisms, t.mechanism_lr_scale, strict=True)
        ]
        return [*groups, {"params": rest, "lr_scale": 1.0}]

    def set_learning_rate(self) -> None:
        if self.config.train.lr_decay_start < 1:
            lr = self.learning_rate(self.step)
            for opt in self.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)

    @property
    def r1_on(self) -> bool:
        """Whether this step adds the R1 penalty (``loss.r1_weight``, every ``loss.r1_every``-th step)."""
        c = self.config.loss
        return c.r1_weight > 0 and self.step % c.r1_every == 0

    @property
    def mismatch_on(self) -> bool:
        """Whether this step's critics score real images under wrong labels (``loss.mismatch_start``)."""
        c = self.config.loss
        return (
            bool(c.mismatch_weight or c.shape_view_mismatch_weight) and self.step >= c.mismatch_start * self.total_steps
        )

    @property
    def label_info_on(self) -> bool:
        """Whether this step's label-reading term reaches the generator (``loss.label_info_start``)."""
        return self.step >= self.config.loss.label_info_start * self.total_steps

    @property
    def texture_mode_seeking_on(self) -> bool:
        """Whether steps add the texture mode-seeking term (a CGN's texture mechanisms only)."""
        return self.config.loss.texture_mode_seeking_weight > 0 and self.config.model.generator == "cgn"

    @property
    def mode_seeking_on(self) -> bool:
        """Whether this step adds the mode-seeking term (``loss.mode_seeking_until``)."""
        c = self.config.loss
        return c.mode_seeking_weight > 0 and self.step < c.mode_seeking_until * self.total_steps

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, *, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> TrainResult:
        """Train to the configured number of steps (or ``stop_at``), checkpointing on the way."""
        t = self.config.train
        self._prepare_run_dir(resume)
        end = min(self.total_steps, stop_at) if stop_at is not None else self.total_steps
        sums: dict[str, torch.Tensor] = {}
        window_start, window_steps, start_time = time.perf_counter(), 0, time.perf_counter()
        segment_start = start_time
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not progress,
            desc=f"{self.config.model.generator} {t.dataset}",  # cgn, or cgan (the GAN baseline)
            unit="step",
            dynamic_ncols=True,
        )
        self.generator.train()
        self.discriminator.train()
        while self.step < end:
            losses = self.train_step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            for name in ("d_grad_norm", "s_grad_norm"):  # a spike shows in the window's largest norm
                if name in losses:
                    peak = sums.get(f"{name}_max")
                    sums[f"{name}_max"] = losses[name] if peak is None else torch.maximum(peak, losses[name])
            window_steps += 1
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    **{k: float(v) / (1 if k.endswith("_max") else window_steps) for k, v in sums.items()},
                    "images_per_s": window_steps * t.batch_size / max(elapsed, 1e-9),
                }
                self._log(record)
                bar.set_postfix(
                    {k: f"{record[k]:.3f}" for k in ("g", "d", "adv", "mask", "style", "shape_view") if k in record}
                )
                sums, window_steps, window_start = {}, 0, time.perf_counter()
            if self.step % t.sample_every == 0:
                self.write_samples()
            if self.step % t.checkpoint_every == 0 or self.step == end:
                self.train_seconds += time.perf_counter() - segment_start
                segment_start = time.perf_counter()
                self.save_checkpoint()
        bar.close()
        if self.step >= self.total_steps:
            self.finish()
        return TrainResult(self.run_dir, self.run_dir / "cgn.safetensors", self.step, time.perf_counter() - start_time)

    @property
    def output_generator(self) -> torch.nn.Module:
        """What samples and the final weights come from: the weight average if kept, else the live generator."""
        if self.average is None:
            return self.generator
        return self.average.calibrated(calibration_generator(self.config, self.step), self.step)

    def finish(self) -> None:
        """Final weights for users, the sheets, and the ``done`` marker."""
        self.write_samples()
        save_weights(
            self.run_dir / "cgn.safetensors", self.output_generator, config=self.config, kind="cgn", step=self.step
        )
        if self.config.model.generator == "cgn":
            self.write_counterfactual_sheets()
        record = {"step": self.step, "train_seconds": round(self.train_seconds, 2)}
        write_text(self.run_dir / "done", json.dumps(record) + "\n")

    # -- run directory, logging, samples ------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        latest = self.run_dir / "checkpoints" / "latest"
        if resume and latest.exists():
            self.load_checkpoint(self.run_dir / "checkpoints" / latest.read_text().strip())
            self._truncate_metrics()
            return
        if (self.run_dir / "checkpoints").exists() and not resume:
            raise ConfigError(
                f"{self.run_dir} already has checkpoints: pass --resume to continue it, or choose another run directory"
            )
        saved = self.run_dir / "config.json"
        if resume and saved.exists() and not self.config.matches(json.loads(saved.read_text())):
            raise ConfigError(f"{saved} differs from the given config; resume with the run's own config")
        torch.manual_seed(derive_seed(self.config.train.seed, "global"))  # dropout draws from it
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(saved, json.dumps(self.config.to_dict(), indent=2) + "\n")
        write_text(self.run_dir / "environment.json", json.dumps(describe(), indent=2) + "\n")

    def _log(self, record: dict[str, float]) -> None:
        log.info(json.dumps(record))
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
            write_text(path, "".join(line + "\n" for line in kept))

    @torch.no_grad()
    def write_samples(self) -> None:
        """A row per class: mask | foreground | background | composite (eval mode, fixed noise)."""
        g = make_generator(self.config.train.seed, "samples")
        generator = self.output_generator
        generator.eval()
        labels = torch.arange(self.config.model.num_classes).repeat_interleave(2)
        out = generator(labels, noise=generator.sample_noise(len(labels), g), generator=g)
        self.generator.train()
        title = f"step {self.step}"
        if out.mask is not None:
            sheet = mechanism_sheet(out, labels, title=title)
        else:  # the cGAN baseline: a row per class
            rows = list(out.image.view(self.config.model.num_classes, -1, *out.image.shape[1:]))
            sheet = image_sheet(rows, row_titles=[str(c) for c in range(len(rows))], title=title)
        save_image(sheet, self.run_dir / "samples" / f"step_{self.step:07d}.png")

    @torch.no_grad()
    def write_counterfactual_sheets(self) -> None:
        """One shape (fixed noise) across 10 textures (rows) × 10 backgrounds (columns), one
        sheet per shape; and the variety sheet (``viz.variety_sheet``). A CGN's only."""
        generator = self.output_generator
        generator.eval()
        for shape in range(self.config.model.num_classes):
            g = make_generator(self.config.train.seed, "counterfactual_sheet", shape)
            sheet = counterfactual_sheet(generator, shape, g)
            save_image(sheet, self.run_dir / "samples" / f"counterfactuals_shape{shape}.png")
        sheet = variety_sheet(generator, generator=make_generator(self.config.train.seed, "variety_sheet"))
        save_image(sheet, self.run_dir / "samples" / "variety.png")  # does each texture mechanism use its noise?
        self.generator.train()

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The run's optimisers by their key in ``state.pt``."""
        opts = {"opt_g": self.opt_g, "opt_d": self.opt_d}
        if self.opt_s is not None:
            opts["opt_s"] = self.opt_s
        if self.opt_q is not None:
            opts["opt_q"] = self.opt_q
        return opts

    def checkpointed_modules(self) -> list[tuple[str, str, torch.nn.Module]]:
        """(file name, kind, module) of every network a checkpoint holds."""
        modules = [("generator", "cgn", self.generator), ("discriminator", "discriminator", self.discriminator)]
        if self.shape_discriminator is not None:
            modules.append(("shape_discriminator", "discriminator", self.shape_discriminator))
        if self.label_reader is not None:
            modules.append(("label_reader", "label_reader", self.label_reader))
        if self.average is not None:
            modules.append(("average", AVERAGE_KIND, self.average.model))
        return modules

    def save_checkpoint(self) -> Path:
        folder = self.run_dir / "checkpoints" / f"step_{self.step:07d}"
        with atomic_dir(folder) as tmp:
            for name, kind, module in self.checkpointed_modules():
                save_weights(tmp / f"{name}.safetensors", module, config=self.config, kind=kind, step=self.step)
            torch.save(
                {
                    "step": self.step,
                    "train_seconds": self.train_seconds,
                    **{key: opt.state_dict() for key, opt in self.optimizers.items()},
                    "rng": self.rng.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                },
                tmp / "state.pt",
            )
        with atomic_path(self.run_dir / "checkpoints" / "latest") as tmp:
            tmp.write_text(folder.name + "\n")
        old = sorted((self.run_dir / "checkpoints").glob("step_*"))[:-KEEP_CHECKPOINTS]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        try:
            state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise CheckpointError(f"cannot resume from {folder}: state.pt is unreadable ({e})") from None
        for name, _, module in self.checkpointed_modules():
            weights, metadata = read_weights(folder / f"{name}.safetensors")
            if not self.config.matches(json.loads(metadata["config"])):
                raise ConfigError(f"{folder} was trained with another config; resume with the run's own config.json")
            load_state(module, weights, str(folder / f"{name}.safetensors"))
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state[key])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        log.info("resumed %s at step %d", folder, self.step)


def train_cgn(
    config: CGNConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_root: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a CGN into ``run_dir`` (see the module docstring for what it writes)."""
    trainer = Trainer(config, run_dir, data_root=data_root)
    return trainer.fit(resume=resume, stop_at=stop_at, progress=progress)


def training_speed(
    configs: dict[str, CGNConfig],
    run_root: str | Path,
    steps: int,
    blocks: int = 3,
    *,
    data_root: str | Path | None = None,
) -> dict[str, float]:
    """Training images per second of each config, real trainer steps timed side by side.

    Every config gets a :class:`Trainer` in ``run_root/<name>`` (its steps write nothing there),
    timed by :func:`trainer_speed`.
    """
    return trainer_speed(
        {name: Trainer(c, Path(run_root) / name, data_root=data_root) for name, c in configs.items()}, steps, blocks
    )


def speed_row(
    label: str, path: str, overrides: list[str], speed: dict[str, float], baseline: str, variant: str
) -> dict[str, object]:
    """A benchmark's row for :func:`trainer_speed`'s result on one config (file and overrides):
    batch size and precision as they ran here, images/s and ms per step of each trainer, and
    ``variant``'s speed-up over ``baseline``."""
    run = resolve_run_config(load_config(path, overrides)).train
    return {
        "config": label,
        "command_config": f"{path} {' '.join(overrides)}".strip(),
        "batch_size": run.batch_size,
        "precision": run.precision,  # what "auto" resolved to here
        "images_per_s": {name: round(v, 1) for name, v in speed.items()},
        "ms_per_step": {name: round(1000 * run.batch_size / v, 2) for name, v in speed.items()},
        "speedup": round(speed[variant] / speed[baseline], 3),
    }


def trainer_speed(trainers: dict[str, Trainer], steps: int, blocks: int = 3) -> dict[str, float]:
    """Training images per second of each trainer: they take turns in blocks of ``steps`` steps
    after a warm-up block (:func:`cgn.environment.median_seconds`), so that all of them see the
    same machine."""

    def run(trainer: Trainer) -> None:
        for _ in range(steps):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)

    seconds = median_seconds({name: lambda t=t: run(t) for name, t in trainers.items()}, blocks)
    return {name: steps * t.config.train.batch_size / seconds[name] for name, t in trainers.items()}
