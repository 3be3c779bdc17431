"""Mechanisms, shuffler, composer and the CGN forward pass (PAPER.md §1.2)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cgn.checkpoint import load_cgn, save_weights
from cgn.composer import compose
from cgn.config import CGNConfig, ModelConfig
from cgn.discriminator import ConvDiscriminator, LinearDiscriminator, build_discriminator, build_shape_discriminator
from cgn.errors import LabelError
from cgn.mechanisms import (
    _FOLD,
    Shuffler,
    UpBlock,
    UpsampleConv2d,
    circular_pad,
    circular_shift,
    transposed_kernel,
)
from cgn.model import CGN
from cgn.viz import variety_sheet

TINY = ModelConfig(ngf=8, latent_dim=8, ndf=16)


def test_composer_identities():
    f, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(compose(torch.ones(2, 1, 4, 4), f, b), f)
    assert torch.equal(compose(torch.zeros(2, 1, 4, 4), f, b), b)
    half = compose(torch.full((2, 1, 4, 4), 0.5), f, b)
    assert torch.allclose(half, (f + b) / 2)


def test_shuffler_is_a_circular_shift_of_the_tiled_map():
    x = torch.randn(3, 2, 8, 8)
    dy, dx = torch.tensor([0, 3, 8]), torch.tensor([5, 0, 7])
    out = circular_shift(x, dy, dx)
    tiled = x.repeat(1, 1, 2, 2)  # (3, 2, 16, 16): the 2×2 tiling
    for i in range(3):
        window = tiled[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], window)
        assert torch.equal(out[i], torch.roll(x[i], shifts=(-int(dy[i]), -int(dx[i])), dims=(1, 2)))


def test_the_shift_gradient_is_the_inverse_shift_as_autograd_would_give():
    x = torch.randn(3, 2, 8, 8, requires_grad=True)
    dy, dx = torch.tensor([0, 3, 8]), torch.tensor([5, 0, 7])
    upstream = torch.randn(3, 2, 8, 8)
    (grad,) = torch.autograd.grad(circular_shift(x, dy, dx), x, upstream)
    rolled = torch.stack([torch.roll(x[i], shifts=(-int(dy[i]), -int(dx[i])), dims=(1, 2)) for i in range(3)])
    (expected,) = torch.autograd.grad(rolled, x, upstream)  # autograd through plain ops
    assert torch.equal(grad, expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_shift_of_channels_last_maps_is_the_advanced_index_bit_for_bit(memory_format):
    """The shift's index_select of pixel rows gives what indexing the (B, H, W, C) view by
    (image, row, column) gives, in bf16 too, and a channels-last result either way."""
    dy, dx = torch.tensor([0, 3, 8, 1]), torch.tensor([5, 0, 7, 8])
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(4, 3, 8, 8).to(dtype).contiguous(memory_format=memory_format)
        rows = (dy[:, None] + torch.arange(8)) % 8
        cols = (dx[:, None] + torch.arange(8)) % 8
        expected = x.permute(0, 2, 3, 1)[torch.arange(4)[:, None, None], rows[:, :, None], cols[:, None, :]]
        out = circular_shift(x, dy, dx)
        assert torch.equal(out, expected.permute(0, 3, 1, 2))
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("shape", [(64, 64, 3, 3), (32, 64, 3, 3), (1, 32, 3, 3)])
def test_the_kernel_fold_is_the_einsum_of_the_two_folds_bit_for_bit(shape, autocast):
    """One product by the (16, 9) fold gives the einsum over the row and column folds bit for
    bit, forward and gradient, in fp32 and under bf16 autocast (the trained weights depend on
    it: docs/speed.md, "The fold as one product")."""
    torch.manual_seed(0)
    weight = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    fold = torch.tensor(_FOLD)
    upstream = torch.randn(shape[1], shape[0], 4, 4)
    results = []
    for fn in (transposed_kernel, lambda w: torch.einsum("ak,bl,oikl->ioab", fold, fold, w)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            kernel = fn(weight)
        (grad,) = torch.autograd.grad(kernel, weight, upstream.to(kernel.dtype))
        results.append((kernel, grad))
    (kernel, grad), (expected, expected_grad) = results
    assert kernel.shape == (shape[1], shape[0], 4, 4)
    assert kernel.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert torch.equal(kernel, expected)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("cin", "cout", "size"), [(6, 4, 8), (5, 1, 16), (3, 7, 5)])
def test_phase_upsample_conv_is_upsample_then_conv(cin, cout, size, memory_format):
    """Forward and both gradients equal nearest ×2 upsampling followed by the 3×3 conv."""
    torch.manual_seed(0)
    phase = UpsampleConv2d(cin, cout).to(memory_format=memory_format)
    x = torch.randn(2, cin, size, size, dtype=torch.float64).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    weight = phase.weight.detach().double().requires_grad_(True)
    phase.weight.data = weight.detach().clone()
    phase = phase.double()
    expected = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2), weight, padding=1)
    out = phase(x)
    assert out.shape == (2, cout, 2 * size, 2 * size)
    assert out.is_contiguous(memory_format=memory_format)  # no layout conversions downstream
    torch.testing.assert_close(out, expected)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad(out, (x, phase.weight), upstream)
    expected_grads = torch.autograd.grad(expected, (x, weight), upstream)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("weight_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("input_format", [torch.contiguous_format, torch.channels_last])
def test_phase_upsample_conv_output_layout_follows_the_3x3_conv(weight_format, input_format):
    """The layers after an up-block see the memory layout they would after the 3×3 conv (the
    generator feeds NCHW maps to channels-last weights; an NCHW output slowed bf16 steps)."""
    phase, plain = UpBlock(8, 4, "phase")[1], UpBlock(8, 4)
    phase.to(memory_format=weight_format)
    plain.to(memory_format=weight_format)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=input_format).requires_grad_(True)
    out, expected = phase(x), plain[1](plain[0](x))
    for layout in (torch.contiguous_format, torch.channels_last):
        assert out.is_contiguous(memory_format=layout) == expected.is_contiguous(memory_format=layout)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    assert grad.shape == x.shape


def test_phase_upsample_conv_under_bf16_autocast():
    """In bf16 autocast the block runs in bf16 and stays within bf16 rounding of the fp32
    reference; the weight's gradient arrives in the weight's own fp32."""
    torch.manual_seed(0)
    phase = UpsampleConv2d(8, 4)
    x = torch.randn(2, 8, 6, 6)
    expected = phase(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = phase(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    (grad,) = torch.autograd.grad(out.float().sum(), phase.weight)
    assert grad.dtype == torch.float32
    (want,) = torch.autograd.grad(expected.sum(), phase.weight)
    assert (grad - want).norm() < 0.02 * want.norm()  # bf16 products summed over 288 positions


def test_both_upsample_convs_share_parameters_and_outputs():
    torch.manual_seed(0)
    plain, phase = UpBlock(8, 4).eval(), UpBlock(8, 4, "phase").eval()
    assert plain.state_dict().keys() == phase.state_dict().keys()
    phase.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8, 8, 8)
    torch.testing.assert_close(phase(x), plain(x), rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    a = CGN(TINY).eval()
    b = CGN(replace(TINY, upsample_conv="phase")).eval()
    b.load_state_dict(a.state_dict())
    out_a = a(torch.arange(10), generator=torch.Generator().manual_seed(0))
    out_b = b(torch.arange(10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_b.image, out_a.image, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size", [(5, 7), (8, 8)])
def test_circular_pad_is_torchs_circular_pad(memory_format, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_(True)
    out, expected = circular_pad(x), torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=memory_format)
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(out, x, upstream)
    (want,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, want)
    assert grad.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("cin", "cout", "size"), [(6, 4, 8), (3, 7, 5)])
def test_circular_phase_upsample_conv_is_upsample_then_circular_conv(cin, cout, size, memory_format):
    """With circular borders the phase form still equals upsampling then the 3×3 conv."""
    torch.manual_seed(0)
    phase = UpsampleConv2d(cin, cout, padding_mode="circular").double().to(memory_format=memory_format)
    plain = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False, padding_mode="circular").double()
    plain.weight.data.copy_(phase.weight.data)
    x = torch.randn(2, cin, size, size, dtype=torch.float64).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    out, expected = phase(x), plain(torch.nn.functional.interpolate(x, scale_factor=2))
    assert out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad(out, (x, phase.weight), upstream)
    expected_grads = torch.autograd.grad(expected, (x, plain.weight), upstream)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("upsample_conv", ["interpolate", "phase"])
def test_circular_maps_have_no_seam(upsample_conv):
    """With ``model.map_padding="circular"`` the texture mechanism's convolutions commute with
    circular shifts (a shift of its 8×8 start is a 4× shift of the map), so the shuffler's
    window shows no seam where the map's edges meet; with zero borders they do not commute."""
    torch.manual_seed(0)
    for padding, commutes in (("circular", True), ("zeros", False)):
        model = CGN(replace(TINY, map_padding=padding, upsample_conv=upsample_conv)).eval()
        body = model.texture
        start = torch.randn(2, body.fc.out_features // body.start**2, body.start, body.start)

        def draw(x, body=body):
            return torch.tanh(body.out_norm(body.out(body.up2(body.up1(x)))))

        shifted = draw(torch.roll(start, shifts=(1, 3), dims=(2, 3)))
        expected = torch.roll(draw(start), shifts=(4, 12), dims=(2, 3))
        assert torch.allclose(shifted, expected, atol=1e-5) == commutes


def test_a_checkpoint_keeps_its_map_padding(tmp_path):
    config = CGNConfig(model=replace(TINY, map_padding="circular"))
    model = CGN(config.model).eval()
    path = save_weights(tmp_path / "cgn.safetensors", model, config=config, kind="cgn", step=0)
    loaded, loaded_config, _ = load_cgn(path)
    assert loaded_config.model.map_padding == "circular"
    assert loaded.texture.out.padding_mode == loaded.background.up1[1].padding_mode == "circular"
    labels = torch.arange(4)
    with torch.no_grad():
        a = model(labels, generator=torch.Generator().manual_seed(0))
        b = loaded(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.image, b.image)


def test_shuffler_preserves_content_and_is_seeded():
    x = torch.randn(4, 3, 32, 32)
    a = Shuffler()(x, torch.Generator().manual_seed(1))
    b = Shuffler()(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.allclose(a.sum((2, 3)), x.sum((2, 3)), atol=1e-4)  # a permutation of pixels


def test_forward_shapes_and_ranges():
    model = CGN(TINY)
    y = torch.arange(10)
    out = model(y, generator=torch.Generator().manual_seed(0))
    assert out.mask.shape == (10, 1, 32, 32) and out.image.shape == (10, 3, 32, 32)
    assert out.foreground.shape == out.background.shape == (10, 3, 32, 32)
    assert out.mask.min() >= 1e-4 and out.mask.max() <= 0.9999
    assert out.foreground.abs().max() <= 1 and out.background.abs().max() <= 1
    assert torch.allclose(out.image, compose(out.mask, out.foreground, out.background))


def test_counterfactual_labels_drive_each_mechanism_alone():
    model = CGN(TINY).eval()
    noise = model.sample_noise(4, torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2, 3, 4])
    base = model(y, y, y, noise=noise, generator=torch.Generator().manual_seed(5))
    other = model(y, y.flip(0), y, noise=noise, generator=torch.Generator().manual_seed(5))
    assert torch.equal(base.mask, other.mask) and torch.equal(base.background, other.background)
    assert not torch.equal(base.foreground, other.foreground)


def test_seeded_forward_is_reproducible():
    torch.manual_seed(0)
    model = CGN(TINY).eval()
    a = model(torch.arange(10), generator=torch.Generator().manual_seed(3))
    b = model(torch.arange(10), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.image, b.image)


def test_golden_forward():
    """A fixed seed gives a fixed output: catches accidental changes to the architecture or init."""
    torch.manual_seed(0)
    model = CGN(TINY).eval()
    out = model(torch.arange(10), generator=torch.Generator().manual_seed(0))
    assert out.image.sum().item() == pytest.approx(GOLDEN_IMAGE_SUM, rel=1e-4)
    assert out.mask.mean().item() == pytest.approx(GOLDEN_MASK_MEAN, rel=1e-4)


GOLDEN_IMAGE_SUM = -0.041201189160346985
GOLDEN_MASK_MEAN = 0.26761722564697266


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 10]), "shape labels must lie in 0..9, got 0..10"),
        (torch.tensor([-1, 3]), "shape labels must lie in 0..9"),
        (torch.tensor([0.0, 1.0]), "must be a 1-d integer tensor"),
    ],
)
def test_bad_labels_are_clear_errors(labels, message):
    with pytest.raises(LabelError, match=message):
        CGN(TINY)(labels)


def test_label_vectors_must_match_in_length():
    with pytest.raises(LabelError, match="differ in length"):
        CGN(TINY)(torch.arange(3), torch.arange(2))


@pytest.mark.parametrize("name", ["linear", "conv", "linear_projection", "conv_projection"])
def test_discriminators(name):
    config = ModelConfig(discriminator=name, ndf=16)
    disc = build_discriminator(config)
    if name in ("linear", "conv"):
        assert isinstance(disc, LinearDiscriminator if name == "linear" else ConvDiscriminator)
    out = disc(torch.randn(5, 3, 32, 32), torch.arange(5))
    assert out.shape == (5,)
    out.sum().backward()
    labels_matter = disc.eval()(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))
    assert labels_matter[0] != labels_matter[1]
    shape_disc = build_shape_discriminator(ModelConfig(shape_discriminator=name, ndf=16, shape_ndf=8))
    assert shape_disc(torch.randn(5, 1, 32, 32), torch.arange(5)).shape == (5,)
    wider = build_shape_discriminator(ModelConfig(shape_discriminator=name, ndf=8, shape_ndf=16))
    assert sum(p.numel() for p in shape_disc.parameters()) < sum(p.numel() for p in wider.parameters())


def test_paper_sizes():
    model = CGN(ModelConfig())
    assert model.shape.fc.out_features == 64 * 8 * 8 and model.texture.fc.in_features == 42
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 659_992  # the authors' released checkpoints hold the same parameter count


def test_the_maps_before_the_shift_are_what_the_shuffler_moves_and_the_variety_sheet_shows_them():
    torch.manual_seed(0)
    model = CGN(ModelConfig()).eval()
    labels = torch.tensor([0, 3, 7])
    noise = model.sample_noise(3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        shifted = model.make_background(noise, labels, torch.Generator().manual_seed(2))
        raw = model.background_map(noise, labels)
    offsets = torch.Generator().manual_seed(2)
    dy, dx = (torch.randint(0, 33, (3,), generator=offsets) for _ in range(2))
    assert torch.equal(shifted, circular_shift(raw, dy, dx))
    sheet = variety_sheet(model, per_class=4, generator=torch.Generator().manual_seed(3))
    cell = 3 * 32 + 4  # scale 3, pad 4
    assert sheet.height == 16 + 2 * model.config.num_classes * cell + 4  # title, texture and background rows
