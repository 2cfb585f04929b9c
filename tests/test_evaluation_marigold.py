"""The default protocol against an independent re-implementation of Marigold's evaluation (eval.py with
``--alignment least_square``, its data set loaders' valid masks and crops, float32 metrics), per data
set, on fixtures in each set's on-disk format; and DIODE's ``paper`` mask against the authors' code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.data import get_dataset
from apdepth.evaluation import Protocol, evaluate_sample
from apdepth.testing.fixtures import write_fixture

# Marigold's loaders: (min_depth, max_depth) and the evaluation crop, written out from its code.
RANGES = {"nyu": (1e-3, 10.0), "kitti": (1e-5, 80.0), "eth3d": (1e-5, math.inf), "scannet": (1e-3, 10.0),
          "diode": (0.6, 350.0)}
ALIGN_MAX_RES = {"eth3d": 1024}  # its 32_eval_eth3d.sh passes --alignment_max_res 1024; the others none


def decode_ground_truth(name: str, fx, entry: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(depth float32 [H, W], Marigold's valid mask) read straight from the files, as its loaders do."""
    root = fx.root
    if name in ("nyu", "scannet", "kitti"):
        raw = np.asarray(Image.open(root / entry[1])).astype(np.float64)
        depth = (raw / (256.0 if name == "kitti" else 1000.0)).astype(np.float32)
    elif name == "eth3d":
        rgb = np.asarray(Image.open(root / entry[0]))
        depth = np.fromfile(root / entry[1], dtype=np.float32).reshape(rgb.shape[:2]).copy()
        depth[depth == np.inf] = 0.0
    else:  # diode: the provided mask is the valid mask, nothing else
        depth = np.load(root / entry[1]).squeeze().astype(np.float32)
        return depth, np.load(root / entry[2]).squeeze().astype(bool)
    if name == "kitti":  # benchmark crop: top = int(H - 352), left = int((W - 1216) / 2)
        top, left = int(depth.shape[0] - 352), int((depth.shape[1] - 1216) / 2)
        depth = depth[top : top + 352, left : left + 1216]
    lo, hi = RANGES[name]
    t = torch.from_numpy(depth)
    valid = ((t > lo) & (t < hi)).numpy()  # float32 comparison, as on Marigold's tensors
    h, w = depth.shape
    crop = np.zeros((h, w), dtype=bool)
    if name == "nyu":
        crop[45:471, 41:601] = True
    elif name == "kitti":  # eigen
        crop[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    else:
        crop[:] = True
    return depth, valid & crop


def marigold_columns(height: int, width: int, max_res: int) -> np.ndarray:
    f = min(max_res / height, max_res / width)
    out = int(np.floor(width * f))
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * np.float32(1.0 / f)).astype(np.int64), width - 1)


def marigold_eval(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, lo: float, hi: float,
                  max_res: int | None) -> dict[str, float]:
    """least_square alignment (numpy lstsq on float32, on the column subsample when asked), clipping to the
    range and to 1e-6, then its float32 metrics: sums over the frame with invalid pixels zeroed, / n."""
    p_fit, g_fit, m_fit = pred, gt, valid
    if max_res is not None and min(max_res / gt.shape[0], max_res / gt.shape[1]) < 1:
        cols = marigold_columns(*gt.shape, max_res)
        p_fit, g_fit, m_fit = pred[:, cols], gt[:, cols], valid[:, cols]
    a = np.stack([p_fit[m_fit], np.ones(int(m_fit.sum()), dtype=np.float32)], axis=-1)
    scale, shift = np.linalg.lstsq(a, g_fit[m_fit].reshape(-1, 1), rcond=None)[0]
    aligned = np.clip(np.clip(pred * scale + shift, lo, hi), 1e-6, None).astype(np.float32)
    p, g, m = torch.from_numpy(aligned), torch.from_numpy(gt), torch.from_numpy(valid)
    n = m.sum()
    zero = torch.zeros_like(p)

    def total(x):
        return torch.where(m, x, zero).sum()

    e = torch.log(p) - torch.log(g)
    ratio = torch.maximum(p / g, g / p)
    return {
        "abs_rel": float(total((p - g).abs() / g) / n),
        "sq_rel": float(total((p - g) ** 2 / g) / n),
        "rmse": float(torch.sqrt(total((p - g) ** 2) / n)),
        "rmse_log": float(torch.sqrt(total(e**2) / n)),
        "log10": float((torch.log10(p[m]) - torch.log10(g[m])).abs().mean()),
        **{f"delta{k}": float(total((ratio < 1.25**k).float()) / n) for k in (1, 2, 3)},
        "i_rmse": float(torch.sqrt(total((1 / p - 1 / g) ** 2) / n)),
        "silog": float(torch.sqrt(total(e**2) / n - total(e) ** 2 / n**2) * 100),
    }


def fake_prediction(depth: np.ndarray, seed: int) -> np.ndarray:
    """An affine-invariant prediction with non-affine error and garbage where the ground truth is 0."""
    rng = np.random.default_rng(seed)
    h, w = depth.shape
    smooth = np.where(depth > 0, depth, np.float32(depth[depth > 0].mean()))
    pred = 0.05 * smooth ** 1.1 + 0.2 + rng.normal(0, 0.01, (h, w)) + 0.02 * np.sin(np.arange(w) / 7.0)
    pred[depth <= 0] = rng.random(int((depth <= 0).sum()))
    return pred.astype(np.float32)


SIZES = {"eth3d": (40, 2100), "nyu": None, "kitti": None, "scannet": None, "diode": None}


@pytest.mark.parametrize("name", list(SIZES))
def test_default_protocol_is_marigolds(name, tmp_path):
    fx = write_fixture(name, tmp_path / name, num_samples=2, seed=4, size=SIZES[name])
    options = {"mask": "marigold"} if name == "diode" else {}
    ds = get_dataset(name, fx.root, fx.split, **options)
    protocol = Protocol.for_dataset(ds, edge_metrics=False)
    if name == "eth3d":
        assert protocol.alignment_max_resolution == 1024 and protocol.alignment_subsample == "width"
    for i, sample in enumerate(ds):
        depth, valid = decode_ground_truth(name, fx, ds.entries[i])
        np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), valid)  # the same pixels
        pred = fake_prediction(depth, seed=i)
        expected = marigold_eval(pred, depth, valid, *RANGES[name], ALIGN_MAX_RES.get(name))
        got = evaluate_sample(torch.from_numpy(pred), sample, protocol)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_eth3d_both_axes_option_is_a_different_fit(tmp_path):
    fx = write_fixture("eth3d", tmp_path / "eth3d", num_samples=1, seed=4, size=(40, 2100))
    ds = get_dataset("eth3d", fx.root, fx.split)
    sample = ds[0]
    depth, valid = decode_ground_truth("eth3d", fx, ds.entries[0])
    pred = torch.from_numpy(fake_prediction(depth, seed=0))
    width = evaluate_sample(pred, sample, Protocol.for_dataset(ds, edge_metrics=False))
    both = evaluate_sample(pred, sample, Protocol.for_dataset(ds, edge_metrics=False, alignment_subsample="both"))
    full = evaluate_sample(pred, sample, Protocol.for_dataset(ds, edge_metrics=False, alignment_max_resolution=0))
    assert len({width["scale"], both["scale"], full["scale"]}) == 3
    ref_both = marigold_eval(pred.numpy(), depth, valid, *RANGES["eth3d"], None)  # no subsample at all
    assert full["abs_rel"] == pytest.approx(ref_both["abs_rel"], rel=2e-5)


def test_diode_paper_mask_is_the_authors(tmp_path):
    """The default DIODE mask: provided AND |ndimage.sobel(d,0)| + |ndimage.sobel(d,1)| <= 0.3 AND
    0.6 <= d <= 350 AND finite (the authors' diode loader), scored with Marigold's eval otherwise."""
    ndimage = pytest.importorskip("scipy.ndimage")
    fx = write_fixture("diode", tmp_path / "diode", num_samples=2, seed=4)
    ds = get_dataset("diode", fx.root, fx.split)
    protocol = Protocol.for_dataset(ds, edge_metrics=False)
    for i, sample in enumerate(ds):
        depth, provided = decode_ground_truth("diode", fx, ds.entries[i])
        with np.errstate(invalid="ignore"):
            grad = np.abs(ndimage.sobel(depth, 0)) + np.abs(ndimage.sobel(depth, 1))
            valid = provided & (grad <= 0.3) & (depth >= 0.6) & (depth <= 350) & np.isfinite(depth)
        np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), valid)
        pred = fake_prediction(depth, seed=i)
        expected = marigold_eval(pred, depth, valid, 0.6, 350.0, None)
        got = evaluate_sample(torch.from_numpy(pred), sample, protocol)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
