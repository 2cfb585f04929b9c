"""Video: the flicker metric, the stabiliser on synthetic sequences with known per-frame affine
distortions, frame I/O, and `apdepth video` end to end with the tiny model."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

from apdepth.postprocessing.video.stabilize import DepthStabilizer, flicker, static_mask, to_gray

av = pytest.importorskip("av", reason="video tests need PyAV: pip install 'apdepth[video]'")


def synthetic_sequence(n=16, pan=1, H=48, W=64, noise=0.003, seed=0):
    """A camera panning ``pan`` px per frame over a smooth scene, a box moving 4 px per frame in front.
    Returns RGB frames, true depths, 'predictions' = a_k * depth + b_k + noise, and (a, b)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W + pan * n]
    world = 2.0 + np.sin(x / 15.0) + 1.5 * y / H
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(-0.3, 0.3, n)
    frames, depths, preds = [], [], []
    for k in range(n):
        depth = world[:, pan * k:pan * k + W].copy()
        depth[10:25, 5 + 4 * k:15 + 4 * k] = 1.2  # the moving box
        frames.append((matplotlib.colormaps["viridis"]((depth - 1) / 4.0)[..., :3] * 255).astype(np.uint8))
        depths.append(depth)
        preds.append((a[k] * depth + b[k] + rng.normal(0, noise, depth.shape)).astype(np.float32))
    return frames, depths, preds, a, b


def test_flicker_hand_computed():
    depths = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[0.5, 1.0], [2.0, 9.0]]), np.array([[0.5, 2.0], [2.0, 9.0]])]
    masks = [np.array([[True, True], [True, False]]), np.array([[True, True], [False, False]])]
    # pair 1: |0.5|, 0, 0 on 3 pixels -> 1/6; pair 2: 0, 1 on 2 pixels -> 1/2; mean 1/3; range 10 - 0
    assert flicker(depths, masks, value_range=(0.0, 10.0)) == pytest.approx(1 / 30)
    masks[1][:] = False  # a pair without static pixels is left out
    assert flicker(depths, masks, value_range=(0.0, 10.0)) == pytest.approx(1 / 60)
    with pytest.raises(ValueError) as e:
        flicker(depths, masks[:1])
    assert "one mask per consecutive frame pair (2)" in str(e.value)


def test_static_mask_sees_motion():
    frames, *_ = synthetic_sequence(n=3, pan=0)
    mask = static_mask(to_gray(frames[0]), to_gray(frames[1]))
    assert not mask[12:23, 6:18].all()  # the box moved
    assert mask[30:, :].all()  # the scene below it did not


def test_stabilizer_static_camera_recovers_the_affine_distortions():
    frames, depths, preds, a, b = synthetic_sequence(pan=0)
    stab = DepthStabilizer()
    aligned = [stab(p, f) for p, f in zip(preds, frames)]
    scales = np.array([fa.scale for fa in stab.frames])
    shifts = np.array([fa.shift for fa in stab.frames])
    # aligned_k = s_k (a_k D + b_k) + t_k must equal a_0 D + b_0: s_k = a_0 / a_k, t_k = b_0 - s_k b_k
    np.testing.assert_allclose(scales, a[0] / a, rtol=0.01)
    np.testing.assert_allclose(shifts, b[0] - scales * b, atol=0.01)
    for k in (5, 15):
        np.testing.assert_allclose(aligned[k], a[0] * depths[k] + b[0], atol=0.03)
    result = stab.flicker()
    assert result["stabilized"] < 0.05 * result["raw"]
    assert stab.frames[0].scale == 1.0 and stab.frames[0].shift == 0.0


def test_stabilizer_moving_camera_reduces_flicker():
    frames, depths, preds, a, b = synthetic_sequence(pan=1)
    stab = DepthStabilizer(motion="static")  # same-pixel correspondences: flicker() is flicker() on the masks
    aligned = [stab(p, f) for p, f in zip(preds, frames)]
    masks = [static_mask(to_gray(frames[k - 1]), to_gray(frames[k])) for k in range(1, len(frames))]
    raw, stabilized, truth = flicker(preds, masks), flicker(aligned, masks), flicker(depths, masks)
    assert stab.flicker() == pytest.approx({"raw": raw, "stabilized": stabilized})
    assert stabilized < 0.15 * raw
    assert stabilized < 1.5 * truth  # close to the true scene change, nowhere near the raw flicker
    # every frame stays within 25% of one global scale (the raw per-frame scales vary up to 3x)
    relative_scale = np.array([fa.scale for fa in stab.frames]) * a / a[0]
    assert np.all(np.abs(relative_scale - 1) < 0.25)
    for motion in ("static", "flow", "auto"):
        running = DepthStabilizer(reference="running", motion=motion)
        [running(p, f) for p, f in zip(preds, frames)]
        assert running.flicker()["stabilized"] < 0.15 * running.flicker()["raw"]


def test_stabilizer_does_not_drift_with_noisy_predictions():
    # Least squares shrinks the scale a little at every noisy frame (regression dilution) and chained
    # fits compound it; the symmetric fit must not: 40 frames with 5% noise stay within 5%.
    frames, depths, preds, a, b = synthetic_sequence(n=40, pan=0, noise=0.05, seed=1)
    stab = DepthStabilizer()
    [stab(p, f) for p, f in zip(preds, frames)]
    relative_scale = np.array([fa.scale for fa in stab.frames]) * a / a[0]
    assert np.all(np.abs(relative_scale - 1) < 0.05)


def test_stabilizer_leaves_consistent_frames_alone():
    # frames that agree up to noise keep the previous (identity) fit: no random walk of small refits;
    # one real jump (frame 6 doubled and shifted) is refitted, and the frames after it keep that fit
    frames, depths, _, _, _ = synthetic_sequence(n=10, pan=0)
    rng = np.random.default_rng(3)
    preds = [(d + rng.normal(0, 0.01, d.shape)).astype(np.float32) for d in depths]
    gated = DepthStabilizer(min_gain=0.05)
    out = [gated(p, f) for p, f in zip(preds, frames)]
    assert not any(fa.refitted for fa in gated.frames)
    assert all(np.array_equal(o, p) for o, p in zip(out, preds))
    every = DepthStabilizer(min_gain=0.0)
    [every(p, f) for p, f in zip(preds, frames)]
    assert all(fa.refitted for fa in every.frames[1:])
    assert any(fa.scale != 1.0 for fa in every.frames[1:])  # noise alone moves ungated fits

    jumped = [p if k < 6 else 2.0 * p + 0.5 for k, p in enumerate(preds)]
    gated = DepthStabilizer(min_gain=0.05)
    out = [gated(p, f) for p, f in zip(jumped, frames)]
    assert [fa.refitted for fa in gated.frames] == [False] * 6 + [True] + [False] * 3
    for k in range(6, 10):
        assert (gated.frames[k].scale, gated.frames[k].shift) == (gated.frames[6].scale, gated.frames[6].shift)
        np.testing.assert_allclose(out[k], preds[k], atol=0.01)
    with pytest.raises(ValueError) as e:
        DepthStabilizer(min_gain=1.0)
    assert "min_gain" in str(e.value)


def test_stabilizer_options_and_errors():
    frames, _, preds, _, _ = synthetic_sequence(n=4, pan=0)
    off = DepthStabilizer(enabled=False)
    out = [off(p, f) for p, f in zip(preds, frames)]
    assert all(np.array_equal(o, p) for o, p in zip(out, preds))
    assert off.flicker()["raw"] == off.flicker()["stabilized"]
    with pytest.raises(ValueError) as e:
        DepthStabilizer(reference="future")
    assert "'future'" in str(e.value) and "previous" in str(e.value)
    with pytest.raises(ValueError) as e:
        off(preds[0][:10], frames[0][:10])
    assert "differs from the first frame" in str(e.value)


def write_video(path, n=8, H=48, W=64, pan=2, fps=12):
    from apdepth.postprocessing.video.frames import VideoWriter

    y, x = np.mgrid[0:H, 0:W + pan * n]
    world = np.sin(x / 7.0) * np.cos(y / 5.0) * 0.4 + 0.5
    with VideoWriter(path, fps) as writer:
        for k in range(n):
            writer.write((matplotlib.colormaps["viridis"](world[:, pan * k:pan * k + W])[..., :3] * 255).astype(np.uint8))


def decode(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_video_io_round_trip(tmp_path):
    from apdepth.postprocessing.video.frames import FrameReader, VideoWriter

    write_video(tmp_path / "in.mp4", n=6, H=31, W=45)  # odd size: padded to even by the writer
    reader = FrameReader(tmp_path / "in.mp4", stride=2)
    frames = list(reader)
    assert [name for name, _ in frames] == ["000000", "000002", "000004"]
    assert frames[0][1].shape == (32, 46, 3) and reader.fps == pytest.approx(6.0)
    with pytest.raises(ValueError) as e, VideoWriter(tmp_path / "empty.mp4", 10):
        pass
    assert "no frames" in str(e.value)
    assert not (tmp_path / "empty.mp4").exists() and not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError) as e:
        FrameReader(tmp_path)  # a folder without images
    assert "no images" in str(e.value)


def test_video_cli_end_to_end(tiny_pipeline_dir, tmp_path, capsys):
    from apdepth.apps.cli import main

    write_video(tmp_path / "in.mp4", n=8)
    out = tmp_path / "out"
    rc = main(["video", str(tmp_path / "in.mp4"), "-o", str(out), "--model", tiny_pipeline_dir, "--device", "cpu",
               "--formats", "video,sbs,png16,npy", "--batch-size", "3"])
    err = capsys.readouterr().err
    assert rc == 0 and "8 frames" in err and "flicker" in err
    report = json.loads((out / "video.json").read_text())
    assert report["num_frames"] == 8 and report["size"] == [48, 64] and report["fps"] == 12.0
    assert np.isfinite(report["flicker_raw"]) and np.isfinite(report["flicker_stabilized"])
    assert report["frames"][0]["scale"] == 1.0 and len(report["frames"]) == 8
    pngs = sorted((out / "frames").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{k:06d}" for k in range(8)]
    depth = np.load(out / "depth.npy")
    assert depth.shape == (8, 48, 64) and depth.dtype == np.float32 and 0 <= depth.min() and depth.max() <= 1
    png = np.asarray(Image.open(pngs[3]))
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.round(depth[3] * 65535).astype(np.uint16))
    assert len(decode(out / "depth.mp4")) == 8 and decode(out / "depth.mp4")[0].shape == (48, 64, 3)
    assert decode(out / "side_by_side.mp4")[0].shape == (48, 128, 3)
    assert not list(out.glob(".*"))  # no temporary files left


def test_video_cli_frame_folder(tiny_pipeline_dir, tmp_path, capsys):
    from apdepth.apps.cli import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(5):
        Image.fromarray(np.full((20, 28, 3), 40 * k, np.uint8)).save(folder / f"shot_{k}.png")
    out = tmp_path / "out"
    rc = main(["video", str(folder), "-o", str(out), "--model", tiny_pipeline_dir, "--device", "cpu",
               "--formats", "png16", "--stride", "2", "--no-stabilize"])
    assert rc == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["shot_0.png", "shot_2.png", "shot_4.png"]
    report = json.loads((out / "video.json").read_text())
    assert report["stabilized"] is False and report["fps"] == 12.0  # 24 fps default / stride 2
    assert all(f["scale"] == 1.0 and f["shift"] == 0.0 for f in report["frames"])

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "shot_9.png")
    rc = main(["video", str(folder), "-o", str(tmp_path / "out2"), "--model", tiny_pipeline_dir, "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "shot_9" in err and "all frames must share one size" in err
    assert main(["video", str(tmp_path / "nope.mp4"), "-o", str(out), "--model", tiny_pipeline_dir]) == 1
    assert "nope.mp4: no such video file" in capsys.readouterr().err


def test_stabilizer_survives_a_constant_frame():
    frames, _, preds, _, _ = synthetic_sequence(n=5, pan=0)
    preds[2] = np.full_like(preds[2], 0.5)  # a black / faded frame: nothing to fit
    stab = DepthStabilizer()
    aligned = [stab(p, f) for p, f in zip(preds, frames)]
    assert stab.frames[2].scale == stab.frames[1].scale  # the previous fit is kept
    assert all(np.isfinite(a).all() for a in aligned) and stab.frames[4].scale > 0


def test_video_cli_motion_and_ground_truth(tiny_pipeline_dir, tmp_path, capsys):
    pytest.importorskip("cv2", reason="motion-compensated video needs OpenCV: pip install 'apdepth[video]'")
    from apdepth.apps.cli import main
    from apdepth.synth.clip import render_clip, write_clip

    write_clip(render_clip("pan", 6, (32, 48), seed=0), tmp_path / "pan")
    common = ["--model", tiny_pipeline_dir, "--device", "cpu", "--formats", "npy", "--gt", str(tmp_path / "pan")]
    rc = main(["video", str(tmp_path / "pan" / "rgb"), "-o", str(tmp_path / "flow"), "--motion", "flow", *common])
    err = capsys.readouterr().err
    assert rc == 0 and "AbsRel vs ground truth" in err and "drift from frame 0" in err
    report = json.loads((tmp_path / "flow" / "video.json").read_text())
    assert report["motion"] == "flow" and [f["motion"] for f in report["frames"]] == ["static"] + ["flow"] * 5
    gt = report["ground_truth"]
    assert set(gt) >= {"absrel_raw", "absrel_stabilized", "absrel_per_frame_fit", "improvement"}
    assert gt["improvement"] == pytest.approx((gt["absrel_raw"] - gt["absrel_stabilized"]) / gt["absrel_raw"])
    assert np.isfinite(report["drift_raw"]) and np.isfinite(report["drift_stabilized"])
    # under flow matches the fit expects the depth ratios from the flow's expansion, unless --no-expansion
    assert all(f["depth_ratio"] != 1.0 for f in report["frames"][1:]) and report["frames"][0]["depth_ratio"] == 1.0
    rc = main(["video", str(tmp_path / "pan" / "rgb"), "-o", str(tmp_path / "noexp"), "--motion", "flow",
               "--no-expansion", *common])
    assert rc == 0 and all(f["depth_ratio"] == 1.0
                           for f in json.loads((tmp_path / "noexp" / "video.json").read_text())["frames"])
    # without stabilisation the two sequences are the same one
    rc = main(["video", str(tmp_path / "pan" / "rgb"), "-o", str(tmp_path / "off"), "--no-stabilize", *common])
    off = json.loads((tmp_path / "off" / "video.json").read_text())
    assert rc == 0 and off["ground_truth"]["absrel_raw"] == off["ground_truth"]["absrel_stabilized"]
    # every 2nd frame is scored against every 2nd ground-truth frame; a wrong frame count is an error
    rc = main(["video", str(tmp_path / "pan" / "rgb"), "-o", str(tmp_path / "s2"), "--stride", "2", *common])
    assert rc == 0 and json.loads((tmp_path / "s2" / "video.json").read_text())["num_frames"] == 3
    np.save(tmp_path / "short.npy", np.ones((6, 16, 16), np.float32))
    rc = main(["video", str(tmp_path / "pan" / "rgb"), "-o", str(tmp_path / "bad"), "--model", tiny_pipeline_dir,
               "--device", "cpu", "--gt", str(tmp_path / "short.npy")])
    assert rc == 1 and "the kept frames need (6, 32, 48)" in capsys.readouterr().err
