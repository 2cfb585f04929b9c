"""Stabilisation under a camera move along the optical axis: the depth ratios from the flow's radial
expansion (:func:`apdepth.postprocessing.video.flow.radial_expansion`), against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="motion-compensated video needs OpenCV: pip install 'apdepth[video]'")

from apdepth.postprocessing.video.flow import FlowMatcher, Matches, radial_expansion  # noqa: E402
from apdepth.postprocessing.video.ground_truth import one_fit_absrel  # noqa: E402
from apdepth.postprocessing.video.stabilize import DepthStabilizer  # noqa: E402

H, W, F = 96, 128, 110.0  # image size, focal length in pixels (principal point at the centre)


def exact_matches(r, foe):
    """Matches of a translation with focus of expansion ``foe``: q = e + r (p - e), r per pixel or scalar."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.broadcast_to(np.asarray(r, np.float32), (H, W))
    map_x, map_y = foe[0] + r * (cols - foe[0]), foe[1] + r * (rows - foe[1])
    ones = np.ones((H, W), bool)
    return Matches(map_x.astype(np.float32), map_y.astype(np.float32), ones, ones, "flow")


def test_radial_expansion_recovers_a_uniform_ratio_and_the_foe():
    # a fronto-parallel plane at 3 m, the camera 0.1 m closer: every point's depth ratio is 2.9 / 3
    expansion = radial_expansion(exact_matches(2.9 / 3.0, (80.0, 40.0)))
    assert expansion.foe == pytest.approx((80.0, 40.0), abs=1e-3)
    np.testing.assert_allclose(expansion.ratio[expansion.valid], 2.9 / 3.0, rtol=1e-5)
    rows, cols = np.mgrid[0:H, 0:W]
    radius = np.hypot(cols - 80.0, rows - 40.0) / np.hypot(H, W)
    assert not expansion.valid[radius < 0.099].any()  # too close to the FOE to trust
    assert expansion.valid[radius > 0.101].all()


def test_radial_expansion_is_exact_on_a_slanted_floor():
    # a floor 1.5 m below the camera (depth grows towards the horizon at row 20): each pixel has its own
    # ratio (Z - t) / Z; the local scale of the flow (its Jacobian) would overstate it by half
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = np.where(rows > 20, 1.5 * F / np.maximum(rows - 20, 1e-3), 50.0)  # [H, W], frame k
    t = 0.1
    ratio = depth / (depth + t)  # z_k / z_(k-1)
    expansion = radial_expansion(exact_matches(ratio, ((W - 1) / 2, 20.0)))
    assert expansion.valid.mean() > 0.8
    np.testing.assert_allclose(expansion.ratio[expansion.valid], ratio[expansion.valid], rtol=1e-4)


def test_radial_expansion_is_one_under_parallel_flow():
    # a pan or a sideways move: the flow is parallel, the FOE at infinity, no depth change
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    ones = np.ones((H, W), bool)
    expansion = radial_expansion(Matches(cols + 3.0, rows + 0.5, ones, ones, "flow"))
    assert expansion.foe is None
    np.testing.assert_allclose(expansion.ratio, 1.0, atol=1e-5)
    still = radial_expansion(Matches(cols, rows, ones, ones, "flow"))  # nothing moves
    assert still.foe is None and np.all(still.ratio == 1.0)


def test_radial_expansion_falls_back_to_one_on_a_roll():
    # a camera roll of 1 degree about the image centre: tangential flow, no line through a common point
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    c, s = np.cos(np.radians(1.0)), np.sin(np.radians(1.0))
    x, y = cols - (W - 1) / 2, rows - (H - 1) / 2
    ones = np.ones((H, W), bool)
    roll = Matches((W - 1) / 2 + c * x - s * y, (H - 1) / 2 + s * x + c * y, ones, ones, "flow")
    expansion = radial_expansion(roll)
    assert expansion.radial_fraction < 0.5 and expansion.foe is None
    assert np.all(expansion.ratio == 1.0) and expansion.valid.all()


def noise_texture(size=600, seed=0):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), 6.0)
    return (noise - noise.min()) / (noise.max() - noise.min())


def plane_clip(num_frames=6, step=0.1, travel=(0.15, -0.1, 1.0), normal=(0.35, -0.2, 1.0), dist=3.0):
    """A textured slanted plane ``n . X = dist`` (camera 0's axes), the camera translating by ``step`` m per
    frame along ``travel``: exact rgb frames ``[N, H, W, 3]`` and planar depth ``[N, H, W]``."""
    texture = noise_texture()
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(cols - (W - 1) / 2) / F, (rows - (H - 1) / 2) / F, np.ones_like(cols)], -1)  # z = 1
    n = np.asarray(normal) / np.linalg.norm(normal)
    direction = np.asarray(travel) / np.linalg.norm(travel)
    frames, depths = [], []
    for k in range(num_frames):
        position = k * step * direction
        z = (dist - n @ position) / (rays @ n)  # [H, W]
        point = position + z[..., None] * rays  # [H, W, 3] on the plane
        u = ((point[..., 0] + 3.0) / 6.0 * 599).astype(np.float32)  # the texture covers 6 x 6 m of the plane
        v = ((point[..., 1] + 3.0) / 6.0 * 599).astype(np.float32)
        gray = cv2.remap(texture, u, v, cv2.INTER_LINEAR)
        frames.append(np.repeat((gray * 255)[..., None], 3, axis=2).astype(np.uint8))
        depths.append(z.astype(np.float32))
    foe = ((W - 1) / 2 + F * direction[0] / direction[2], (H - 1) / 2 + F * direction[1] / direction[2])
    return np.stack(frames), np.stack(depths), foe


@pytest.mark.parametrize("preset, tolerance", [("fast", 0.006), ("medium", 0.002)])
def test_flow_expansion_on_a_rendered_plane(preset, tolerance):
    frames, depths, foe = plane_clip(num_frames=2)
    matches = FlowMatcher("flow", preset=preset).flow_matches(frames[0][..., 0] / 255.0, frames[1][..., 0] / 255.0)
    expansion = radial_expansion(matches)
    assert expansion.foe == pytest.approx(foe, abs=4.0)
    # the exact ratio z_1(p) / z_0(match(p)): the plane's depth at p in frame 1 over frame 0's at p's match
    truth = depths[1] / matches.warp(depths[0])
    ok = expansion.valid
    assert ok.mean() > 0.5 and np.median(truth[ok]) < 0.975
    # DIS's "fast" preset underestimates the flow here by a few percent (the ratio errs towards 1)
    assert np.median(np.abs(expansion.ratio[ok] - truth[ok])) < tolerance


def plane_predictions(depths, seed=0):
    """Per-frame predictions ``a_k z_k + b_k`` (frame 0 unchanged) and the drifts ``(a, b)``."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.8, 1.25, len(depths)), rng.uniform(-0.3, 0.3, len(depths))
    a[0], b[0] = 1.0, 0.0
    return [(a[k] * depths[k] + b[k]).astype(np.float32) for k in range(len(depths))], a, b


def test_stabilizer_keeps_the_travel_under_forward_motion_hand_computed():
    # aligned_k = s_k (a_k z_k + b_k) + c_k = z_k needs s_k = 1 / a_k, c_k = -b_k / a_k
    frames, depths, _ = plane_clip()
    preds, a, b = plane_predictions(depths)
    stab = DepthStabilizer(motion="flow", flow_preset="medium")
    aligned = np.stack([stab(p, f) for p, f in zip(preds, frames)])
    np.testing.assert_allclose([f.scale for f in stab.frames], 1 / a, rtol=0.01)
    np.testing.assert_allclose([f.shift for f in stab.frames], -b / a, atol=0.02)
    travel = 0.1 / np.linalg.norm((0.15, -0.1, 1.0))  # metres along the axis per frame: 0.0976
    ratios = [f.depth_ratio for f in stab.frames[1:]]  # about (3.5 - 0.0976 k) / (3.5 - 0.0976 (k - 1))
    assert all(0.96 < r < 0.975 for r in ratios)
    assert one_fit_absrel(aligned, depths) < 0.003
    # without the expansion, a fit to the previous frame sees every matched point `travel` closer and
    # absorbs it into the shift: frame k ends about k * travel too far (a lag growing by ~travel per frame)
    off = DepthStabilizer(motion="flow", flow_preset="medium", expansion=False)
    off_aligned = np.stack([off(p, f) for p, f in zip(preds, frames)])
    lag = np.array([f.shift for f in off.frames]) + b / a
    assert np.all(np.diff(lag) > 0.8 * travel) and np.all(np.diff(lag) < 1.1 * travel)
    assert one_fit_absrel(off_aligned, depths) > 10 * one_fit_absrel(aligned, depths)


@pytest.mark.parametrize("motion", ["flow", "auto"])
def test_stabilizer_under_forward_motion_default_flow(motion):
    frames, depths, _ = plane_clip()
    preds, a, b = plane_predictions(depths)
    stab = DepthStabilizer(motion=motion)
    aligned = np.stack([stab(p, f) for p, f in zip(preds, frames)])
    assert all(f.motion == ("flow" if motion == "flow" else "forward") for f in stab.frames[1:])
    off = DepthStabilizer(motion=motion, expansion=False)
    off_aligned = np.stack([off(p, f) for p, f in zip(preds, frames)])
    # "fast" flow underestimates the expansion a little: the scale creeps by about 1% per frame
    assert one_fit_absrel(aligned, depths) < 0.01 < 0.03 < one_fit_absrel(off_aligned, depths)
    # the flicker and drift, compensated for the expected depth change, agree: far lower after stabilisation
    assert stab.flicker()["stabilized"] < 0.2 * stab.flicker()["raw"]
    assert stab.drift()["stabilized"] < 0.2 * stab.drift()["raw"]


def test_probe_sees_a_slow_move_along_the_axis():
    # a 1% zoom per frame: the flow is under half a pixel on most of the image (the old "static"),
    # but it is an expansion of the whole image
    big = noise_texture(300)[:140, :180]
    frame = big[22:118, 26:154]  # [96, 128]
    zoomed = cv2.resize(big, None, fx=1.01, fy=1.01, interpolation=cv2.INTER_LINEAR)
    cy, cx = round(70 * 1.01), round(90 * 1.01)
    forward = zoomed[cy - 48:cy + 48, cx - 64:cx + 64]
    kind, shift, expansion = FlowMatcher("auto").probe(frame, forward)
    assert kind == "forward" and 0.2 < expansion < 0.64 + 0.1 and shift < expansion  # exact: 0.01 * 64 px
    assert FlowMatcher("auto").probe(frame, frame + 0.002)[0] == "static"
    # with the expansion off, auto fits such a pair on same-pixel matches, as before
    fit, measure = FlowMatcher("auto", expansion=False)(frame, forward)
    assert fit.identity and fit.kind == "forward" and not measure.identity
    fit, measure = FlowMatcher("auto")(frame, forward)
    assert not fit.identity and fit.kind == "forward" and fit.map_x is measure.map_x
