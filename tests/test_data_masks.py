"""Crop indices and the DIODE Sobel edge mask against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from apdepth.data import (
    kitti_benchmark_box,
    kitti_benchmark_crop,
    kitti_eval_mask,
    nyu_eigen_mask,
    sobel_edge_mask,
    sobel_magnitude,
)


def rows_cols(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return rows[0], rows[-1], cols[0], cols[-1]


def test_kitti_benchmark_box():
    assert kitti_benchmark_box(375, 1242) == (23, 13, 352, 1216)
    assert kitti_benchmark_box(370, 1224) == (18, 4, 352, 1216)
    assert kitti_benchmark_box(376, 1241) == (24, 12, 352, 1216)  # odd margin: floor
    x = np.arange(375 * 1242).reshape(375, 1242)
    crop = kitti_benchmark_crop(x)
    assert crop.shape == (352, 1216) and crop[0, 0] == x[23, 13] and crop[-1, -1] == x[374, 1228]
    with pytest.raises(ValueError, match="352x1216"):
        kitti_benchmark_box(300, 1242)


def test_kitti_eval_crops():
    # eigen on 352x1216: rows int(0.3324324*352)=117 .. int(0.91351351*352)=321 (exclusive),
    # cols int(0.0359477*1216)=43 .. int(0.96405229*1216)=1172 (exclusive)
    eigen = kitti_eval_mask(352, 1216, "eigen")
    assert rows_cols(eigen) == (117, 320, 43, 1171) and eigen.sum() == (321 - 117) * (1172 - 43)
    # garg: rows int(0.40810811*352)=143 .. int(0.99189189*352)=349
    assert rows_cols(kitti_eval_mask(352, 1216, "garg")) == (143, 348, 43, 1171)
    with pytest.raises(ValueError, match="crop must be one of"):
        kitti_eval_mask(352, 1216, "center")


def test_nyu_eigen_crop():
    mask = nyu_eigen_mask(480, 640)
    assert rows_cols(mask) == (45, 470, 41, 600) and mask.sum() == 426 * 560
    with pytest.raises(ValueError, match="471x601"):
        nyu_eigen_mask(48, 64)


def test_sobel_step_edge_is_masked():
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    depth[:, 4:] = 3.0  # a 1 m step between columns 3 and 4
    mag = sobel_magnitude(depth)
    # columns 3 and 4 see the step through [-1, 0, 1] weighted by [1, 2, 1] over rows: 4 * 1 m
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[:, 3:5] = 4.0
    np.testing.assert_allclose(mag, expected, atol=1e-6)
    keep = sobel_edge_mask(depth)
    assert not keep[:, 3:5].any() and keep[:, :3].all() and keep[:, 5:].all()


def test_sobel_gentle_ramp_is_kept():
    yy, xx = np.mgrid[0:6, 0:8].astype(np.float32)
    depth = 5.0 + 0.02 * xx + 0.01 * yy
    mag = sobel_magnitude(depth)
    # interior: |4 * 2 * 0.02| + |4 * 2 * 0.01| = 0.24; a mirrored border halves that axis' term
    np.testing.assert_allclose(mag[1:-1, 1:-1], 0.24, atol=1e-5)
    np.testing.assert_allclose(mag[0, 1:-1], 0.16 + 0.04, atol=1e-5)
    np.testing.assert_allclose(mag[1:-1, 0], 0.08 + 0.08, atol=1e-5)
    assert sobel_edge_mask(depth).all()
    assert not sobel_edge_mask(depth * 2).all()  # twice as steep: 0.48 > 0.3 inside


def test_sobel_non_finite_is_masked():
    depth = np.full((5, 5), 4.0, dtype=np.float32)
    depth[2, 2] = np.nan
    keep = sobel_edge_mask(depth)
    # the NaN reaches its 8 neighbours and, through its zero-weight tap (0 * NaN), itself, as in ndimage
    assert not keep[1:4, 1:4].any() and keep[0].all() and keep[4].all()


def test_sobel_is_bit_identical_to_the_authors_scipy_call():
    """The authors' DIODE mask: |ndimage.sobel(d, 0)| + |ndimage.sobel(d, 1)| <= 0.3 on float32 depth."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for scale in (0.05, 1.0, 40.0, 300.0):
        h, w = rng.integers(3, 50, 2)
        depth = (rng.random((h, w)) * scale + 0.6).astype(np.float32)
        depth[rng.random((h, w)) < 0.05] = 0.0
        depth[rng.random((h, w)) < 0.02] = np.inf
        depth[rng.random((h, w)) < 0.02] = np.nan
        with np.errstate(invalid="ignore"):
            ref = np.abs(ndimage.sobel(depth, 0)) + np.abs(ndimage.sobel(depth, 1))
            assert ref.dtype == sobel_magnitude(depth).dtype == np.float32
            np.testing.assert_array_equal(sobel_magnitude(depth), ref)  # NaN where ref is NaN
            np.testing.assert_array_equal(sobel_edge_mask(depth), ref <= 0.3)
    # values straddling the threshold by one float32 step: the comparison is in float32, as theirs
    depth = np.zeros((3, 3), dtype=np.float32)
    depth[:, 2] = np.float32(0.3) / 4  # |sobel| at the centre column = 4 * 0.075 in float32
    with np.errstate(invalid="ignore"):
        ref = np.abs(ndimage.sobel(depth, 0)) + np.abs(ndimage.sobel(depth, 1))
    np.testing.assert_array_equal(sobel_edge_mask(depth), ref <= 0.3)
