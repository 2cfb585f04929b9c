"""The synthetic-scene renderer against hand-computed geometry: planar depth of planes, spheres, boxes
and cylinders, planar depth vs ray length, nearest hit, shadows, textures, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apdepth.synth import Box, Cylinder, Light, Quad, Scene, Sphere, camera_from_fov, render
from apdepth.synth.camera import Camera, rotation_from_angles
from apdepth.synth.materials import plain
from apdepth.synth.textures import Texture

GREY = plain((0.5, 0.5, 0.5))


def axis_camera(height=31, width=41, hfov=60.0, position=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, roll=0.0) -> Camera:
    return camera_from_fov(height, width, hfov, position, yaw, pitch, roll)


def unit_dirs(cam: Camera) -> np.ndarray:
    """Pixel-centre ray directions in the camera frame with z = 1, float64 ``[3, H, W]``, written out by hand."""
    cols = (np.arange(cam.width) + 0.5 - cam.cx) / cam.fx
    rows = (np.arange(cam.height) + 0.5 - cam.cy) / cam.fy
    x, y = np.meshgrid(cols, rows)
    return np.stack([x, y, np.ones_like(x)])


def test_camera_frame_is_right_handed_and_looks_along_yaw():
    r = rotation_from_angles(0.0, 0.0)
    np.testing.assert_allclose(r[:, 2], [0, 0, 1], atol=1e-12)  # forward = world +z
    np.testing.assert_allclose(r[:, 1], [0, -1, 0], atol=1e-12)  # image down = world down
    r = rotation_from_angles(0.4, -0.3, 0.2)
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], [math.sin(0.4) * math.cos(-0.3), math.sin(-0.3), math.cos(0.4) * math.cos(-0.3)])


@pytest.mark.parametrize("pose", [(0.0, 0.0, 0.0), (0.5, -0.3, 0.1), (-2.0, 0.4, -0.2)])
def test_fronto_parallel_plane_has_constant_depth(pose):
    d = 3.7
    cam = axis_camera(position=(1.0, 1.5, -2.0), yaw=pose[0], pitch=pose[1], roll=pose[2])
    plane = Quad(cam.position + d * cam.forward, cam.rotation, GREY)  # infinite, normal along the optical axis
    out = render(Scene([plane]), cam, shadows=False)
    np.testing.assert_allclose(out.depth, d, rtol=1e-5)
    assert (out.prim_id == 0).all()


def test_planar_depth_is_not_ray_length():
    d = 2.0
    cam = axis_camera(hfov=90.0)
    out = render(Scene([Quad((0, 0, d), None, GREY)]), cam, shadows=False)
    dirs = unit_dirs(cam)
    ray_length = d * np.sqrt((dirs**2).sum(0))  # hand-computed Euclidean distance to the plane z = d
    np.testing.assert_allclose(out.depth * np.linalg.norm(cam.ray_directions(), axis=0), ray_length, rtol=1e-5)
    corner = out.depth[0, 0], ray_length[0, 0]
    assert corner[0] == pytest.approx(d, rel=1e-5) and corner[1] > 1.3 * d  # at 45 degrees off-axis: ~sqrt(2) d


def test_sphere_depth_centre_and_off_axis():
    D, r = 5.0, 1.2
    cam = axis_camera(height=31, width=41, hfov=50.0)
    out = render(Scene([Sphere((0, 0, D), r, materials=GREY)]), cam, shadows=False)
    assert out.depth[15, 20] == pytest.approx(D - r, rel=1e-6)  # the odd-sized image's centre pixel is on the axis
    # every pixel, by hand: |t d - c|^2 = r^2 with d = (x, y, 1) in the camera frame (= world frame here)
    dirs = unit_dirs(cam)
    dc, dd, cc = dirs[2] * D, (dirs**2).sum(0), D * D
    disc = dc**2 - dd * (cc - r * r)
    with np.errstate(invalid="ignore"):
        expected = np.where(disc >= 0, (dc - np.sqrt(disc)) / dd, np.inf)
    hit = np.isfinite(expected)
    assert 0.1 < hit.mean() < 0.9
    np.testing.assert_array_equal(np.isfinite(out.depth), hit)
    np.testing.assert_allclose(out.depth[hit], expected[hit], rtol=1e-5)


def test_rotated_box_and_cylinder_depths():
    cam = axis_camera()
    box = Box((0, 0, 4.0), rotation_from_angles(0.0, 0.0), GREY, half=(1.0, 1.0, 0.5))
    assert render(Scene([box]), cam, shadows=False).depth[15, 20] == pytest.approx(3.5, rel=1e-6)
    # turned 45 degrees about y: the nearest point on the axis is the vertical edge at z = 4 - 0.5 * sqrt(2)
    turned = Box((0, 0, 4.0), np.array([[math.cos(0.785398163), 0, math.sin(0.785398163)], [0, 1, 0],
                                        [-math.sin(0.785398163), 0, math.cos(0.785398163)]]), GREY, half=(0.5, 1.0, 0.5))
    assert render(Scene([turned]), cam, shadows=False).depth[15, 20] == pytest.approx(4 - 0.5 * math.sqrt(2), rel=1e-5)
    cyl = Cylinder((0, 0, 6.0), None, GREY, radius=0.8, half_height=1.0)  # vertical: side faces the camera
    assert render(Scene([cyl]), cam, shadows=False).depth[15, 20] == pytest.approx(5.2, rel=1e-6)
    down = axis_camera(position=(0.0, 5.0, 6.0), pitch=-math.pi / 2)  # looking straight down at the top cap
    assert render(Scene([cyl]), down, shadows=False).depth[15, 20] == pytest.approx(5.0 - 1.0, rel=1e-5)


def test_nearest_surface_wins_and_misses_are_inf():
    cam = axis_camera()
    near = Box((0.0, 0.0, 2.0), None, GREY, half=(0.2, 0.2, 0.2))
    far = Quad((0, 0, 10.0), None, GREY, half=(1.0, 1.0))
    out = render(Scene([far, near]), cam, shadows=False)
    assert out.depth[15, 20] == pytest.approx(1.8, rel=1e-6) and out.prim_id[15, 20] == 1
    assert np.isinf(out.depth[0, 0]) and out.prim_id[0, 0] == -1  # outside the finite quad: nothing


def _segment_hits_box(p, q, lo, hi):
    """Hand-written slab test: does the segment p -> q ([3, N] float64) cross the axis-aligned box [lo, hi]?"""
    d = q - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo[:, None] - p) / d, (hi[:, None] - p) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=0)
    t_far = np.nanmin(np.maximum(t1, t2), axis=0)
    return (t_near <= t_far) & (t_far > 0) & (t_near < 1)


def test_shadow_darkens_exactly_the_occluded_points():
    # a camera looks straight down at a floor; a slab floats between an off-axis point light and the floor
    cam = axis_camera(height=41, width=41, position=(0.0, 4.0, 0.0), pitch=-math.pi / 2, hfov=80.0)
    floor = Quad((0, 0, 0), rotation_from_angles(0.0, -math.pi / 2), GREY, casts_shadow=False)
    center, half = np.array([0.0, 1.5, 0.0]), np.array([0.3, 0.05, 0.3])
    light_pos = np.array([0.0, 3.0, 2.0])
    scene = Scene([floor, Box(center, None, GREY, half=tuple(half))], [Light("point", (10.0,) * 3, position=light_pos)],
                  ambient=((0.05,) * 3, (0.05,) * 3))
    no_shadows, shadows = render(scene, cam, shadows=False), render(scene, cam, shadows=True)
    np.testing.assert_array_equal(shadows.depth, no_shadows.depth)  # shadows never change geometry
    on_floor = shadows.prim_id == 0
    # floor points by hand: camera rays hit y = 0 at depth 4 (planar depth = height above the floor)
    np.testing.assert_allclose(shadows.depth[on_floor], 4.0, rtol=1e-5)
    points = (cam.position[:, None, None] + 4.0 * np.tensordot(cam.rotation, unit_dirs(cam), axes=1)).reshape(3, -1)
    occluded = _segment_hits_box(points, np.repeat(light_pos[:, None], points.shape[1], 1), center - half,
                                 center + half).reshape(41, 41) & on_floor
    lit = on_floor & ~occluded
    assert 5 < occluded.sum() < lit.sum()
    brightness = shadows.radiance.mean(-1)
    assert (brightness[occluded] < 0.3 * no_shadows.radiance.mean(-1)[occluded]).all()
    np.testing.assert_allclose(shadows.radiance[lit], no_shadows.radiance[lit])


def test_texture_repeat_and_mip_levels():
    img = np.zeros((8, 8, 3), np.float32)
    img[:, 4:] = 1.0  # right half white
    tex = Texture(img, "repeat")
    u = np.array([0.5, 4.5, 8.5, 12.5, -3.5])
    v = np.full(5, 3.5)
    np.testing.assert_array_equal(tex.sample(u, v)[:, 0], [0, 1, 0, 1, 1])
    # one pixel covering 8 texels reads the coarsest level: the average, 0.5
    np.testing.assert_allclose(tex.sample(u, v, footprint=8.0)[:, 0], 0.5)
    with pytest.raises(ValueError) as err:
        Texture(img, "wrap-around")
    assert "repeat" in str(err.value)


def test_render_is_deterministic_and_scenes_differ_by_seed():
    from apdepth.synth.compose import seed_rng
    from apdepth.synth.indoor import sample_indoor_camera, sample_room

    def frame(seed):
        rng = seed_rng(seed, 1)
        room = sample_room(rng)
        cam = sample_indoor_camera(rng, room, 48, 64)
        return render(room.scene, cam)

    a, b, c = frame(3), frame(3), frame(4)
    np.testing.assert_array_equal(a.radiance, b.radiance)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.depth, c.depth)
    assert np.isfinite(a.depth).all() and 0.05 < a.depth.min() and a.depth.max() < 15.0  # a closed room


def test_indoor_and_street_depth_ranges():
    from apdepth.synth.compose import seed_rng
    from apdepth.synth.outdoor import sample_street, street_camera, street_scene

    rng = seed_rng(0, 2)
    street = sample_street(rng)
    out = render(street_scene(rng, street, "clone"), street_camera(rng, street, 0, "clone", 47, 156))
    sky = ~np.isfinite(out.depth)
    assert sky[:5].mean() > 0 or (out.depth[:5] > 80).any()  # the top rows see the sky or far geometry
    assert not sky[-5:].any() and out.depth[-1].max() < 20.0  # the bottom rows see the road nearby
