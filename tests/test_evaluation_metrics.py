"""Alignment and depth metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apdepth.evaluation import align_least_squares, clip_depth, depth_metrics, fit_scale_shift
from apdepth.evaluation.alignment import fit_size, subsample_for_fit

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
    every = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"prediction is <= 0 on 4 of the 4 valid pixels; clip it first"):
        depth_metrics(ones * 0, ones, every)
    nan_one = ones.clone()
    nan_one[0, 1] = math.nan
    with pytest.raises(ValueError, match=r"prediction is NaN or infinite on 1 of the 4 valid pixels"):
        depth_metrics(nan_one, ones, every)
    with pytest.raises(ValueError, match=r"ground truth is not a positive finite depth on 1 of the 4"):
        depth_metrics(ones, nan_one, every)


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


def marigold_columns(height: int, width: int, max_resolution: int) -> np.ndarray:
    """Columns Marigold's 1-D nearest resize keeps, computed independently: the factor
    f = min(max / H, max / W) in float64, output width floor(W * f), source index floor(j * float32(1 / f))."""
    f = min(max_resolution / height, max_resolution / width)
    if f >= 1:
        return np.arange(width)
    out = int(np.floor(width * f))
    step = np.float32(1.0 / f)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * step).astype(np.int64), width - 1)


@pytest.mark.parametrize("height,width", [(4032, 6048), (1008, 1512), (3000, 1000), (700, 1300), (480, 640)])
def test_fit_size_width_is_marigolds(height, width):
    cols = marigold_columns(height, width, 1024)
    assert fit_size(height, width, 1024) == (height, len(cols))  # every row is kept
    assert fit_size(height, width, None) == (height, width)


def test_fit_size_both_axes_is_the_option():
    assert fit_size(4032, 6048, 1024, "both") == (682, 1024)
    assert fit_size(480, 640, 1024, "both") == (480, 640)
    assert fit_size(4032, 6048, 1024) == (4032, 1024)  # the default: Marigold's, width only
    with pytest.raises(ValueError, match="subsample must be one of"):
        fit_size(4032, 6048, 1024, "rows")


def test_width_subsample_picks_marigolds_columns():
    # ETH3D's geometry: 1024 / 6048 -> 1 / f = 5.90625 exactly, so column j is floor(5.90625 j)
    cols = marigold_columns(4032, 6048, 1024)
    assert len(cols) == 1024 and cols[:4].tolist() == [0, 5, 11, 17] and cols[-1] == 6042  # 1023 * 5.90625 = 6042.09
    for height, width in [(40, 6048), (33, 1512), (30, 1300), (3000, 1000)]:
        x = torch.arange(height * width, dtype=torch.float32).reshape(height, width)
        (sub,) = subsample_for_fit((x,), 1024)
        np.testing.assert_array_equal(sub.numpy(), x.numpy()[:, marigold_columns(height, width, 1024)])
        # and what torch's 1-D Upsample does to a [1, H, W] array, as Marigold calls it
        f = float(np.min(1024 / np.array([height, width])))
        if f < 1:
            ref = torch.nn.Upsample(scale_factor=f, mode="nearest")(x.unsqueeze(0))[0]
            assert torch.equal(sub, ref)


def test_alignment_on_the_width_subsample_equals_a_fit_on_those_columns():
    gen = torch.Generator().manual_seed(3)
    height, width = 30, 1300  # f = min(1024/30, 1024/1300) < 1: only the width is resampled
    pred = torch.rand(height, width, generator=gen)
    gt = 2.0 * pred + 0.3 + 0.05 * torch.rand(height, width, generator=gen)  # noisy: the fitted pixels matter
    valid = torch.rand(height, width, generator=gen) > 0.2
    cols = torch.from_numpy(marigold_columns(height, width, 1024))
    m = valid[:, cols]
    ref_scale, ref_shift = np.polyfit(pred[:, cols][m].double().numpy(), gt[:, cols][m].double().numpy(), 1)
    aligned, scale, shift = align_least_squares(pred, gt, valid, max_resolution=1024)
    assert scale == pytest.approx(ref_scale, rel=1e-9) and shift == pytest.approx(ref_shift, rel=1e-9)
    full_scale, _ = np.polyfit(pred[valid].double().numpy(), gt[valid].double().numpy(), 1)
    assert scale != pytest.approx(full_scale, rel=1e-9)  # the subsample is a real subsample
    assert aligned.shape == pred.shape  # applied at full resolution
    _, scale_both, _ = align_least_squares(pred, gt, valid, max_resolution=1024, subsample="both")
    rows_both, cols_both = fit_size(height, width, 1024, "both")
    assert (rows_both, cols_both) == (23, 1024) and scale_both != pytest.approx(scale, rel=1e-9)


def test_alignment_on_a_subsample():
    pred = torch.linspace(0, 1, 60 * 2000).reshape(60, 2000)
    gt = 5.0 * pred + 1.0
    valid = torch.ones_like(pred, dtype=torch.bool)
    valid[:, :1000] = False  # the fit sees only the right half
    for subsample in ("width", "both"):
        aligned, scale, shift = align_least_squares(pred, gt, valid, max_resolution=1024, subsample=subsample)
        assert scale == pytest.approx(5.0, rel=1e-5) and shift == pytest.approx(1.0, abs=1e-5)
        assert aligned.shape == pred.shape  # applied at full resolution


def test_clip_depth():
    d = torch.tensor([-1.0, 0.0, 5.0, 100.0])
    assert clip_depth(d, 1e-3, 10.0).tolist() == pytest.approx([1e-3, 1e-3, 5.0, 10.0])
    assert clip_depth(d, 0.0, float("inf")).tolist() == pytest.approx([1e-6, 1e-6, 5.0, 100.0])
