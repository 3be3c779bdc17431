"""The MNIST-scale Counterfactual Generative Network (PAPER.md §0, §1.2).

``CGN(config)(shape_labels, texture_labels, background_labels)`` runs each mechanism on its
own label and composes the outputs. Counterfactuals are explicit: pass three different label
vectors. Noise is either drawn from the given ``generator`` (independently per mechanism) or
passed in; training passes one shared noise tensor, as the paper does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from cgn.composer import compose
from cgn.config import ModelConfig
from cgn.errors import LabelError
from cgn.mechanisms import BackgroundMechanism, ShapeMechanism, Shuffler, TextureMechanism, init_weights

Noise = torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class CGNOutput:
    """What one forward pass yields: the three mechanism outputs and their composite."""

    mask: torch.Tensor  # (B, 1, H, W) in [1e-4, 0.9999]
    foreground: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    background: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    image: torch.Tensor  # (B, 3, H, W) in [-1, 1]


class LabelConditioned(nn.Module):
    """What the CGN and the cGAN baseline share: label checks, noise, the 42-d input."""

    config: ModelConfig
    label_embedding: nn.Embedding

    @property
    def device(self) -> torch.device:
        return self.label_embedding.weight.device

    def check_labels(self, labels: torch.Tensor, what: str) -> torch.Tensor:
        if labels.dtype not in (torch.int64, torch.int32) or labels.ndim != 1:
            raise LabelError(f"{what} labels must be a 1-d integer tensor, got {labels.dtype} {tuple(labels.shape)}")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_classes):
            raise LabelError(
                f"{what} labels must lie in 0..{self.config.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}"
            )
        return labels.to(self.device, torch.long)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """u ~ N(0, I) of shape (B, latent_dim), drawn on the generator's device."""
        device = generator.device if generator is not None else self.device
        return torch.randn(batch_size, self.config.latent_dim, generator=generator, device=device).to(self.device)

    def _input(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.cat([noise.to(self.device), self.label_embedding(labels)], dim=1)  # (B, latent + classes)


class CGN(LabelConditioned):
    """Shape, texture and background mechanisms with a shared label embedding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        in_dim = config.latent_dim + config.num_classes
        self.label_embedding = nn.Embedding(config.num_classes, config.num_classes)
        up = config.upsample_conv
        self.shape = ShapeMechanism(in_dim, config.ngf, config.image_size, config.mask_offset, upsample_conv=up)
        pad = config.map_padding
        self.texture = TextureMechanism(in_dim, config.ngf, config.image_size, upsample_conv=up, padding_mode=pad)
        self.background = BackgroundMechanism(in_dim, config.ngf, config.image_size, upsample_conv=up, padding_mode=pad)
        self.shuffler = Shuffler()
        init_weights(self, config.init_type, config.init_gain)

    def forward(
        self,
        shape_labels: torch.Tensor,
        texture_labels: torch.Tensor | None = None,
        background_labels: torch.Tensor | None = None,
        *,
        noise: Noise | None = None,
        generator: torch.Generator | None = None,
    ) -> CGNOutput:
        """Generate with each mechanism on its own label (texture/background default to the shape's).

        ``noise``: one (B, latent_dim) tensor shared by the three mechanisms, or a tuple of
        three; if omitted, each mechanism draws its own from ``generator``. ``generator``
        also drives the shuffler's random shifts.
        """
        y_shape = self.check_labels(shape_labels, "shape")
        y_texture = y_shape if texture_labels is None else self.check_labels(texture_labels, "texture")
        y_background = y_shape if background_labels is None else self.check_labels(background_labels, "background")
        if not len(y_shape) == len(y_texture) == len(y_background):
            raise LabelError(f"label vectors differ in length: {len(y_shape)}, {len(y_texture)}, {len(y_background)}")
        if noise is None:
            noise = tuple(self.sample_noise(len(y_shape), generator) for _ in range(3))
        u_shape, u_texture, u_background = (noise, noise, noise) if isinstance(noise, torch.Tensor) else noise

        mask = self.make_mask(u_shape, y_shape)
        foreground = self.make_foreground(u_texture, y_texture, generator)
        background = self.make_background(u_background, y_background, generator)
        return CGNOutput(mask, foreground, background, compose(mask, foreground, background))

    # One mechanism at a time (labels already checked): counterfactual generation reuses a mask.
    def make_mask(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.shape(self._input(noise, labels))  # (B, 1, H, W)

    def make_foreground(self, noise: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
        return self.shuffler(self.texture_map(noise, labels), generator)  # (B, 3, H, W)

    def make_background(self, noise: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
        return self.shuffler(self.background_map(noise, labels), generator)  # (B, 3, H, W)

    # The two maps before the shuffler's shift (training's texture mode-seeking term).
    def texture_map(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.texture(self._input(noise, labels))  # (B, 3, H, W)

    def background_map(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.background(self._input(noise, labels))  # (B, 3, H, W)


@dataclass
class GANOutput:
    """A conditional GAN's output: an image only (no mechanisms, so no mask)."""

    image: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    mask: None = None


class ConditionalGAN(LabelConditioned):
    """The "Original + GAN" baseline: one conditional generator, no mechanism split.

    The paper never specified it (PAPER.md §4). Ours is the texture mechanism's architecture
    (Linear → 8×8 → two up-blocks → Conv → BN → tanh) on the same 42-d input, widened to the
    CGN's parameter budget (:func:`matched_width`), without the shuffler. It trains with the
    CGN's trainer, discriminator and adversarial loss; mask terms do not apply.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.label_embedding = nn.Embedding(config.num_classes, config.num_classes)
        width = matched_width(config)
        self.net = TextureMechanism(
            config.latent_dim + config.num_classes, width, config.image_size, upsample_conv=config.upsample_conv
        )
        init_weights(self, config.init_type, config.init_gain)

    def forward(
        self,
        labels: torch.Tensor,
        texture_labels: torch.Tensor | None = None,
        background_labels: torch.Tensor | None = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> GANOutput:
        """Images of class ``labels``; a GAN has one label, so texture/background labels must equal it."""
        y = self.check_labels(labels, "class")
        for other in (texture_labels, background_labels):
            if other is not None and not torch.equal(self.check_labels(other, "class"), y):
                raise LabelError(
                    "a conditional GAN has no mechanisms: it cannot take separate texture/background labels"
                )
        if noise is None:
            noise = self.sample_noise(len(y), generator)
        return GANOutput(self.net(self._input(noise, y)))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_width(config: ModelConfig) -> int:
    """The smallest width (a multiple of 4) at which one texture-style generator has at least
    as many parameters as the CGN's three mechanisms together."""
    in_dim = config.latent_dim + config.num_classes
    with torch.random.fork_rng(devices=[]):  # building modules draws initial weights
        budget = parameter_count(CGN(config)) - config.num_classes**2  # both have the label embedding
        width = 4
        while parameter_count(TextureMechanism(in_dim, width, config.image_size)) < budget:
            width += 4
    return width


GENERATORS = {"cgn": CGN, "cgan": ConditionalGAN}


def build_generator(config: ModelConfig) -> nn.Module:
    """The generator named by ``config.generator``: the CGN, or the conditional-GAN baseline."""
    return GENERATORS[config.generator](config)


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, generator: torch.Generator, batches: int = 40, batch_size: int = 64
) -> torch.nn.Module:
    """A copy of generator ``model`` whose BatchNorm running statistics are the exact mean of
    ``batches`` training-like batches (uniform labels, one noise shared by the mechanisms)."""
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for _ in range(batches if norms else 0):
        labels = torch.randint(0, model.config.num_classes, (batch_size,), generator=generator)
        model(labels, noise=model.sample_noise(batch_size, generator), generator=generator)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()
