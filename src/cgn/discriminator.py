"""Class-conditional discriminators for the MNIST-scale CGN (PAPER.md §1.2), by name."""

from __future__ import annotations

import torch
from torch import nn

from cgn.config import ModelConfig
from cgn.mechanisms import init_weights
from cgn.registry import Registry

DISCRIMINATORS: Registry[type[nn.Module]] = Registry("discriminator")


@DISCRIMINATORS.register("linear")
class LinearDiscriminator(nn.Module):
    """Flattened image ⊕ label embedding → an MLP with dropout (colored, double-colored)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        k, ndf = config.num_classes, config.ndf
        self.label_embedding = nn.Embedding(k, k)
        self.model = nn.Sequential(
            nn.Linear(3 * config.image_size**2 + k, ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(ndf, ndf),
            nn.Dropout(0.4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(ndf, ndf),
            nn.Dropout(0.4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(ndf, 1),
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images.flatten(1), self.label_embedding(labels).to(images.dtype)], dim=1)  # (B, 3HW + K)
        return self.model(x)[:, 0]  # (B,)


@DISCRIMINATORS.register("conv")
class ConvDiscriminator(nn.Module):
    """The label as a 4th input channel → four strided convs → average pool → 1×1 conv (Wildlife)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ndf = config.ndf
        self.label_embedding = nn.Embedding(config.num_classes, 1)

        def block(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]

        self.model = nn.Sequential(
            *block(4, ndf, 3, 1),  # 32 → 30
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


def build_discriminator(config: ModelConfig) -> nn.Module:
    return DISCRIMINATORS.get(config.discriminator)(config)
