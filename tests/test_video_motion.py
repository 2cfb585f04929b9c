"""Video under camera motion: synthetic clips with exact depth, optical-flow correspondences, the
motion-compensated flicker and drift, and the stabiliser against ground truth on the embedded model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2", reason="motion-compensated video needs OpenCV: pip install 'apdepth[video]'")

from apdepth.postprocessing.video.flow import FlowMatcher, Matches  # noqa: E402
from apdepth.postprocessing.video.ground_truth import one_fit_absrel, random_drifts  # noqa: E402
from apdepth.postprocessing.video.stabilize import DepthStabilizer, flicker, static_mask, to_gray  # noqa: E402
from apdepth.synth.clip import MOTIONS, read_clip_depth, render_clip, write_clip  # noqa: E402

SIZE = (96, 128)


@pytest.fixture(scope="module")
def clips():
    return {m: render_clip(m, 10, SIZE, seed=0) for m in MOTIONS}


def reproject(clip, k0, k1, rows, cols):
    """Pixels (rows, cols) of frame k0 moved to frame k1 with the cameras: (col, row, depth) in k1."""
    cam0, cam1 = clip.cameras[k0], clip.cameras[k1]
    z = clip.depth[k0][rows, cols].astype(np.float64)
    dirs = cam0.ray_directions()[:, rows, cols].astype(np.float64)  # camera z = 1: point = pos + z * dir
    points = cam0.position[:, None] + z * dirs
    u, v, depth = cam1.project(points)
    return u - 0.5, v - 0.5, depth  # pixel centres at integers


@pytest.mark.parametrize("motion", ["pan", "forward"])
def test_clip_depth_is_consistent_with_the_camera_path(clips, motion):
    # Independent check of "exact depth per frame": a point seen in frame 0, moved into frame 3 by the
    # cameras, must land on a pixel whose rendered depth is its projected depth.
    clip = clips[motion]
    rows, cols = np.mgrid[8:SIZE[0] - 8:3, 8:SIZE[1] - 8:3]
    u, v, z = reproject(clip, 0, 3, rows.ravel(), cols.ravel())
    inside = (u > 2) & (u < SIZE[1] - 3) & (v > 2) & (v < SIZE[0] - 3)
    ui, vi = np.round(u[inside]).astype(int), np.round(v[inside]).astype(int)
    rendered = clip.depth[3][vi, ui]
    rel = np.abs(rendered - z[inside]) / z[inside]
    assert inside.mean() > 0.5
    assert np.median(rel) < 0.01  # up to the rounding to a pixel centre; occlusion edges aside
    if motion == "forward":  # the camera moved 3 steps along its axis: every static point is 0.24 m closer
        np.testing.assert_allclose(clip.depth[0][rows.ravel(), cols.ravel()][inside] - z[inside], 0.24, atol=1e-4)
        assert np.allclose(clip.cameras[3].position - clip.cameras[0].position, 0.24 * clip.cameras[0].forward)
    else:  # a pan turns about the vertical axis, the camera stays put
        assert np.allclose(clip.cameras[3].position, clip.cameras[0].position)
        yaw = np.degrees(np.arccos(np.clip(clip.cameras[3].forward[[0, 2]] @ clip.cameras[0].forward[[0, 2]]
                                           / np.linalg.norm(clip.cameras[3].forward[[0, 2]])
                                           / np.linalg.norm(clip.cameras[0].forward[[0, 2]]), -1, 1)))
        assert yaw == pytest.approx(4.5, abs=1e-6)


def test_clip_static_and_object(clips):
    static, obj = clips["static"], clips["object"]
    assert np.array_equal(static.depth[0], static.depth[9]) and not np.array_equal(static.rgb[0], static.rgb[9])
    # the sphere crosses the view: the pixels that changed depth move from left to right
    changed = [np.nonzero((np.abs(obj.depth[k] - obj.depth[0]) > 0.05).any(0))[0] for k in (3, 9)]
    assert changed[0].size and changed[1].mean() > changed[0].mean()
    assert np.allclose(np.diff([c[0] for c in obj.object_centers]), np.diff([c[0] for c in obj.object_centers])[0])
    with pytest.raises(ValueError, match="motion must be one of"):
        render_clip("zoom", 4, SIZE)


def test_write_clip_layout(clips, tmp_path):
    meta = write_clip(clips["pan"], tmp_path / "pan")
    assert sorted(p.name for p in (tmp_path / "pan" / "rgb").iterdir()) == [f"frame_{k:04d}.png" for k in range(10)]
    depth = read_clip_depth(tmp_path / "pan")
    np.testing.assert_array_equal(depth, clips["pan"].depth)
    png = np.asarray(Image.open(tmp_path / "pan" / "depth" / "frame_0004.png"))
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.round(clips["pan"].depth[4].astype(np.float64) * 1000).astype(np.uint16))
    rgb = np.asarray(Image.open(tmp_path / "pan" / "rgb" / "frame_0004.png"))
    np.testing.assert_array_equal(rgb, clips["pan"].rgb[4])
    saved = json.loads((tmp_path / "pan" / "cameras.json").read_text())
    assert saved == json.loads(json.dumps(meta)) and saved["motion"] == "pan" and saved["num_frames"] == 10
    np.testing.assert_allclose(saved["frames"][5]["rotation"], clips["pan"].cameras[5].rotation, atol=1e-7)


def test_synth_clip_command(tmp_path, capsys):
    from apdepth.apps.cli import main

    assert main(["synth", "clip", "-o", str(tmp_path), "-n", "3", "--size", "32x48", "--motion", "forward,object"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forward", "object"]
    assert read_clip_depth(tmp_path / "forward").shape == (3, 32, 48)
    again = tmp_path / "again"
    assert main(["synth", "clip", "-o", str(again), "-n", "3", "--size", "32x48", "--motion", "forward"]) == 0
    np.testing.assert_array_equal(read_clip_depth(again / "forward"), read_clip_depth(tmp_path / "forward"))
    with pytest.raises(SystemExit, match="unknown"):
        main(["synth", "clip", "-o", str(tmp_path), "--motion", "spin"])


def textured(H=64, W=96, seed=0):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 1, (H, W)).astype(np.float32), (0, 0), 2.0)
    return (noise - noise.min()) / (noise.max() - noise.min())  # grey [H, W] in [0, 1]


def test_flow_matches_a_known_shift():
    big = textured(64, 120)
    prev, cur = big[:, 10:106], big[:, 14:110]  # the camera pans: content moves 4 px to the left
    matches = FlowMatcher("flow")(prev, cur)[0]
    H, W = cur.shape
    cols = np.arange(W)[None, :].repeat(H, 0)
    valid = matches.valid
    assert matches.kind == "flow" and valid.mean() > 0.8
    np.testing.assert_allclose(matches.map_x[valid], cols[valid] + 4, atol=0.3)
    np.testing.assert_allclose(matches.map_y[valid], np.mgrid[0:H, 0:W][0][valid], atol=0.3)
    assert not valid[:, -4:].any()  # these pixels were outside frame k - 1: out-of-frame rejection
    # warping frame k - 1 with the matches gives frame k
    assert np.abs(matches.warp(prev) - cur)[valid].mean() < 0.01


def test_flow_rejects_occlusions():
    bg = textured(96, 128, seed=1)
    square = 1.0 - textured(40, 40, seed=2)
    prev, cur = bg.copy(), bg.copy()
    prev[30:70, 30:70] = square
    cur[30:70, 38:78] = square  # a square moves 8 px to the right over a static background
    # the "medium" preset: the default "fast" one tracks camera motion as well (docs/features.md) but
    # blurs a small object's motion at its edges, which would test DIS rather than the checks
    matches = FlowMatcher("flow", preset="medium")(prev, cur)[0]
    assert matches.valid[5:20, 5:120].mean() > 0.95  # static background far from the square
    inner = matches.valid[34:66, 42:74]
    assert inner.mean() > 0.9  # the square's inside is matched, 8 px back
    error = np.abs(matches.map_x[34:66, 42:74] - (np.arange(42, 74) - 8)[None, :])[inner]
    assert np.quantile(error, 0.9) < 0.5  # a few pixels near the square's edge are off by up to 2 px
    # the strip the square uncovered (frame k sees background that frame k - 1 had behind the square)
    assert matches.valid[34:66, 31:38].mean() < 0.3


def test_probe_tells_static_pan_and_forward():
    big = textured(128, 192)
    frame = big[16:112, 32:160]  # [96, 128]
    zoomed = cv2.resize(big, None, fx=1.1, fy=1.1, interpolation=cv2.INTER_LINEAR)  # a step forward
    cy, cx = round(64 * 1.1), round(96 * 1.1)
    forward = zoomed[cy - 48:cy + 48, cx - 64:cx + 64]
    matcher = FlowMatcher("auto")
    assert matcher.probe(frame, frame + 0.001)[0] == "static"
    assert matcher.probe(frame, big[16:112, 35:163])[0] == "flow"
    assert matcher.probe(frame, forward)[0] == "forward"
    fit, measure = matcher(frame, forward)  # flow for both (the stabiliser corrects the fit's reference)
    assert not fit.identity and fit.kind == "forward" and measure.kind == "flow" and fit.map_x is measure.map_x
    fit, measure = FlowMatcher("auto", expansion=False)(frame, forward)  # the same-pixel heuristic
    assert fit.identity and fit.kind == "forward" and measure.kind == "flow"
    assert FlowMatcher("static")(frame, forward)[0].identity
    with pytest.raises(ValueError, match="motion must be one of"):
        FlowMatcher("optical")


def test_compose_chains_matches():
    big = textured(64, 140)
    frames = [big[:, 4 * k:4 * k + 96] for k in range(4)]
    matcher = FlowMatcher("flow")
    to_first = None
    for k in range(1, 4):
        m = matcher(frames[k - 1], frames[k])[0]
        to_first = m if to_first is None else m.compose(to_first)
    cols = np.arange(96)[None, :].repeat(64, 0)
    valid = to_first.valid
    assert valid[:, :80].mean() > 0.8 and not valid[:, -12:].any()
    np.testing.assert_allclose(to_first.map_x[valid], cols[valid] + 12, atol=0.5)
    ident = Matches(None, None, np.ones((2, 2), bool), np.ones((2, 2), bool), "static")
    assert ident.compose(ident).identity


def panning_sequence(n=12, pan=4, H=48, W=64, seed=0):
    """The case the stabilizer is for: a camera panning ``pan`` px per frame over a textured scene whose depth
    varies across the pan; per-frame predictions are ``a_k * depth + b_k``."""
    rng = np.random.default_rng(seed)
    Wt = W + pan * n
    y, x = np.mgrid[0:H, 0:Wt]
    world = 1.5 + 2.5 * x / Wt + 0.5 * np.sin(y / 9.0)  # depth grows along the pan
    texture = textured(H, Wt, seed=seed)
    a, b = rng.uniform(0.7, 1.3, n), rng.uniform(-0.2, 0.2, n)
    a[0], b[0] = 1.0, 0.0
    frames, depths, preds = [], [], []
    for k in range(n):
        sl = slice(pan * k, pan * k + W)
        frames.append((np.repeat(texture[:, sl, None], 3, axis=2) * 255).astype(np.uint8))
        depths.append(world[:, sl])
        preds.append((a[k] * world[:, sl] + b[k]).astype(np.float32))
    return frames, depths, preds, a, b


def test_flow_stabilizer_recovers_the_distortions_under_a_pan():
    frames, depths, preds, a, b = panning_sequence()
    flow = DepthStabilizer(motion="flow")
    aligned = [flow(p, f) for p, f in zip(preds, frames)]
    # aligned_k = s_k (a_k D + b_k) + t_k = D  =>  s_k = 1 / a_k, t_k = -b_k / a_k
    np.testing.assert_allclose([f.scale for f in flow.frames], 1 / a, rtol=0.02)
    np.testing.assert_allclose([f.shift for f in flow.frames], -b / a, atol=0.05)
    assert all(f.motion == "flow" for f in flow.frames[1:])
    assert one_fit_absrel(np.stack(aligned), np.stack(depths)) < 0.01
    # the same-pixel path compares different scene points across the pan and goes wrong
    static = DepthStabilizer(motion="static")
    static_aligned = [static(p, f) for p, f in zip(preds, frames)]
    assert one_fit_absrel(np.stack(static_aligned), np.stack(depths)) > 3 * one_fit_absrel(np.stack(aligned),
                                                                                          np.stack(depths))
    # the motion-compensated metrics see the pan: the aligned sequence is consistent, the raw is not
    assert flow.flicker()["stabilized"] < 0.1 * flow.flicker()["raw"]
    assert flow.drift()["stabilized"] < 0.1 * flow.drift()["raw"]


def test_drift_against_the_first_frame_hand_computed():
    # static camera, depth_k = depth_0 + c_k: drift_k = |c_k| on every pixel, flicker |c_k - c_(k-1)|
    rgb = (np.repeat(textured(32, 48)[..., None], 3, axis=2) * 255).astype(np.uint8)
    base = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
    offsets = [0.0, 0.1, -0.2, 0.05]
    stab = DepthStabilizer(motion="static", enabled=False)
    for c in offsets:
        stab(base + np.float32(c), rgb)
    lo = min(float(np.quantile(base + c, 0.01)) for c in offsets)
    hi = max(float(np.quantile(base + c, 0.99)) for c in offsets)
    assert stab.drift()["raw"] == pytest.approx((0.1 + 0.2 + 0.05) / 3 / (hi - lo), rel=1e-5)
    assert stab.flicker()["raw"] == pytest.approx((0.1 + 0.3 + 0.25) / 3 / (hi - lo), rel=1e-5)
    masks = [static_mask(to_gray(rgb), to_gray(rgb))] * 3
    assert stab.flicker()["raw"] == pytest.approx(flicker([base + np.float32(c) for c in offsets], masks), rel=1e-5)


def test_random_drifts_are_reproducible():
    s1, t1 = random_drifts(6, 0.1, seed=3)
    s2, t2 = random_drifts(6, 0.1, seed=3)
    assert np.array_equal(s1, s2) and np.array_equal(t1, t2) and s1[0] == 1.0 and t1[0] == 0.0
    assert np.std(np.log(s1[1:])) > 0.02


@pytest.mark.parametrize("motion", MOTIONS)
def test_stabilized_depth_beats_per_frame_depth_on_ground_truth(embedded_pipe, clips, motion):
    """The claim backed by ground truth, per motion type (96x128, 10 frames, the embedded model)."""
    from apdepth.postprocessing.video.ground_truth import evaluate_clip

    clip = clips[motion]
    # 1. the model's own per-frame outputs, already consistent: the stabiliser must not make them worse
    own = evaluate_clip(embedded_pipe, clip, motion="auto", batch_size=10)
    assert own["absrel_stabilized"] <= own["absrel_raw"] * 1.005
    if own["absrel_stabilized"] < own["absrel_raw"] * 0.995:  # a clear ground-truth gain: the metric sees it
        assert own["flicker_stabilized"] < own["flicker_raw"]
    # 2. the same outputs with known per-frame affine drifts: the stabiliser must undo most of them
    drifted = evaluate_clip(embedded_pipe, clip, motion="auto", drift=0.1, seed=0, batch_size=10)
    assert drifted["absrel_stabilized"] < drifted["absrel_raw"]
    assert drifted["absrel_raw"] - drifted["absrel_stabilized"] > 0.5 * (drifted["absrel_raw"] - own["absrel_raw"])
    # the motion-compensated metrics agree in sign with the ground truth
    assert drifted["flicker_stabilized"] < drifted["flicker_raw"]
    if motion == "object":
        # the moving object's pixels are compared with the background it uncovers, and that dominates the
        # drift against the first frame: the added drift barely moves it (0.0742 -> 0.0741 with the model of
        # 2026-12-03, whose stabilised output scores 0.0746); there it must only not get worse by over 1%
        assert drifted["drift_stabilized"] < 1.01 * drifted["drift_raw"]
    else:
        assert drifted["drift_stabilized"] < drifted["drift_raw"]
