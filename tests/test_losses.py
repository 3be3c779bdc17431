"""Losses (PAPER.md §1.3): LSGAN, binary mask entropy, Gram style loss, mask-size prior."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgn import losses
from cgn.config import LossConfig
from cgn.errors import CheckpointError
from cgn.losses import (
    GeneratorLoss,
    StyleLoss,
    amplitude_spectrum,
    binary_entropy,
    discriminator_adversarial_loss,
    frame_pixels,
    generator_adversarial_loss,
    gram,
    gram_l1_loss,
    mask_border_loss,
    mask_size_loss,
    mismatch_loss,
    mode_seeking_loss,
    r1_penalty,
    shape_view,
    texture_mode_seeking_loss,
    vgg16_features,
    wrong_labels,
)
from cgn.mechanisms import Shuffler


def test_lsgan_losses():
    assert generator_adversarial_loss(torch.ones(4)).item() == 0
    assert generator_adversarial_loss(torch.zeros(4)).item() == 1
    assert discriminator_adversarial_loss(torch.ones(4), torch.zeros(4)).item() == 0
    assert discriminator_adversarial_loss(torch.zeros(4), torch.ones(4)).item() == 1


def test_binary_entropy_in_bits():
    assert binary_entropy(torch.full((2, 1, 4, 4), 0.5)).item() == pytest.approx(1.0)
    assert binary_entropy(torch.tensor([1e-4, 0.9999])).item() < 2e-3
    p = 0.2
    assert binary_entropy(torch.tensor([p])).item() == pytest.approx(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


def test_mask_size_prior():
    masks = torch.zeros(3, 1, 10, 10)
    masks[1, :, :5] = 1  # area 0.5
    masks[2] = 1  # area 1.0
    per_image = [0.05, 0.0, 0.5]  # below 0.05, inside [0.05, 0.5], above 0.5
    assert mask_size_loss(masks, 0.05, 0.5).item() == pytest.approx(sum(per_image) / 3)


def test_mask_border_prior():
    centred = torch.zeros(2, 1, 8, 8)
    centred[:, :, 2:6, 2:6] = 1
    assert mask_border_loss(centred, 2).item() == 0
    inverted = 1 - centred
    assert mask_border_loss(inverted, 2).item() == 1
    half = torch.zeros(1, 1, 8, 8)
    half[..., :4, :] = 1  # top half: 24 of the 48 border pixels
    assert mask_border_loss(half, 2).item() == pytest.approx(0.5)


def test_mode_seeking_term_falls_as_masks_of_a_class_differ():
    noise_a, noise_b = torch.zeros(2, 8), torch.ones(2, 8)  # mean |u_a - u_b| = 1
    alike = torch.zeros(2, 1, 4, 4)
    assert mode_seeking_loss(alike, alike, noise_a, noise_b).item() == pytest.approx(1e5)  # 1 / ε
    half = alike.clone()
    half[..., :2] = 1  # mean |m_a - m_b| = 0.5
    assert mode_seeking_loss(alike, half, noise_a, noise_b).item() == pytest.approx(2.0, rel=1e-4)
    mask = torch.full((2, 1, 4, 4), 0.3, requires_grad=True)
    mode_seeking_loss(mask, half, noise_a, noise_b).backward()
    assert (mask.grad[..., :2] > 0).all()  # pulling towards the other mask raises the term


def test_texture_spectra_ignore_the_shufflers_shift_but_not_the_texture():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    shifted = Shuffler()(maps, generator)
    assert not torch.equal(shifted, maps)
    torch.testing.assert_close(amplitude_spectrum(shifted), amplitude_spectrum(maps), atol=1e-5, rtol=1e-5)
    assert amplitude_spectrum(maps).shape == (4, 3, 32, 17)
    noise_a, noise_b = torch.zeros(4, 8), torch.ones(4, 8)  # mean |u_a - u_b| = 1
    # One pattern shifted around is a collapsed mode: the term is at its ceiling, 1 / ε, as
    # for identical maps, where the plain pixel term would read the shift as variety.
    assert texture_mode_seeking_loss(shifted, maps, noise_a, noise_b).item() == pytest.approx(1e5, rel=0.2)
    assert mode_seeking_loss(shifted, maps, noise_a, noise_b).item() < 10
    other = torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1
    assert texture_mode_seeking_loss(other, maps, noise_a, noise_b).item() < 100
    leaf = maps.clone().requires_grad_(True)
    texture_mode_seeking_loss(leaf, other, noise_a, noise_b).backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_r1_penalty_is_the_mean_squared_input_gradient_and_trains_the_critic():
    # D(x) = Σ w·x² per image: ∇ₓD = 2 w x, so the penalty is E Σ (2 w x)².
    w = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], requires_grad=True)
    scores = (w * x.pow(2)).sum(1)
    penalty = r1_penalty(scores, x)
    assert penalty.item() == pytest.approx(((1 + 4) + 9) / 2)  # (2w)² = 1
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert grad_w.item() == pytest.approx(2 * 4 * 0.5 * 14 / 2)  # d/dw of 4w² · 7


def test_wrong_labels_are_every_other_class_and_never_the_own():
    labels = torch.arange(10).repeat(2000)
    wrong = wrong_labels(labels, 10, torch.Generator().manual_seed(0))
    assert not (wrong == labels).any() and wrong.min() == 0 and wrong.max() == 9
    pairs = torch.bincount(labels * 10 + wrong, minlength=100).view(10, 10).float()
    off_diagonal = pairs[~torch.eye(10, dtype=torch.bool)]  # 2000 per label over 9 others: ≈ 222 each
    assert off_diagonal.min() > 150 and off_diagonal.max() < 300
    assert mismatch_loss(torch.zeros(4)).item() == 0 and mismatch_loss(torch.ones(4)).item() == 0.5


def test_frame_pixels():
    images = torch.zeros(2, 3, 8, 8)
    images[:, :, 2:6, 2:6] = 1.0  # the object, inside the frame
    frame = frame_pixels(images, 2)
    assert frame.shape == (2, 3, 64 - 16) and frame.abs().sum() == 0
    assert frame_pixels(torch.ones(2, 3, 8, 8), 1).shape == (2, 3, 64 - 36)


def test_shape_view_is_the_stroke_whatever_the_two_colours():
    stroke = torch.zeros(2, 1, 8, 8)
    stroke[:, :, 3:5, 2:6] = 1.0
    stroke[:, :, 4, 2] = 0.5  # an anti-aliased edge keeps its grey level
    foreground = torch.tensor([[0.9, -0.2, 0.1], [-1.0, -1.0, 1.0]])[:, :, None, None]
    background = torch.tensor([[-1.0, -1.0, -1.0], [0.5, 0.7, -0.3]])[:, :, None, None]
    images = stroke * foreground + (1 - stroke) * background
    assert torch.allclose(shape_view(images, width=2), 2 * stroke - 1, atol=1e-3)
    flat = torch.full((1, 3, 8, 8), 0.3, requires_grad=True)  # nothing drawn: all background, no NaN
    view = shape_view(flat, width=2)
    view.sum().backward()
    assert torch.allclose(view, torch.tensor(-0.8)) and torch.isfinite(flat.grad).all()  # floor: 2·1e-3 / 1e-2 − 1


def test_the_mahalanobis_shape_view_fades_a_textured_background():
    stroke = torch.zeros(1, 1, 12, 12)
    stroke[:, :, 4:8, 5:7] = 1.0
    columns = torch.arange(12) % 2 == 0  # a striped background: two colours, column by column
    background = torch.where(columns, torch.tensor([0.8, 0.6, -0.6])[:, None], torch.tensor([-0.8, -0.6, 0.6])[:, None])
    background = background[None, :, None, :].expand(1, 3, 12, 12)
    digit = torch.tensor([0.6, -0.8, 0.0])[None, :, None, None]  # at right angles to the stripes' colour axis
    images = stroke * digit + (1 - stroke) * background
    on, off = stroke.bool(), ~stroke.bool()
    plain = shape_view(images, width=2)
    whitened = shape_view(images, width=2, distance="mahalanobis")
    assert plain[off].max() > plain[on].min()  # the stripes are as far from the frame's mean as the digit
    assert whitened[on].min() > 0.99 and whitened[off].max() < -0.9  # whitened: only the digit stands out
    # On a one-coloured frame the whitened view is the plain one.
    flat = stroke * digit + (1 - stroke) * torch.tensor([-1.0, 0.2, 0.4])[None, :, None, None]
    assert torch.allclose(shape_view(flat, 2, "mahalanobis"), shape_view(flat, 2), atol=2e-3)
    with pytest.raises(ValueError, match="'euclidean', 'mahalanobis' or 'two_gaussian'"):
        shape_view(images, 2, "cosine")


def test_the_two_gaussian_shape_view_is_the_digits_posterior():
    stroke = torch.zeros(2, 1, 12, 12)
    stroke[:, :, 3:9, 5:8] = 1.0  # 18 of 144 pixels: more than the seed share
    columns = torch.arange(12) % 2 == 0
    striped = torch.where(columns, torch.tensor([0.8, 0.6, -0.6])[:, None], torch.tensor([-0.8, -0.6, 0.6])[:, None])
    plain = torch.tensor([-1.0, 0.2, 0.4])[:, None, None].expand(3, 12, 12)
    background = torch.stack([striped[:, None, :].expand(3, 12, 12), plain])
    digit = torch.tensor([0.6, -0.8, 0.0])[None, :, None, None]
    images = (stroke * digit + (1 - stroke) * background).requires_grad_()
    view = shape_view(images, width=2, distance="two_gaussian")
    on, off = stroke.bool(), ~stroke.bool()
    assert view.shape == stroke.shape and view[on].min() > 0.9 and view[off].max() < -0.9
    view.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    flat = torch.full((1, 3, 12, 12), 0.3, requires_grad=True)  # nothing drawn: no NaN
    flat_view = shape_view(flat, 2, "two_gaussian")
    flat_view.sum().backward()
    assert torch.isfinite(flat_view).all() and torch.isfinite(flat.grad).all()


def test_gram_is_normalised_per_sample():
    f = torch.ones(2, 3, 4, 4)
    g = gram(f)
    assert g.shape == (2, 3, 3) and torch.allclose(g, torch.full((2, 3, 3), 1 / 3))


@pytest.mark.parametrize("chunk_floats", [1, 50, 2**18])  # 1 sample, 2 samples, all at once
def test_gram_l1_loss_matches_the_plain_formula_in_value_and_gradient(monkeypatch, chunk_floats):
    monkeypatch.setattr(losses, "GRAM_CHUNK_FLOATS", chunk_floats)
    gen = torch.randn(5, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    real = torch.randn(5, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    expected = F.l1_loss(gram(gen).double(), gram(real).double())
    expected_grad = torch.autograd.grad(expected, gen)[0]
    value = gram_l1_loss(gen, real)
    grad_gen, grad_real = torch.autograd.grad(value, (gen, real), allow_unused=True)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(grad_gen.double(), expected_grad, rtol=1e-5, atol=1e-9)
    assert grad_real is None  # the real image is only a target
    assert gram_l1_loss(real, real).item() == 0


def test_gram_l1_loss_stays_fp32_under_bf16_autocast():
    gen = torch.randn(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = gram_l1_loss(gen, torch.randn(2, 8, 4, 4))
    assert value.dtype == torch.float32
    value.backward()
    assert gen.grad.dtype == torch.float32


def test_style_loss_matches_its_formula_and_runs_only_needed_layers():
    features = nn.Sequential(*[nn.Conv2d(3, 3, 1) if i % 2 == 0 else nn.ReLU() for i in range(24)])
    loss = StyleLoss((0.5, 0.0, 0.0, 0.0), features)
    assert len(loss.features) == 4  # up to relu1_2 (index 3) only
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    expected = 0.5**2 * 5000 * (gram(features[:4](x)) - gram(features[:4](y))).abs().mean()
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss(x, x).item() == 0


def test_style_loss_gradient_flows_to_the_generated_image_only():
    loss = StyleLoss((0.0, 0.1, 0.0, 0.0), vgg16_features("vgg16_random"))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    loss(x, torch.randn(2, 3, 32, 32)).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_small_map_convolution_equals_conv2d_in_value_and_input_gradient():
    conv = nn.Conv2d(5, 7, 3, padding=1).double()
    x = torch.randn(3, 5, 4, 3, dtype=torch.float64, requires_grad=True)  # a non-square map
    grad_out = torch.randn(3, 7, 4, 3, dtype=torch.float64)
    expected = conv(x)
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out)
    y = losses._SmallMapConv3x3.apply(x, *losses.small_map_matrices(conv.weight.detach()), conv.bias.detach())
    (grad,) = torch.autograd.grad(y, x, grad_out)
    assert torch.allclose(y, expected, atol=1e-12) and torch.allclose(grad, expected_grad, atol=1e-12)


def relu4_style_loss(small_map_matmul: bool) -> StyleLoss:
    loss = StyleLoss((0.0, 0.05, 0.0, 0.05), vgg16_features("vgg16_random"))  # double-colored's layers
    loss.small_map_matmul = small_map_matmul
    return loss


def style_value_and_gradient(loss: StyleLoss, x: torch.Tensor, real: torch.Tensor):
    x = x.detach().requires_grad_(True)
    value = loss(x, real)
    value.backward()
    return value, x.grad


def test_style_loss_on_small_maps_matches_the_convolutions_in_fp32(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, real = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    expected, expected_grad = style_value_and_gradient(relu4_style_loss(False), x, real)
    calls = []
    patches3x3 = losses.patches3x3
    monkeypatch.setattr(losses, "patches3x3", lambda t: calls.append(t.shape) or patches3x3(t))
    fast = relu4_style_loss(True)
    value, grad = style_value_and_gradient(fast, x, real)
    # relu4's three convolutions on 4×4 maps, for the real and the generated images, and the
    # generated images' input gradients
    assert len(calls) == 9 and all(shape[-2:] == (4, 4) for shape in calls)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # An L1 gradient: a Gram difference within rounding of 0 may take either sign (up to 1e-3 of
    # the norm over 40 seeds; typically 1e-7).
    assert (grad - expected_grad).norm() < 1e-2 * expected_grad.norm()


def test_style_loss_on_small_maps_is_as_close_to_fp32_as_the_convolutions_in_bf16():
    g = torch.Generator().manual_seed(0)
    x, real = torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 3, 32, 32, generator=g)
    _, exact = style_value_and_gradient(relu4_style_loss(False), x, real)
    errors = []
    for small_map_matmul in (False, True):
        loss = relu4_style_loss(small_map_matmul)
        loss.features.to(torch.bfloat16)  # as a bf16 run stores it
        x_gen = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(x_gen, real)
        value.backward()  # outside autocast, as in training
        errors.append(((x_gen.grad - exact).norm() / exact.norm()).item())
    convolutions, small_map = errors
    assert convolutions < 0.2 and small_map <= 1.05 * convolutions


def test_small_map_matrices_follow_a_changed_weight():
    g = torch.Generator().manual_seed(0)
    x, real = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    fast, plain = relu4_style_loss(True), relu4_style_loss(False)
    fast(x, real)  # makes the matrices
    for loss in (fast, plain):
        with torch.no_grad():
            loss.features[19].weight.mul_(-2)  # in place: a new version of the same tensor
    assert fast(x, real).item() == pytest.approx(plain(x, real).item(), rel=1e-5)
    fast.features.double()  # a new tensor
    assert fast(x.double(), real.double()).item() == pytest.approx(plain(x, real).item(), rel=1e-5)


def test_random_vgg_is_deterministic():
    a, b = vgg16_features("vgg16_random"), vgg16_features("vgg16_random")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_missing_imagenet_vgg_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="VGG-16 ImageNet weights not found.*vgg16_random or none"):
        vgg16_features("vgg16", tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a torchvision VGG-16 state dict"):
        vgg16_features("vgg16", garbage)


def test_imagenet_vgg_loads_from_a_local_file(tmp_path):
    from torchvision.models import vgg16

    path = tmp_path / "vgg16.pth"
    torch.save(vgg16(weights=None).state_dict(), path)
    assert len(vgg16_features("vgg16", path)) == 31


def test_generator_loss_parts():
    config = LossConfig(style_network="none", mask_weight=0.3, mask_size_weight=2.0, mask_border_weight=0.5)
    total, parts = GeneratorLoss(config)(torch.zeros(4), torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, 3, 8, 8), None)
    assert set(parts) == {"adv", "mask", "mask_size", "mask_border"}
    assert parts["mask"].item() == pytest.approx(0.3)
    assert total.item() == pytest.approx(1 + 0.3 + 0.0 + 0.25)
