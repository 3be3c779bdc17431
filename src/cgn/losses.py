"""Losses of the MNIST-scale CGN (PAPER.md §1.3).

- least-squares adversarial losses for generator and discriminator;
- the binary-entropy mask loss that pushes masks to 0/1;
- the style (Gram) loss on VGG-16 features between generated and (unpaired) real images;
- our optional mask-size and mask-border priors (off by default), which keep masks from inverting;
- our optional mode-seeking terms (off by default), against masks, or texture and background
  maps, that all look alike;
- our optional shape view (off by default): what a colour-blind second discriminator sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cgn.config import LossConfig
from cgn.errors import CheckpointError
from cgn.seeding import derive_seed

# Indices of relu1_2, relu2_2, relu3_3 and relu4_3 in torchvision's vgg16().features.
VGG16_STYLE_LAYERS = (3, 8, 15, 22)
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights
STYLE_SCALE = 5000.0


def generator_adversarial_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: ``MSE(D(x_gen, y), 1)``."""
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


def discriminator_adversarial_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: ``(MSE(D(x_real), 1) + MSE(D(x_gen.detach()), 0)) / 2``."""
    return (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake))) / 2


def mismatch_loss(d_wrong: torch.Tensor) -> torch.Tensor:
    """LSGAN on real images under wrong labels, scored as fake: ``MSE(D(x_real, y_wrong), 0) / 2``
    (the fake half of ``discriminator_adversarial_loss``)."""
    return F.mse_loss(d_wrong, torch.zeros_like(d_wrong)) / 2


def wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, another class drawn uniformly from the other ``num_classes - 1``."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + offset) % num_classes


def r1_penalty(real_scores: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """``E‖∇ₓ D(x)‖²`` over the real batch (Mescheder et al. 2018), differentiable in D's
    weights; ``real_images`` must have required gradients when ``real_scores`` were computed."""
    (grad,) = torch.autograd.grad(real_scores.float().sum(), real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def binary_entropy(mask: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy in bits, H2(m) = −m log2 m − (1 − m) log2(1 − m); 0 for a 0/1 mask."""
    return -(mask * torch.log2(mask) + (1 - mask) * torch.log2(1 - mask)).mean()


def mask_size_loss(mask: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per image ``max(0, low − mean m) + max(0, mean m − high)``, averaged over the batch."""
    area = mask.flatten(1).mean(1)  # (B,)
    return (F.relu(low - area) + F.relu(area - high)).mean()


MODE_SEEKING_EPS = 1e-5


def mode_seeking_loss(
    mask_a: torch.Tensor, mask_b: torch.Tensor, noise_a: torch.Tensor, noise_b: torch.Tensor
) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019): ``1 / (mean|m_a − m_b| / mean|u_a − u_b| + ε)``.

    ``mask_a`` and ``mask_b`` come from the noises ``noise_a`` and ``noise_b`` with the same
    labels; the term falls as the masks of one class grow apart, so collapsed modes cost.
    """
    ratio = (mask_a - mask_b).abs().mean() / (noise_a - noise_b).abs().mean()
    return 1 / (ratio + MODE_SEEKING_EPS)


def amplitude_spectrum(maps: torch.Tensor) -> torch.Tensor:
    """|2-D DFT| per channel (orthonormal, fp32): (B, C, H, W) → (B, C, H, W // 2 + 1).

    A circular shift changes only the transform's phases, so the shuffler leaves this unchanged:
    two maps have the same spectrum if one is the other shifted.
    """
    return torch.fft.rfft2(maps.float(), norm="ortho").abs()


def texture_mode_seeking_loss(
    maps_a: torch.Tensor, maps_b: torch.Tensor, noise_a: torch.Tensor, noise_b: torch.Tensor
) -> torch.Tensor:
    """The mode-seeking term on texture maps, compared by their amplitude spectra.

    In pixels, the shuffler's random shift makes any two maps differ, and a mechanism could
    satisfy the plain term by shifting one pattern; the spectra differ only if the textures do.
    """
    return mode_seeking_loss(amplitude_spectrum(maps_a), amplitude_spectrum(maps_b), noise_a, noise_b)


def frame_pixels(images: torch.Tensor, width: int) -> torch.Tensor:
    """The outer ``width`` pixels of each image: (B, C, H, W) → (B, C, P)."""
    b, c, h, w = images.shape
    inner = torch.zeros(h, w, dtype=torch.bool, device=images.device)
    inner[width:-width, width:-width] = True
    return images.flatten(2)[:, :, ~inner.flatten()]


# ``shape_view(..., "two_gaussian")``: the share of pixels, farthest from the frame, that seeds the
# foreground's colour Gaussian, and how often it is refitted to the posterior. Read off real
# Wildlife training images (benchmarks/shape_view_readability.py): 0.10 and 3 rounds read best.
TWO_GAUSSIAN_SHARE = 0.1
TWO_GAUSSIAN_ROUNDS = 3


def colour_gaussian(pixels: torch.Tensor, weights: torch.Tensor, variance_floor: float):
    """Weighted colour Gaussian of pixels (B, 3, P) with weights (B, 1, P): its mean (B, 3, 1)
    and the Cholesky factor (B, 3, 3) of its covariance plus ``variance_floor`` × I."""
    total = weights.sum(2, keepdim=True).clamp_min(1e-6)
    mean = (pixels * weights).sum(2, keepdim=True) / total
    spread = pixels - mean
    covariance = (spread * weights) @ spread.mT / total
    covariance = covariance + variance_floor * torch.eye(3, device=pixels.device)
    return mean, torch.linalg.cholesky(covariance)


def _squared_distance(pixels: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of pixels (B, 3, P) from a colour Gaussian: (B, 1, P)."""
    return torch.linalg.solve_triangular(factor, pixels - mean, upper=False).square().sum(1, keepdim=True)


def colour_log_density(pixels: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Log density (up to a constant) of pixels (B, 3, P) under a colour Gaussian: (B, 1, P)."""
    log_det = factor.diagonal(dim1=1, dim2=2).log().sum(1)[:, None, None]
    return -0.5 * _squared_distance(pixels, mean, factor) - log_det


def colour_distance(pixels: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of pixels (B, 3, P) from a colour Gaussian: (B, 1, P), at least 1e-3."""
    return _squared_distance(pixels, mean, factor).add(1e-6).sqrt()


def shape_view(
    images: torch.Tensor, width: int, distance: str = "euclidean", variance_floor: float = 1e-3
) -> torch.Tensor:
    """A colour-blind view of images (B, 3, H, W) → (B, 1, H, W) in [-1, 1].

    ``distance="euclidean"``: each pixel's RGB distance from the mean colour of the image's
    frame (the outer ``width`` pixels), divided by the image's largest such distance. For a
    real coloured or double-coloured digit (one foreground colour on one background colour)
    this is the MNIST stroke itself, whatever the two colours; on a composite it is the mask
    wherever foreground and background differ. A discriminator on it can only tell the
    classes apart by shape.

    ``distance="mahalanobis"``: the same distance in units of the frame's own colour spread,
    with ``variance_floor`` added to the frame's 3 × 3 colour covariance. On a one-coloured
    frame the covariance is the floor alone and the view is the Euclidean one. On a textured
    background (Wildlife) the colours the background texture varies along count for less, so
    its edges fade from the view while the digit's texture stands out (docs/recipes.md, "The
    shape view").

    ``distance="two_gaussian"``: a model of the digit's own colours next to the frame's, where
    the Mahalanobis view knows only the frame's. A second colour Gaussian is fitted to the
    ``TWO_GAUSSIAN_SHARE`` of pixels farthest from the frame in the Mahalanobis view, then
    refitted ``TWO_GAUSSIAN_ROUNDS`` times to each pixel's posterior of belonging to it. The
    view is tanh(log(d_frame / d_digit)) of each pixel's Mahalanobis distances from the two:
    −1 on the frame's colours, +1 on the digit's. It does not saturate as the posterior does,
    so a critic's gradient reaches every pixel; the Gaussians are fitted without gradient.
    """
    with torch.autocast(images.device.type, enabled=False):
        images = images.float()
        if distance == "two_gaussian":
            return _two_gaussian_view(images, width, variance_floor)
        frame = frame_pixels(images, width)  # (B, 3, P)
        centre = frame.mean(2, keepdim=True)  # (B, 3, 1)
        offsets = images.flatten(2) - centre  # (B, 3, H·W)
        if distance == "mahalanobis":
            spread = frame - centre
            covariance = spread @ spread.mT / spread.shape[2]  # (B, 3, 3)
            covariance = covariance + variance_floor * torch.eye(3, device=images.device)
            offsets = torch.linalg.solve_triangular(torch.linalg.cholesky(covariance), offsets, upper=False)
        elif distance != "euclidean":
            raise ValueError(
                f"shape_view distance must be 'euclidean', 'mahalanobis' or 'two_gaussian', not {distance!r}"
            )
        length = offsets.square().sum(1).add(1e-6).sqrt().view(images.shape[0], 1, *images.shape[2:])
        peak = length.flatten(1).amax(1).clamp_min(1e-2)[:, None, None, None]
        return 2 * length / peak - 1


def _two_gaussian_view(images: torch.Tensor, width: int, variance_floor: float) -> torch.Tensor:
    pixels = images.flatten(2)
    with torch.no_grad():  # the two Gaussians are statistics of the image, fitted, not differentiated
        frame = frame_pixels(images, width)
        background = colour_gaussian(frame, torch.ones_like(frame[:, :1]), variance_floor)
        far = shape_view(images, width, "mahalanobis", variance_floor).flatten(2)
        weights = (far >= far.quantile(1 - TWO_GAUSSIAN_SHARE, dim=2, keepdim=True)).float()
        for _ in range(TWO_GAUSSIAN_ROUNDS):
            foreground = colour_gaussian(pixels, weights, variance_floor)
            weights = torch.sigmoid(colour_log_density(pixels, *foreground) - colour_log_density(pixels, *background))
    ratio = colour_distance(pixels, *background).log() - colour_distance(pixels, *foreground).log()
    return torch.tanh(ratio).view(images.shape[0], 1, *images.shape[2:])


def mask_border_loss(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Mean mask value on the outer ``width`` pixels of the frame: 0 for a centred object.

    MNIST digits sit inside their frame, so a mask that covers the border is an inverted one
    (mask on the background, the digit drawn by the background mechanism).
    """
    return frame_pixels(mask, width).mean()


def gram(features: torch.Tensor) -> torch.Tensor:
    """Per-sample Gram matrix F Fᵀ / (C·H·W): (B, C, H, W) → (B, C, C)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    return flat @ flat.transpose(1, 2) / (c * h * w)


# Samples per chunk in gram_l1_loss keep one chunk's Gram matrices near this many floats
# (1 MiB in fp32), so they stay in the core's L2 cache.
GRAM_CHUNK_FLOATS = 2**18


def _chunk_difference(gen: torch.Tensor, real: torch.Tensor, start: int, stop: int):
    """``F Fᵀ − R Rᵀ`` (unscaled) of samples ``start:stop`` of flattened (B, C, H·W) features,
    as one ``baddbmm`` onto one ``bmm``, with the generated features in fp32."""
    f, r = gen[start:stop].float(), real[start:stop].float()
    return f, torch.baddbmm(torch.bmm(f, f.mT), r, r.mT, alpha=-1)


class _GramL1(torch.autograd.Function):
    """``L1(Gram(gen), Gram(real))`` (mean), computed a few samples at a time.

    The same value and gradient as ``F.l1_loss(gram(gen), gram(real))``, but the (B, C, C)
    Gram matrices (16 MiB each for relu4_3 at batch 16) are never materialised: each chunk's
    difference of Grams is built, and its absolute sum and the gradient's product taken while
    it is in cache. The Gram difference D is symmetric, so the gradient ``(S + Sᵀ) F`` of its
    sign matrix S is ``2 S F``: made in the forward pass (when ``gen`` needs a gradient), it
    leaves the backward pass a scaling. The 1/(C·H·W) scale is applied once, to the sum. On the
    CPU this avoids streaming those tensors through memory several times per step
    (results/gram_l1_speed.json, docs/speed.md).
    """

    @staticmethod
    def forward(ctx, gen: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        b, c, hw = gen.shape
        step = max(1, GRAM_CHUNK_FLOATS // (c * c))
        total = gen.new_zeros((), dtype=torch.float32)
        # S F per sample, unscaled
        sign_product = (
            torch.empty(gen.shape, dtype=torch.float32, device=gen.device) if ctx.needs_input_grad[0] else None
        )
        for start in range(0, b, step):
            f, difference = _chunk_difference(gen, real, start, start + step)
            total += torch.linalg.vector_norm(difference, 1)
            if sign_product is not None:
                torch.bmm(difference.sign_(), f, out=sign_product[start : start + step])
        ctx.save_for_backward(sign_product)
        ctx.gen_dtype = gen.dtype
        return total / (b * c * c * c * hw)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (sign_product,) = ctx.saved_tensors
        b, c, hw = sign_product.shape
        scale = 2 * grad_output / (b * c * c * c * hw)  # d mean / d G, and d G / d F's 1/(C·H·W)
        return (sign_product * scale).to(ctx.gen_dtype), None


def gram_l1_loss(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``mean |Gram(φ(x_gen)) − Gram(φ(x_real))|`` of two (B, C, H, W) feature maps; no
    gradient flows to ``real``. The Grams are computed in fp32, also under bf16 autocast."""
    b, c, h, w = generated.shape
    with torch.autocast(generated.device.type, enabled=False):
        return _GramL1.apply(generated.reshape(b, c, h * w), real.detach().reshape(b, c, h * w))


# A frozen 3×3 convolution on maps of at most this many pixels (VGG-16's relu4 block, 4×4 at
# 32×32 input) runs on the CPU as one matrix product over its input's 3×3 patches: oneDNN's
# convolution kernels reach a fraction of the matrix product's speed on such small maps.
SMALL_MAP_PIXELS = 16


def patches3x3(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N·H·W, 9·C): each pixel's zero-padded 3×3 neighbourhood, ordered
    (kernel row, kernel column, channel)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (N, H + 2, W + 2, C)
    shifted = [padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return torch.cat(shifted, dim=3).reshape(n * h * w, 9 * c)


def small_map_matrices(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (C_out, C_in, 3, 3) kernel as the two matrices of :class:`_SmallMapConv3x3`: the
    forward one (9·C_in, C_out) and, for the input gradient, the flipped kernel (9·C_out, C_in)."""
    c_out, c_in = weight.shape[:2]
    forward = weight.permute(2, 3, 1, 0).reshape(9 * c_in, c_out).contiguous()
    backward = weight.flip(2, 3).permute(2, 3, 0, 1).reshape(9 * c_out, c_in).contiguous()
    return forward, backward


class _SmallMapConv3x3(torch.autograd.Function):
    """A frozen 3×3 convolution (stride 1, padding 1) as one product over 3×3 patches. Its
    input gradient, a convolution of the output gradient with the flipped kernel, is one such
    product too; there is no weight gradient. The same sums as the convolution, accumulated in
    fp32 and rounded once, in another order. CPU autocast applies to both passes."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, forward_matrix, backward_matrix, bias):
        n, _, h, w = x.shape
        y = torch.addmm(bias, patches3x3(x), forward_matrix)
        ctx.save_for_backward(backward_matrix)
        # (N, C_out, H, W), channels-last; a copy, not a view, so that an in-place ReLU may follow
        return y.view(n, h, w, -1).permute(0, 3, 1, 2).clone(memory_format=torch.channels_last)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):
        (backward_matrix,) = ctx.saved_tensors
        n, _, h, w = grad.shape
        grad_x = patches3x3(grad) @ backward_matrix
        return grad_x.view(n, h, w, -1).permute(0, 3, 1, 2), None, None, None


class StyleLoss(nn.Module):
    """``Σ_l w_l² · 5000 · L1(Gram(φ_l(x_gen)), Gram(φ_l(x_real)))`` on a frozen VGG-16.

    Only the layers up to the deepest one with a non-zero weight are run (the original ran
    all of VGG even for zero weights). Inputs are raw [-1, 1] images, as in the original.
    """

    # False runs every convolution as ``F.conv2d``, also on small maps on the CPU
    # (SMALL_MAP_PIXELS): kept for the side-by-side timing and its test.
    small_map_matmul: bool = True

    def __init__(self, weights: tuple[float, ...], features: nn.Sequential) -> None:
        super().__init__()
        self.layer_weights = {VGG16_STYLE_LAYERS[i]: w**2 * STYLE_SCALE for i, w in enumerate(weights) if w != 0}
        depth = max(self.layer_weights) + 1 if self.layer_weights else 0
        self.features = features[:depth].eval().requires_grad_(False)
        # Per small-map layer: the weight its matrices were made from, its version, the matrices.
        self._matrices: dict[int, tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor]]] = {}

    def train(self, mode: bool = True) -> StyleLoss:  # the feature network stays in eval mode
        return self

    def _on_small_map(self, layer: nn.Module, x: torch.Tensor) -> bool:
        return (
            self.small_map_matmul
            and x.device.type == "cpu"
            and x.shape[-2] * x.shape[-1] <= SMALL_MAP_PIXELS
            and isinstance(layer, nn.Conv2d)
            and layer.kernel_size == (3, 3)
            and layer.stride == (1, 1)
            and layer.padding == (1, 1)
            and layer.padding_mode == "zeros"
            and layer.dilation == (1, 1)
            and layer.groups == 1
            and layer.bias is not None
        )

    def _small_map_conv(self, i: int, layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        weight = layer.weight.detach()
        source, version, matrices = self._matrices.get(i, (None, -1, None))
        # Remade for a new weight (``.to()``, a loaded state) or a changed one (in place); the
        # cached source keeps its memory, so another weight cannot take its address.
        if (
            source is None
            or source.data_ptr() != weight.data_ptr()
            or source.dtype != weight.dtype
            or version != weight._version
        ):
            source, version, matrices = weight, weight._version, small_map_matrices(weight)
            self._matrices[i] = source, version, matrices
        return _SmallMapConv3x3.apply(x, *matrices, layer.bias)

    def feature_maps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The trunk's feature maps at the weighted layers, by layer index."""
        features = {}
        for i, layer in enumerate(self.features):
            x = self._small_map_conv(i, layer, x) if self._on_small_map(layer, x) else layer(x)
            if i in self.layer_weights:
                features[i] = x
        return features

    def forward(self, generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if not self.layer_weights:
            return generated.new_zeros(())
        with torch.no_grad():
            target = self.feature_maps(real)
        current = self.feature_maps(generated)
        return sum(w * gram_l1_loss(current[i], target[i]) for i, w in self.layer_weights.items())


def vgg16_features(network: str, weights_path: str | os.PathLike = "") -> nn.Sequential:
    """VGG-16's convolutional trunk: ImageNet weights (``vgg16``) or a seeded random init."""
    from torchvision.models import vgg16

    if network == "vgg16_random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(0, "vgg16_random"))
            return vgg16(weights=None).features
    path = Path(weights_path) if weights_path else Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if not path.is_file():
        raise CheckpointError(
            f"VGG-16 ImageNet weights not found at {path}: download torchvision's {VGG16_FILE} "
            "(e.g. `python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"`) "
            "or set loss.style_weights_path, or choose loss.style_network=vgg16_random or none"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = vgg16(weights=None)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"{path} is not a torchvision VGG-16 state dict ({type(e).__name__}: {e})") from None
    return model.features


def build_style_loss(config: LossConfig) -> StyleLoss | None:
    if not config.uses_style:
        return None
    return StyleLoss(config.style_weights, vgg16_features(config.style_network, config.style_weights_path))


class GeneratorLoss(nn.Module):
    """All generator terms of one step; returns the total and a dict of named parts."""

    def __init__(self, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        self.style = build_style_loss(config)

    def forward(self, d_fake: torch.Tensor, mask: torch.Tensor | None, generated: torch.Tensor, real: torch.Tensor):
        """``mask`` is None for the conditional-GAN baseline: the mask terms are then skipped."""
        c = self.config
        parts = {"adv": c.adversarial_weight * generator_adversarial_loss(d_fake)}
        if self.style is not None:
            parts["style"] = self.style(generated, real)
        if mask is None:
            return sum(parts.values()), parts
        parts["mask"] = c.mask_weight * binary_entropy(mask)
        if c.mask_size_weight:
            parts["mask_size"] = c.mask_size_weight * mask_size_loss(mask, c.mask_size_min, c.mask_size_max)
        if c.mask_border_weight:
            parts["mask_border"] = c.mask_border_weight * mask_border_loss(mask, c.mask_border_width)
        return sum(parts.values()), parts
