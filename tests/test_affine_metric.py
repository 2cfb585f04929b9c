"""Scale-and-shift fits (plain, symmetric, robust) and metric alignment from sparse depths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.evaluation.alignment import fit_scale_shift, least_squares_line
from apdepth.postprocessing.affine import fit_affine, fit_affine_symmetric, robust_fit_affine
from apdepth.postprocessing.metric_scale import (
    SparseDepth,
    align_to_metric,
    load_sparse_depth,
    sample_at_points,
)


def test_fit_affine_hand_computed():
    # y = 2x + 1 at x = 0, 1, 2 and a weighted outlier-free case
    assert fit_affine([0, 1, 2], [1, 3, 5]) == pytest.approx((2.0, 1.0))
    # least squares of (0,0), (1,1), (2,1): slope 0.5, intercept 1/6
    assert fit_affine([0, 1, 2], [0, 1, 1]) == pytest.approx((0.5, 1 / 6))
    # weights: the zero-weight point is ignored
    assert fit_affine([0, 1, 2], [1, 3, 100], weights=[1, 1, 0]) == pytest.approx((2.0, 1.0))
    # reduced major axis: std(y)/std(x) with the sign of the covariance; the inverse fit is the inverse
    s, t = fit_affine_symmetric([0, 1, 2], [0, 1, 1])
    assert s == pytest.approx(np.std([0, 1, 1]) / np.std([0, 1, 2]))
    s_inv, t_inv = fit_affine_symmetric([0, 1, 1], [0, 1, 2])
    assert s * s_inv == pytest.approx(1.0)
    assert t == pytest.approx(2 / 3 - s)


def test_evaluation_and_library_fits_share_one_least_squares():
    # x = 0..3, y = 1, 3, 5, 7.5: centred sums Sxy = 10.75, Sxx = 5 -> scale 2.15, shift 4.125 - 2.15 * 1.5 = 0.9
    x, y = [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.5]
    assert least_squares_line(np.array(x), np.array(y)) == pytest.approx((2.15, 0.9))
    assert least_squares_line(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)) \
        == least_squares_line(np.array(x), np.array(y))
    assert fit_scale_shift(torch.tensor(x), torch.tensor(y)) == pytest.approx((2.15, 0.9))
    assert fit_affine(x, y) == pytest.approx((2.15, 0.9))
    # no unique fit: the core says so, the evaluation takes scale 0 and the mean, the library raises
    assert least_squares_line(np.ones(3), np.arange(3.0)) is None
    assert fit_scale_shift(torch.ones(3), torch.arange(3.0)) == (0.0, 1.0)
    assert least_squares_line(np.array(x), np.array(y), np.ones(4), min_variance=5.0) is None  # Sxx = 5 is not > 5


def test_fit_affine_errors_name_the_problem():
    with pytest.raises(ValueError) as e:
        fit_affine([1.0], [2.0])
    assert "at least 2" in str(e.value) and "got 1" in str(e.value)
    with pytest.raises(ValueError) as e:
        fit_affine([3, 3, 3], [1, 2, 3])
    assert "x to vary" in str(e.value)
    with pytest.raises(ValueError) as e:
        robust_fit_affine([1, 2], [1, 2], loss="cauchy")
    assert "'cauchy'" in str(e.value) and "huber" in str(e.value)


@pytest.mark.parametrize("loss", ["tukey", "huber"])
def test_robust_fit_rejects_outliers(loss):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 500)
    y = 3.0 * x - 0.5 + rng.normal(0, 0.002, x.size)
    bad = rng.random(x.size) < 0.3
    y[bad] = rng.uniform(-5, 5, bad.sum())
    fit = robust_fit_affine(x, y, loss=loss)
    assert fit.scale == pytest.approx(3.0, abs=0.01) and fit.shift == pytest.approx(-0.5, abs=0.01)
    assert fit.num_points == 500
    # every clean point is an inlier; outliers far from the line are not
    far = bad & (np.abs(y - (3.0 * x - 0.5)) > 0.1)
    assert fit.inlier_mask[~bad].all() and not fit.inlier_mask[far].any()
    ls_scale, _ = fit_affine(x, y)
    assert abs(ls_scale - 3.0) > 0.3  # plain least squares is ruined by the outliers


def _scene(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    relative = 0.1 + 0.8 * (yy / shape[0]) * 0.5 + 0.4 * (np.sin(xx / 7.0) * 0.5 + 0.5)  # affine-invariant
    return rng, relative


@pytest.mark.parametrize("space", ["depth", "disparity"])
def test_metric_alignment_recovers_scale_shift_under_20_percent_outliers(space):
    rng, relative = _scene()
    scale, shift = (4.0, 1.5) if space == "depth" else (0.8, 0.1)
    fitted = scale * relative + shift
    depth_true = fitted if space == "depth" else 1.0 / fitted  # metres
    H, W = relative.shape
    n = 300
    u, v = rng.integers(0, W, n), rng.integers(0, H, n)
    known = depth_true[v, u] * (1 + rng.normal(0, 0.005, n))  # 0.5% sensor noise
    outlier = np.zeros(n, bool)
    outlier[rng.choice(n, size=n // 5, replace=False)] = True  # exactly 20%
    known[outlier] = rng.uniform(0.3, 30.0, outlier.sum())
    result = align_to_metric(relative, SparseDepth(u, v, known), space=space)
    assert result.scale == pytest.approx(scale, rel=0.02) and result.shift == pytest.approx(shift, rel=0.05)
    assert result.num_points == n and result.space == space
    really_off = outlier & (np.abs(known / depth_true[v, u] - 1) > 0.2)
    assert not result.inlier_mask[really_off].any()
    assert result.inlier_mask[~outlier].mean() > 0.97
    assert result.num_inliers == int(result.inlier_mask.sum())
    np.testing.assert_allclose(result.depth_metric, depth_true, rtol=0.03)
    assert result.depth_metric.dtype == np.float32 and result.depth_metric.shape == relative.shape


def test_sparse_map_at_another_resolution_and_files(tmp_path):
    _, relative = _scene(shape=(30, 40))
    depth_true = 2.0 * relative + 0.5
    # a LiDAR-style map at twice the resolution (zeros invalid), nearest-upsampled truth on a sparse grid
    big = np.zeros((60, 80), np.float32)
    big[::4, ::4] = np.repeat(np.repeat(depth_true, 2, 0), 2, 1)[::4, ::4]
    sparse = SparseDepth.from_map(big)
    assert sparse.size == (60, 80) and sparse.depth.size == 15 * 20
    values, index = sample_at_points(depth_true, sparse)
    np.testing.assert_allclose(values, sparse.depth[index], rtol=1e-6)
    result = align_to_metric(relative, big)
    assert (result.scale, result.shift) == pytest.approx((2.0, 0.5), rel=1e-4)

    # files: npy map, npy points, CSV with a header, 16-bit PNG with a scale
    np.save(tmp_path / "map.npy", big)
    assert load_sparse_depth(tmp_path / "map.npy").depth.size == 300
    pts = np.array([[1, 2, 3.5], [4, 5, 6.0], [0, 0, 1.0], [7, 1, 2.0]])
    np.save(tmp_path / "pts.npy", pts)
    loaded = load_sparse_depth(tmp_path / "pts.npy")
    np.testing.assert_array_equal(loaded.u, [1, 4, 0, 7])
    assert loaded.size is None
    (tmp_path / "pts.csv").write_text("u,v,depth\n1,2,3.5\n4 5 6\n")
    loaded = load_sparse_depth(tmp_path / "pts.csv")
    np.testing.assert_array_equal(loaded.v, [2, 5])
    np.testing.assert_array_equal(loaded.depth, [3.5, 6.0])
    png = np.zeros((10, 12), np.uint16)
    png[3, 4] = 2560  # KITTI: depth = value / 256 = 10 m
    Image.fromarray(png).save(tmp_path / "lidar.png")
    loaded = load_sparse_depth(tmp_path / "lidar.png", depth_scale=1 / 256)
    assert (loaded.u[0], loaded.v[0], loaded.depth[0]) == (4, 3, 10.0)
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5\n")
    with pytest.raises(ValueError) as e:
        load_sparse_depth(tmp_path / "bad.csv")
    assert "bad.csv:2" in str(e.value) and "3 values" in str(e.value)
    with pytest.raises(ValueError) as e:
        align_to_metric(relative, SparseDepth([1], [1], [2.0]))
    assert "at least 2 known depths" in str(e.value)
