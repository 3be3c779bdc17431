"""The three independent mechanisms of the MNIST-scale CGN (PAPER.md §1.2).

Each maps a 42-d input (noise u ∈ R^32 ⊕ a 10-d label embedding) to a 32×32 map:
- :class:`ShapeMechanism` → mask m (1 channel, clamped to [1e-4, 0.9999], no sigmoid);
- :class:`TextureMechanism` → foreground f (3 channels, tanh);
- :class:`BackgroundMechanism` → background b (same architecture as the texture, own weights).

:class:`Shuffler` is the texture inductive bias: tile the map 2×2 and crop a random 32×32
window, i.e. a random circular shift, so texture and background cannot encode where the digit is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASK_MIN, MASK_MAX = 1e-4, 0.9999


class Upsample2x(nn.Module):
    """Nearest-neighbour ×2 upsampling, bit-identical to ``nn.Upsample(scale_factor=2)``.

    Without autograd it is an expand + reshape: on the CPU, ``upsample_nearest2d`` spends most
    of its time in an internal copy and is 1.7-3× slower (counterfactual generation). Its
    backward, however, beats the expand's, so training keeps ``F.interpolate``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        b, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


# Nearest ×2 upsampling repeats each input row twice, so the three rows of a 3×3 kernel applied
# after it see only two input rows: output row 2i sees input rows i − 1, i with kernel rows
# (w0, w1 + w2), and row 2i + 1 sees rows i, i + 1 with (w0 + w1, w2). That is a transposed
# convolution with stride 2, padding 1 and the 4-tap kernel (w2, w1 + w2, w0 + w1, w0) (its
# tap k of input row i lands on output row 2i − 1 + k). Columns alike.
_FOLD = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))  # (4-tap, 3×3 row)
# Both axes folded at once: entry (4a + b, 3k + l) is _FOLD[a][k] · _FOLD[b][l].
_FOLD_2D = torch.kron(torch.tensor(_FOLD), torch.tensor(_FOLD))  # (16, 9)


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 3×3 conv weight (O, I, 3, 3) applied after nearest ×2 upsampling, as the 4×4 weight
    (I, O, 4, 4) of a stride-2 transposed convolution on the input (padding 1).

    One (O·I, 9) × (9, 16) product; bit-identical, forward and gradient, to the einsum
    ``"ak,bl,oikl->ioab"`` over the two 1-d folds that it replaces, and about 100 µs cheaper
    per call in a bf16 training step (docs/speed.md, "The fold as one product")."""
    o, i = weight.shape[:2]
    fold = _FOLD_2D.to(device=weight.device, dtype=weight.dtype)
    return (weight.reshape(o * i, 9) @ fold.T).view(o, i, 4, 4).permute(1, 0, 2, 3)


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class _CircularPad(torch.autograd.Function):
    """One pixel of circular padding on each side of (B, C, H, W), in the input's layout.

    The same values and gradient as ``F.pad(x, (1, 1, 1, 1), mode="circular")``, whose backward
    on the CPU took 0.75-2.6 ms per call at the texture mechanism's bf16 shapes against 0.2-0.5
    ms here (forward and backward; docs/recipes.md, "Seamless maps")."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ctx.layout = _layout(x)
        out = torch.empty((b, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=ctx.layout)
        out[:, :, 1:-1, 1:-1] = x
        out[:, :, 1:-1, 0] = x[:, :, :, -1]
        out[:, :, 1:-1, -1] = x[:, :, :, 0]
        out[:, :, 0] = out[:, :, -2]  # corners included
        out[:, :, -1] = out[:, :, 1]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=ctx.layout)
        grad[:, :, -2] += grad[:, :, 0]  # each padded row back onto the row it copies
        grad[:, :, 1] += grad[:, :, -1]
        rows = grad[:, :, 1:-1]
        rows[..., -2] += rows[..., 0]
        rows[..., 1] += rows[..., -1]
        return rows[..., 1:-1].contiguous(memory_format=ctx.layout)


def circular_pad(x: torch.Tensor) -> torch.Tensor:
    """Wrap (B, C, H, W) by one pixel on each side: ``F.pad(x, (1, 1, 1, 1), mode="circular")``."""
    return _CircularPad.apply(x)


class MapConv2d(nn.Conv2d):
    """A 3×3 ``nn.Conv2d`` with padding 1 whose circular border goes through :func:`circular_pad`."""

    def __init__(self, cin: int, cout: int, *, bias: bool, padding_mode: str = "zeros") -> None:
        super().__init__(cin, cout, 3, padding=1, bias=bias, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "circular":
            return super().forward(x)
        return F.conv2d(circular_pad(x), self.weight, self.bias)


class UpsampleConv2d(nn.Conv2d):
    """Nearest ×2 upsampling then a 3×3 conv (padding 1, no bias), computed at the input's size.

    The same function and the same parameter as ``Upsample2x`` → ``nn.Conv2d(cin, cout, 3,
    padding=1, padding_mode=padding_mode)``, equal up to float rounding: one stride-2 transposed
    convolution with the folded 4×4 kernel (:func:`transposed_kernel`). 9/16 of the
    multiply-adds at 8 → 16 and 1/2 at 16 → 32 (measured: docs/speed.md, "Up-blocks at the
    input's size"). With ``padding_mode="circular"`` the input is wrapped by one pixel first:
    the upsampled map's wrapped neighbours are the input's.
    """

    def __init__(self, cin: int, cout: int, padding_mode: str = "zeros") -> None:
        super().__init__(cin, cout, 3, padding=1, bias=False, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The folded kernel keeps the weight's layout: with a channels-last weight the
        # convolution runs channels-last, as the 3×3 one it replaces would (in NCHW the bf16
        # training step was 12-15 % slower than upsampling first).
        kernel = transposed_kernel(self.weight).to(x.dtype, memory_format=_layout(self.weight))
        if self.padding_mode == "circular":
            # Input row j lands on output rows 2j − 1 .. 2j + 2; after a one-pixel wrap it sits
            # at row j + 1, so cropping 3 rows (not 1) keeps the output on the same grid.
            return F.conv_transpose2d(circular_pad(x), kernel, stride=2, padding=3)
        return F.conv_transpose2d(x, kernel, stride=2, padding=1)


class UpBlock(nn.Sequential):
    """Upsample ×2 (nearest) → Conv3×3 (no bias) → BatchNorm → LeakyReLU(0.2).

    ``upsample_conv``: "interpolate" upsamples then convolves (the paper's code); "phase"
    computes the same two steps at the input's size (:class:`UpsampleConv2d`). Index 1 holds
    the conv's weight in both, so checkpoints load into either. ``padding_mode``: the conv's
    border, "zeros" (the paper) or "circular" (``model.map_padding``).
    """

    def __init__(self, cin: int, cout: int, upsample_conv: str = "interpolate", padding_mode: str = "zeros") -> None:
        if upsample_conv == "phase":
            upsample, conv = nn.Identity(), UpsampleConv2d(cin, cout, padding_mode)
        elif upsample_conv == "interpolate":
            upsample = Upsample2x()
            conv = MapConv2d(cin, cout, bias=False, padding_mode=padding_mode)
        else:
            raise ValueError(f"upsample_conv must be 'interpolate' or 'phase', not {upsample_conv!r}")
        super().__init__(upsample, conv, nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


class ShapeMechanism(nn.Module):
    """f_shape(u, y_s) → mask (B, 1, H, W) in [1e-4, 0.9999]."""

    def __init__(
        self, in_dim: int, ngf: int = 32, image_size: int = 32, offset: float = 0.0, upsample_conv: str = "interpolate"
    ) -> None:
        super().__init__()
        self.start = image_size // 4
        self.offset = offset  # ours (0 = the paper): subtracted before the clamp, see ModelConfig
        self.fc = nn.Linear(in_dim, 2 * ngf * self.start**2)
        self.norm0 = nn.InstanceNorm2d(2 * ngf)
        self.up1 = UpBlock(2 * ngf, ngf, upsample_conv)
        self.norm1 = nn.InstanceNorm2d(ngf)
        self.up2 = UpBlock(ngf, 1, upsample_conv)
        self.norm2 = nn.InstanceNorm2d(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), -1, self.start, self.start)  # (B, 64, 8, 8)
        x = self.norm1(self.up1(self.norm0(x)))  # (B, 32, 16, 16)
        x = self.norm2(self.up2(x))  # (B, 1, 32, 32)
        return (x.float() - self.offset).clamp(MASK_MIN, MASK_MAX)  # float32: 0.9999 rounds to 1 in bf16


class TextureMechanism(nn.Module):
    """f_text(u, y_t) → foreground map (B, 3, H, W) in [-1, 1].

    ``padding_mode`` (``model.map_padding``): "zeros", the paper, draws a map whose opposite
    edges do not meet, so the shuffler's circular shift shows that seam as a cross inside the
    image; "circular" (ours) convolves on the torus that the shift wraps the map around.
    """

    def __init__(
        self,
        in_dim: int,
        ngf: int = 32,
        image_size: int = 32,
        channels: int = 3,
        upsample_conv: str = "interpolate",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.start = image_size // 4
        self.fc = nn.Linear(in_dim, 2 * ngf * self.start**2)
        self.up1 = UpBlock(2 * ngf, 2 * ngf, upsample_conv, padding_mode)
        self.up2 = UpBlock(2 * ngf, ngf, upsample_conv, padding_mode)
        self.out = MapConv2d(ngf, channels, bias=True, padding_mode=padding_mode)
        self.out_norm = nn.BatchNorm2d(channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), -1, self.start, self.start)  # (B, 64, 8, 8)
        x = self.up2(self.up1(x))  # (B, 32, 32, 32)
        return torch.tanh(self.out_norm(self.out(x)))  # (B, 3, 32, 32)


class BackgroundMechanism(TextureMechanism):
    """f_bg(u, y_b) → background map; the texture architecture with its own weights."""


class Shuffler(nn.Module):
    """Tile 2×2 and crop a random window: a random circular shift per image."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        dy = torch.randint(0, h + 1, (b,), generator=generator).to(x.device)  # offsets 0..H into the 2H tile
        dx = torch.randint(0, w + 1, (b,), generator=generator).to(x.device)
        return circular_shift(x, dy, dx)


def circular_shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Per-image window at (dy, dx) of the 2×2 tiling of x: ``out[i, :, r, c] = x[i, :, (r+dy) % H, (c+dx) % W]``."""
    return _CircularShift.apply(x, dy, dx)


def _shift_gather(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The shift as one ``index_select`` of pixel rows (B·H·W, C): a channels-last result,
    whatever x's layout, and about a third faster than the 3-d advanced index it replaces."""
    b, c, h, w = x.shape
    rows = (dy[:, None] + torch.arange(h, device=x.device)) % h  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)) % w  # (B, W)
    rows = rows + torch.arange(b, device=x.device)[:, None] * h  # rows of the stacked batch
    pixels = (rows[:, :, None] * w + cols[:, None, :]).view(-1)
    gathered = x.permute(0, 2, 3, 1).reshape(b * h * w, c).index_select(0, pixels)
    return gathered.view(b, h, w, c).permute(0, 3, 1, 2)


class _CircularShift(torch.autograd.Function):
    """The shift is a permutation, so its gradient is the inverse shift of the incoming one: a
    gather, bit-identical to autograd's accumulating ``index_put`` and about 3× cheaper (a
    batch-16 profile: 0.1-0.3 ms against 0.5-0.8 ms per call)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(dy, dx)
        ctx.size = x.shape[2:]
        return _shift_gather(x, dy, dx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        dy, dx = ctx.saved_tensors
        h, w = ctx.size
        return _shift_gather(grad, (h - dy) % h, (w - dx) % w), None, None


def init_weights(module: nn.Module, init_type: str, gain: float) -> None:
    """pix2pix-style init: conv/linear weights orthogonal(gain) or normal(0, gain), biases 0;
    BatchNorm weights N(1, gain), biases 0. Embeddings keep PyTorch's N(0, 1)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if init_type == "orthogonal":
                nn.init.orthogonal_(m.weight, gain=gain)
            else:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
