"""Class-conditional discriminators for the MNIST-scale CGN (PAPER.md §1.2), by name."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from cgn.config import ModelConfig
from cgn.mechanisms import init_weights
from cgn.registry import Registry

DISCRIMINATORS: Registry[type[nn.Module]] = Registry("discriminator")


def mlp_trunk(in_features: int, ndf: int) -> list[nn.Module]:
    """The linear discriminator's hidden layers: three Linear + LeakyReLU(0.2), dropout 0.4 on two."""
    return [
        nn.Linear(in_features, ndf),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(ndf, ndf),
        nn.Dropout(0.4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Linear(ndf, ndf),
        nn.Dropout(0.4),
        nn.LeakyReLU(0.2, inplace=True),
    ]


@DISCRIMINATORS.register("linear")
class LinearDiscriminator(nn.Module):
    """Flattened image ⊕ label embedding → an MLP with dropout (colored, double-colored)."""

    def __init__(self, config: ModelConfig, in_channels: int = 3) -> None:
        super().__init__()
        k, ndf = config.num_classes, config.ndf
        self.label_embedding = nn.Embedding(k, k)
        self.model = nn.Sequential(*mlp_trunk(in_channels * config.image_size**2 + k, ndf), nn.Linear(ndf, 1))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images.flatten(1), self.label_embedding(labels).to(images.dtype)], dim=1)  # (B, 3HW + K)
        return self.model(x)[:, 0]  # (B,)


@DISCRIMINATORS.register("conv")
class ConvDiscriminator(nn.Module):
    """The label as a 4th input channel → four strided convs → average pool → 1×1 conv (Wildlife)."""

    def __init__(self, config: ModelConfig, in_channels: int = 3) -> None:
        super().__init__()
        ndf = config.ndf
        self.label_embedding = nn.Embedding(config.num_classes, 1)

        def block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]

        self.model = nn.Sequential(
            *block(in_channels + 1, ndf, 3, 1),  # 32 → 30
            *block(ndf, 2 * ndf, 3, 1),  # → 28
            *block(2 * ndf, 4 * ndf, 4, 2),  # → 13
            *block(4 * ndf, 4 * ndf, 4, 2),  # → 5
            nn.AvgPool2d(3),  # → 1
            nn.Conv2d(4 * ndf, 1, 1, bias=False),
        )
        init_weights(self, "normal", 0.02)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        channel = self.label_embedding(labels).to(images.dtype).view(b, 1, 1, 1).expand(b, 1, h, w)
        return self.model(torch.cat([images, channel], dim=1)).flatten()  # (B,)


class ProjectionHead(nn.Module):
    """``D(x, y) = w·φ(x) + ⟨E(y), φ(x)⟩`` (Miyato & Koyama 2018): a stronger class condition.

    Our addition, off by default (``model.discriminator = "linear_projection"`` or
    ``"conv_projection"``): with the paper's concatenated label input the discriminator learns
    the class condition slowly, and short runs end with classes whose mechanisms generate
    another class's digit or colours.
    """

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embedding = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embedding.weight, 0.0, 0.02)

    def forward(self, phi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.linear(phi)[:, 0] + (self.embedding(labels).to(phi.dtype) * phi).sum(1)  # (B,)


@DISCRIMINATORS.register("linear_projection")
class LinearProjectionDiscriminator(nn.Module):
    """The linear discriminator's MLP on the image alone, with a projection head for the label."""

    def __init__(self, config: ModelConfig, in_channels: int = 3) -> None:
        super().__init__()
        ndf = config.ndf
        self.trunk = nn.Sequential(*mlp_trunk(in_channels * config.image_size**2, ndf))
        self.head = ProjectionHead(ndf, config.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """φ(x), which the label meets only in the head."""
        return self.trunk(images.flatten(1))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images), labels)


@DISCRIMINATORS.register("conv_projection")
class ConvProjectionDiscriminator(nn.Module):
    """The conv discriminator's trunk on the image alone, with a projection head for the label."""

    def __init__(self, config: ModelConfig, in_channels: int = 3) -> None:
        super().__init__()
        ndf = config.ndf
        conv = ConvDiscriminator(config).model
        conv[0] = nn.Conv2d(in_channels, ndf, 3, 1, 0, bias=False)  # no label channel
        self.trunk = nn.Sequential(*conv[:-1], nn.Flatten())  # (B, 4·ndf)
        self.head = ProjectionHead(4 * ndf, config.num_classes)
        init_weights(self.trunk, "normal", 0.02)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """φ(x), which the label meets only in the head."""
        return self.trunk(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images), labels)


class MapLabelReader(nn.Module):
    """Reads the class label back from a foreground and a background map (``loss.label_info_weight``).

    InfoGAN's auxiliary network Q for a categorical code (Chen et al. 2016), one per map:
    three convs (32 → 16 → 8 → 8 pixels), LeakyReLU(0.2), a spatial mean, so that the shuffler's
    shift barely matters, and a linear layer to ``num_classes`` logits.
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def reader() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(3, width, 4, 2, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(width, 2 * width, 4, 2, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(2 * width, 4 * width, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4 * width, num_classes),
            )

        self.foreground, self.background = reader(), reader()
        init_weights(self, "normal", 0.02)

    def forward(self, foreground: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, num_classes) of each map's label."""
        return self.foreground(foreground), self.background(background)


def build_discriminator(config: ModelConfig) -> nn.Module:
    """``model.discriminator`` by name, on RGB images."""
    return DISCRIMINATORS.get(config.discriminator)(config)


def build_shape_discriminator(config: ModelConfig) -> nn.Module:
    """``model.shape_discriminator`` by name, ``model.shape_ndf`` wide, on the one-channel shape view."""
    return DISCRIMINATORS.get(config.shape_discriminator)(replace(config, ndf=config.shape_ndf), in_channels=1)
