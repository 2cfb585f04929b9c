"""`apdepth predict` with metric alignment (--sparse-depth), point clouds (--formats ply) and --tta."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import random_image
from PIL import Image
from test_pointcloud import read_ply

from apdepth.apps.cli import main


def run_predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


@pytest.fixture()
def images(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    random_image(24, 32, seed=1).save(root / "a.png")
    img = random_image(30, 20, seed=2)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28  # 35 mm equivalent focal length
    img.save(root / "sub" / "b.jpg", exif=exif.tobytes(), quality=95)
    return root


def test_metric_ply_and_tta_outputs(tiny_pipeline_dir, pipe, images, tmp_path, capsys):
    out = tmp_path / "out"
    depth_a = pipe(Image.open(images / "a.png")).depth[0]  # what predict will write for a.png
    # sparse depths for a.png consistent with metric = 5 * depth + 2, one wild outlier; b has none
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 32, 40), rng.integers(0, 24, 40)
    # +-0.2% multiplicative noise (bounded, so no genuine point is an outlier): with exact values the data-driven inlier threshold
    # collapses to its 1e-6 floor and float noise between two runs (thread count, memory layout) decides
    noise = 1.0 + rng.uniform(-0.002, 0.002, 40)
    rows = np.stack([u, v, (5.0 * depth_a[v, u] + 2.0) * noise], axis=1)
    rows[0, 2] = 100.0
    np.savetxt(sparse / "a_sparse.csv", rows, delimiter=",", header="u,v,depth", comments="")

    rc = run_predict(images, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy,ply",
                     "--sparse-depth", sparse, "--edge-threshold", "0")
    err = capsys.readouterr().err
    assert rc == 1  # b.jpg has no sparse depth: reported, its other outputs still written
    assert "1 done, 0 skipped, 1 failed" in err and "b.jpg" in err and "no sparse depth file" in err
    fit = json.loads((out / "a_depth_metric.json").read_text())
    assert fit["scale"] == pytest.approx(5.0, rel=2e-2) and fit["shift"] == pytest.approx(2.0, abs=5e-2)
    assert fit["num_points"] == 40 and fit["num_inliers"] == 39 and fit["space"] == "depth"
    metric = np.load(out / "a_depth_metric.npy")
    np.testing.assert_allclose(metric, fit["scale"] * np.load(out / "a_depth.npy") + fit["shift"], rtol=1e-5)
    assert (out / "sub" / "b_depth.npy").is_file() and not (out / "sub" / "b_depth_metric.npy").exists()

    # the PLY of a uses the metric depth; with the default 60 degree fov: f = 16 / tan(30 deg)
    header, data = read_ply(out / "a_points.ply")
    assert any("metric depth" in line for line in header) and "element vertex 768" in header
    np.testing.assert_allclose(data["z"], metric.ravel(), rtol=1e-6)
    focal = 16 / math.tan(math.radians(30))
    np.testing.assert_allclose(data["x"], ((np.arange(768) % 32) - 15.5) * metric.ravel() / focal, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(data["red"], np.asarray(Image.open(images / "a.png"))[..., 0].ravel())
    # b: affine-invariant depth (+0.25) and the EXIF focal length
    header, data = read_ply(out / "sub" / "b_points.ply")
    assert any("affine-invariant depth (not metric)" in line for line in header)
    assert any("EXIF" in line for line in header)
    np.testing.assert_allclose(data["z"], np.load(out / "sub" / "b_depth.npy").ravel() + 0.25, rtol=1e-6)

    # --tta: mean depth plus a spread map; --align-space disparity uses the prior
    out2 = tmp_path / "out2"
    rc = run_predict(images / "a.png", "-o", out2, "--model", tiny_pipeline_dir, "--formats", "npy", "--tta",
                     "--tta-res", "16", "--sparse-depth", sparse / "a_sparse.csv", "--align-space", "disparity")
    assert rc == 0
    std = np.load(out2 / "a_depth_std.npy")
    assert std.shape == (24, 32) and std.dtype == np.float32 and std.min() >= 0 and std.max() > 0
    assert json.loads((out2 / "a_depth_metric.json").read_text())["space"] == "disparity"
    assert not np.allclose(np.load(out2 / "a_depth.npy"), depth_a, atol=1e-4)  # the TTA mean differs


def test_extras_argument_errors(tiny_pipeline_dir, images, tmp_path, capsys, monkeypatch):
    """Usage errors (exit 2), all found before the model loads."""
    from apdepth.apps.commands import common

    monkeypatch.setattr(common, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    base = [images, "-o", tmp_path / "o", "--model", tiny_pipeline_dir]
    (tmp_path / "one.csv").write_text("1,1,1\n2,2,2\n")
    for flags, message in (
        (["--sparse-depth", tmp_path / "missing.csv"], "missing.csv: no such file"),
        (["--sparse-depth", tmp_path / "one.csv"], "one file but there are 2 inputs"),
        (["--focal", "100", "--fov", "60"], "give one of them"),
        (["--tta", "--no-match-input-res"], "--tta needs outputs at the input size"),
    ):
        assert run_predict(*base, *flags) == 2
        assert message in capsys.readouterr().err.splitlines()[-1]
