"""Boundary F1 and flying-pixel ratio on hand-built depth maps with hand-counted contours."""

from __future__ import annotations

import math

import pytest
import torch

from apdepth.evaluation import boundary_f1, flying_pixel_ratio, flying_pixels
from apdepth.evaluation.edges import F1_THRESHOLDS, boundary_f1_per_threshold

ALL = torch.ones(20, 20, dtype=torch.bool)


def columns(*blocks: tuple[int, float], height: int = 20) -> torch.Tensor:
    """``[H, W]`` made of vertical bands: ``(width, depth)`` left to right."""
    return torch.cat([torch.full((height, w), d) for w, d in blocks], dim=1)


def test_thresholds_span_005_to_025():
    assert len(F1_THRESHOLDS) == 10
    assert F1_THRESHOLDS[0] == pytest.approx(0.05) and F1_THRESHOLDS[-1] == pytest.approx(0.25)


def test_perfect_and_scale_invariant():
    gt = columns((10, 4.0), (10, 8.0))
    assert boundary_f1(gt, gt, ALL) == 1.0
    assert boundary_f1(gt * 3.0, gt, ALL) == 1.0  # ratios ignore the scale


def test_depth_pro_reduction_is_available():
    # Depth Pro averages per-map P and R with denominators >= 1: the three maps without a contour
    # score 0, so a perfect single edge gets 1/4.
    gt = columns((10, 4.0), (10, 8.0))
    assert boundary_f1(gt, gt, ALL, per_map_mean=True) == pytest.approx(0.25)


def test_half_the_contours():
    gt = columns((7, 4.0), (7, 8.0), (6, 16.0))  # 2 edges x 20 rows = 40 contour pairs
    pred = columns((7, 4.0), (13, 8.0))  # only the first edge: 20 pairs, all correct
    precision, recall, f1 = boundary_f1_per_threshold(pred, gt, ALL)
    assert torch.allclose(precision, torch.ones(10, dtype=torch.float64))
    assert torch.allclose(recall, torch.full((10,), 0.5, dtype=torch.float64))
    assert boundary_f1(pred, gt, ALL) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_misplaced_and_wrong_side_contours():
    gt = columns((10, 4.0), (10, 8.0))
    assert boundary_f1(columns((11, 4.0), (9, 8.0)), gt, ALL) == 0.0  # one pixel off
    assert boundary_f1(columns((10, 8.0), (10, 4.0)), gt, ALL) == 0.0  # the other side in front
    assert boundary_f1(torch.full((20, 20), 5.0), gt, ALL) == 0.0  # no contour predicted


def test_threshold_dependence():
    # a 10% step is a contour only for t < 0.1: thresholds 0.05, 0.072, 0.094
    gt = columns((10, 4.0), (10, 4.4))
    _, recall, f1 = boundary_f1_per_threshold(gt, gt, ALL)
    assert f1[:3].tolist() == [1.0, 1.0, 1.0] and all(math.isnan(x) for x in f1[3:].tolist())
    assert boundary_f1(gt, gt, ALL) == 1.0  # undefined thresholds are left out
    # a prediction with a 4% step misses it at every threshold
    assert boundary_f1(columns((10, 4.0), (10, 4.16)), gt, ALL) == 0.0


def test_only_valid_pairs_count():
    gt = columns((10, 4.0), (10, 8.0))
    pred = gt.clone()
    pred[:10, 10] = 4.0  # wrong in the top half of the edge...
    valid = ALL.clone()
    valid[:10, 10] = False  # ...where the ground truth is unknown
    assert boundary_f1(pred, gt, valid) == 1.0
    assert boundary_f1(pred, gt, ALL) < 1.0


def test_no_gt_contour_is_nan():
    flat = torch.full((20, 20), 3.0)
    assert math.isnan(boundary_f1(flat, flat, ALL))
    ramp = torch.linspace(1.0, 1.2, 20).repeat(20, 1)  # 1% steps between neighbours
    assert math.isnan(boundary_f1(ramp, ramp, ALL))


def test_flying_pixels_hand_counted():
    gt = columns((5, 4.0), (5, 8.0), height=10)  # edge between columns 4 and 5
    valid = torch.ones(10, 10, dtype=torch.bool)
    pred = gt.clone()
    pred[:, 4] = 6.0  # in the gap (4.4, 7.27) and 50% off its own GT: flying
    pred[:, 5] = 5.0  # in the gap and 37.5% off: flying
    pred[:, 3] = 4.2  # within 10% of the near side: not flying
    flying, band = flying_pixels(pred, gt, valid)
    assert band[:, 2:8].all() and not band[:, :2].any() and not band[:, 8:].any()  # 2 px around columns 4-5
    assert flying[:, 4:6].all() and flying.sum() == 20
    assert flying_pixel_ratio(pred, gt, valid) == pytest.approx(20 / 60)
    assert flying_pixel_ratio(gt, gt, valid) == 0.0


def test_flying_pixels_edge_cases():
    valid = torch.ones(10, 10, dtype=torch.bool)
    flat = torch.full((10, 10), 2.0)
    assert math.isnan(flying_pixel_ratio(flat, flat, valid))  # no discontinuity
    # a correct intermediate surface (three layers) is not flying
    layers = columns((3, 4.0), (4, 6.0), (3, 9.0), height=10)
    assert flying_pixel_ratio(layers, layers, valid) == 0.0
    # invalid ground truth neither makes a discontinuity nor counts
    gt = columns((5, 4.0), (5, 8.0), height=10)
    holes = valid.clone()
    holes[:, 5] = False
    assert flying_pixels(gt, gt, holes)[1].sum() == 0
