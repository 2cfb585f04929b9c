"""Alignment and depth metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from apdepth.evaluation import align_least_squares, clip_depth, depth_metrics, fit_scale_shift
from apdepth.evaluation.alignment import fit_size

# Ground truth 1 m everywhere; predictions with ratios 1, 1.3, 1.8, 2.5 (+ a masked-out garbage pixel).
PRED = [1.0, 1.3, 1.8, 2.5, 1000.0]
GT = [1.0, 1.0, 1.0, 1.0, 0.5]
VALID = [True, True, True, True, False]


def as_image(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype).reshape(1, -1)  # [1, W]


def test_metrics_hand_computed():
    m = depth_metrics(as_image(PRED), as_image(GT), as_image(VALID, torch.bool))
    p = PRED[:4]
    assert m["abs_rel"] == pytest.approx((0 + 0.3 + 0.8 + 1.5) / 4)  # 0.65
    assert m["sq_rel"] == pytest.approx((0 + 0.09 + 0.64 + 2.25) / 4)  # 0.745
    assert m["rmse"] == pytest.approx(math.sqrt(0.745))
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(math.log(x) ** 2 for x in p) / 4))
    assert m["log10"] == pytest.approx(sum(math.log10(x) for x in p) / 4)
    assert m["delta1"] == pytest.approx(1 / 4)  # only 1.0 < 1.25
    assert m["delta2"] == pytest.approx(2 / 4)  # 1.3 < 1.5625
    assert m["delta3"] == pytest.approx(3 / 4)  # 1.8 < 1.953125; 2.5 is not
    assert m["i_rmse"] == pytest.approx(math.sqrt(sum((1 / x - 1) ** 2 for x in p) / 4))
    logs = [math.log(x) for x in p]
    mean = sum(logs) / 4
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(e * e for e in logs) / 4 - mean**2))


def test_delta_is_symmetric_and_strict():
    # g / p counts as much as p / g; exactly 1.25 (in either direction) is not < 1.25
    m = depth_metrics(as_image([1.0, 1.25, 0.5, 1.1]), as_image([1.2, 1.0, 0.625, 1.0]),
                      as_image([True] * 4, torch.bool))
    assert m["delta1"] == pytest.approx(2 / 4)


def test_perfect_prediction():
    gt = torch.rand(6, 7) * 9 + 0.5
    m = depth_metrics(gt.clone(), gt, torch.ones(6, 7, dtype=torch.bool))
    assert m["abs_rel"] == 0 and m["delta1"] == 1 and m["delta3"] == 1
    assert m["rmse"] == 0 and m["silog"] == 0 and m["i_rmse"] == 0


def test_metric_errors():
    ones = torch.ones(2, 2)
    with pytest.raises(ValueError, match="no valid ground-truth pixels"):
        depth_metrics(ones, ones, torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        depth_metrics(ones, ones, ones)
    with pytest.raises(ValueError, match="positive"):
        depth_metrics(ones * 0, ones, torch.ones(2, 2, dtype=torch.bool))


def test_alignment_recovers_scale_and_shift():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(30, 40, generator=gen)
    gt = 3.7 * pred + 0.42
    valid = torch.rand(30, 40, generator=gen) > 0.3
    pred_noisy = torch.where(valid, pred, torch.full_like(pred, 50.0))  # garbage where invalid
    aligned, scale, shift = align_least_squares(pred_noisy, gt, valid)
    assert scale == pytest.approx(3.7, abs=1e-6) and shift == pytest.approx(0.42, abs=1e-6)
    torch.testing.assert_close(aligned[valid], gt[valid], atol=1e-5, rtol=0)


def test_alignment_hand_computed_fit():
    # y = [1, 2, 2] on x = [0, 1, 2]: slope 0.5, intercept 7/6 (ordinary least squares)
    scale, shift = fit_scale_shift(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 2.0]))
    assert scale == pytest.approx(0.5) and shift == pytest.approx(7 / 6)
    assert fit_scale_shift(torch.full((4,), 2.0), torch.tensor([1.0, 2.0, 3.0, 6.0])) == (0.0, 3.0)  # constant x
    with pytest.raises(ValueError, match="at least 2 valid pixels"):
        fit_scale_shift(torch.ones(1), torch.ones(1))


def test_alignment_in_disparity_space():
    gen = torch.Generator().manual_seed(1)
    disparity = torch.rand(20, 30, generator=gen) + 0.1  # an affine-invariant disparity prediction
    gt = 1.0 / (2.0 * disparity + 0.5)
    aligned, scale, shift = align_least_squares(disparity, gt, torch.ones(20, 30, dtype=torch.bool),
                                                space="disparity")
    assert scale == pytest.approx(2.0, abs=1e-6) and shift == pytest.approx(0.5, abs=1e-6)
    torch.testing.assert_close(aligned, gt, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="space must be one of"):
        align_least_squares(disparity, gt, torch.ones(20, 30, dtype=torch.bool), space="log")


def test_alignment_on_a_subsample():
    assert fit_size(4032, 6048, 1024) == (682, 1024)  # ETH3D
    assert fit_size(480, 640, 1024) == (480, 640)
    pred = torch.linspace(0, 1, 60 * 2000).reshape(60, 2000)
    gt = 5.0 * pred + 1.0
    valid = torch.ones_like(pred, dtype=torch.bool)
    valid[:, :1000] = False  # the fit sees only the right half
    aligned, scale, shift = align_least_squares(pred, gt, valid, max_resolution=1024)
    assert scale == pytest.approx(5.0, rel=1e-5) and shift == pytest.approx(1.0, abs=1e-5)
    assert aligned.shape == pred.shape  # applied at full resolution


def test_clip_depth():
    d = torch.tensor([-1.0, 0.0, 5.0, 100.0])
    assert clip_depth(d, 1e-3, 10.0).tolist() == pytest.approx([1e-3, 1e-3, 5.0, 10.0])
    assert clip_depth(d, 0.0, float("inf")).tolist() == pytest.approx([1e-6, 1e-6, 5.0, 100.0])
