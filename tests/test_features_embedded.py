"""Every user-facing feature on the embedded demo model, as a new user runs it: no --model, no network.

(The feature tests elsewhere pin exact behaviour on a tiny random model; these check the same paths
work on the trained model that ships. The web demo runs it in tests/test_demo.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apdepth import hub
from apdepth.apps.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


@pytest.fixture(autouse=True)
def no_released_checkpoint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "released_checkpoint_cached", lambda repo_id=hub.DEFAULT_MODEL: False)


def test_predict_all_formats_metric_ply_and_tta(embedded_pipe, tmp_path):
    image = tmp_path / "cat.jpg"
    Image.open(EXAMPLES / "cat.jpg").convert("RGB").resize((160, 120)).save(image)
    depth = embedded_pipe(Image.open(image)).depth[0]  # the Python API: [H, W] in [0, 1]
    assert depth.shape == (120, 160) and 0 <= depth.min() < depth.max() <= 1
    # sparse metric depths consistent with metric = 3 * depth + 1
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 160, 30), rng.integers(0, 120, 30)
    np.savetxt(tmp_path / "cat_sparse.csv", np.stack([u, v, 3.0 * depth[v, u] + 1.0], axis=1), delimiter=",",
               header="u,v,depth", comments="")
    out = tmp_path / "out"
    assert main(["predict", str(image), "-o", str(out), "--formats", "npy,png16,color,ply", "--fov", "60",
                 "--sparse-depth", str(tmp_path / "cat_sparse.csv")]) == 0
    # the command line runs channels_last on CPUs (apdepth.devices): the same depth up to float rounding
    np.testing.assert_allclose(np.load(out / "cat_depth.npy"), depth, atol=3e-4)
    fit = json.loads((out / "cat_depth_metric.json").read_text())
    assert fit["scale"] == pytest.approx(3.0, rel=1e-3) and fit["shift"] == pytest.approx(1.0, abs=1e-3)
    assert (out / "cat_depth.png").is_file() and (out / "cat_depth_color.png").is_file()
    assert (out / "cat_points.ply").read_bytes().startswith(b"ply\n")
    out2 = tmp_path / "tta"
    assert main(["predict", str(image), "-o", str(out2), "--formats", "npy", "--tta"]) == 0
    std = np.load(out2 / "cat_depth_std.npy")
    assert std.shape == (120, 160) and std.max() > 0


def test_video_is_stabilized(tmp_path, caplog):
    pytest.importorskip("av", reason="video needs PyAV: pip install 'apdepth[video]'")
    from apdepth.postprocessing.video.frames import VideoWriter

    photo = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB").resize((200, 120)))
    with VideoWriter(tmp_path / "pan.mp4", 10) as writer:  # a camera panning across a photo
        for k in range(8):
            writer.write(np.ascontiguousarray(photo[:, 4 * k:4 * k + 160]))
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert main(["video", str(tmp_path / "pan.mp4"), "-o", str(out), "--formats", "video,png16"]) == 0
    report = json.loads((out / "video.json").read_text())
    assert report["num_frames"] == 8
    assert report["flicker_stabilized"] <= report["flicker_raw"]
    assert "embedded demo model" in caplog.text

