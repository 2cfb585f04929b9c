"""The training losses against hand-computed values (paper Eq. 10-18)."""

from __future__ import annotations

import math

import pytest
import torch

from apdepth.losses import (
    cosine_alignment_loss,
    frequency_loss,
    latent_valid_mask,
    magnitude_spectrum,
    masked_l1,
    masked_mse,
    radial_highpass_weight,
)


def test_cosine_loss_hand_values():
    # two positions, C=2: features (1,0) and (0,2); targets (3,0) and (1,0): cosines 1 and 0.
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[3.0, 0.0], [1.0, 0.0]]).T.reshape(1, 2, 1, 2)
    assert cosine_alignment_loss(features, target).item() == pytest.approx(1 - (1 + 0) / 2)
    assert cosine_alignment_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    assert cosine_alignment_loss(-target, target).item() == pytest.approx(2.0)
    # scale invariance per position (magnitudes do not matter, Eq. 10)
    scaled = features * torch.tensor([5.0, 0.1]).view(1, 1, 1, 2)
    assert cosine_alignment_loss(scaled, target).item() == pytest.approx(0.5)


def test_cosine_loss_gradient_and_shape_check():
    f = torch.randn(2, 8, 3, 4, requires_grad=True)
    cosine_alignment_loss(f, torch.randn(2, 8, 3, 4)).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(2, 8, 3, 4\).*\(2, 8, 3, 5\)"):
        cosine_alignment_loss(f, torch.randn(2, 8, 3, 5))


def test_latent_mask_needs_the_whole_8x8_block():
    valid = torch.ones(1, 1, 16, 24, dtype=torch.bool)
    valid[0, 0, 3, 10] = False  # block (0, 1)
    valid[0, 0, 15, 23] = False  # block (1, 2)
    expected = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(latent_valid_mask(valid)[0, 0], expected)
    assert latent_valid_mask(torch.zeros(2, 1, 8, 8, dtype=torch.bool)).sum() == 0
    with pytest.raises(ValueError, match="12x16 is not a multiple of 8"):
        latent_valid_mask(torch.ones(1, 1, 12, 16, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        latent_valid_mask(torch.ones(1, 1, 8, 8))


def test_masked_mse_and_l1_hand_values():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.0, 0.0], [1.0, 100.0]]).view(1, 1, 2, 2)
    mask = torch.tensor([[True, True], [True, False]]).view(1, 1, 2, 2)
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 4 + 4) / 3)
    assert masked_l1(pred, target, mask).item() == pytest.approx((1 + 2 + 2) / 3)
    # a [B, 1, ...] mask covers every channel of a [B, 4, ...] latent
    pred4, target4 = pred.expand(1, 4, 2, 2), target.expand(1, 4, 2, 2)
    assert masked_mse(pred4, target4, mask).item() == pytest.approx(3.0)


def test_masked_losses_without_valid_elements_are_zero_with_a_graph():
    pred = torch.randn(1, 1, 2, 2, requires_grad=True)
    loss = masked_l1(pred, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_radial_weight_hand_values():
    w = radial_highpass_weight(4, 4, strength=1.0, eps=0.0)  # centre (2, 2), sqrt(2^2 + 2^2) = sqrt(8)
    assert w[2, 2].item() == pytest.approx(1.0)
    assert w[0, 0].item() == pytest.approx(2.0)
    assert w[2, 3].item() == pytest.approx(1 + 1 / math.sqrt(8))
    assert w[1, 3].item() == pytest.approx(1 + math.sqrt(2) / math.sqrt(8))
    odd = radial_highpass_weight(3, 5, strength=0.6, eps=0.0)  # centre (1, 2), norm sqrt(5)
    assert odd[1, 2].item() == pytest.approx(1.0)
    assert odd[0, 0].item() == pytest.approx(1 + 0.6 * math.sqrt(5) / math.sqrt(5))


def test_frequency_loss_on_known_spectra():
    # a constant c: all energy at the zero frequency (16 c), which fftshift puts at the centre (W = 1)
    c = 0.5
    const = torch.full((1, 1, 4, 4), c)
    zeros = torch.zeros(1, 1, 4, 4)
    spectrum = magnitude_spectrum(const)[0, 0]
    assert spectrum[2, 2].item() == pytest.approx(16 * c)
    assert spectrum.sum().item() == pytest.approx(16 * c)
    assert frequency_loss(const, zeros, strength=0.6, p=1).item() == pytest.approx(16 * c / 16)
    assert frequency_loss(const, zeros, strength=0.6, p=2).item() == pytest.approx((16 * c) ** 2 / 16)
    # cos(2 pi u / 4) along rows: magnitude 8 at (u, v) = (1, 0) and (3, 0), shifted to (3, 2) and (1, 2),
    # both at radius 1 from the centre: W = 1 + lambda / sqrt(8)
    u = torch.arange(4.0).view(4, 1).expand(4, 4)
    wave = torch.cos(2 * math.pi * u / 4).view(1, 1, 4, 4)
    spec = magnitude_spectrum(wave)[0, 0]
    assert spec[3, 2].item() == pytest.approx(8.0, abs=1e-5) and spec[1, 2].item() == pytest.approx(8.0, abs=1e-5)
    for lam in (0.6, 2.0):
        expected = (8 + 8) * (1 + lam / math.sqrt(8)) / 16
        assert frequency_loss(wave, zeros, strength=lam, p=1).item() == pytest.approx(expected, rel=1e-5)


def test_frequency_loss_mask_zeroes_invalid_and_drops_empty_samples():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, :2] = False
    mask[1] = False  # no valid pixel: left out
    base = frequency_loss(pred, target, mask)
    changed = pred.clone()
    changed[0, 0, :2] = 100.0  # masked-out pixels do not matter
    changed[1] = -7.0  # nor does the sample without valid pixels
    assert frequency_loss(changed, target, mask).item() == pytest.approx(base.item())
    only_first = frequency_loss(pred[:1], target[:1], mask[:1])
    assert base.item() == pytest.approx(only_first.item())
    assert frequency_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        frequency_loss(pred, target, p=3)


def test_frequency_loss_is_zero_for_equal_maps_and_differentiable():
    x = torch.randn(2, 4, 6, 8, requires_grad=True)
    assert frequency_loss(x, x.detach()).item() == pytest.approx(0.0, abs=1e-6)
    loss = frequency_loss(x, torch.zeros(2, 4, 6, 8))
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
