"""Open-air scenes, the defocus lens and the texture pool: layout statistics (ground below, sky above, subjects
in front of the backdrop), the sky's depth in the Hypersim layout, blur against hand-computed values, and
that no labelled WHDR photograph (nor scikit-image's stereo_motorcycle) can reach a texture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from apdepth.synth import textures as tx
from apdepth.synth.compose import seed_rng
from apdepth.synth.datasets import generate, is_open_air, render_scene
from apdepth.synth.openair import SKY_DEPTH, clamp_sky, open_camera, person, sample_open_scene
from apdepth.synth.optics import box_blur, defocus
from apdepth.synth.render import Scene, render

SMALL = (48, 64)
WHDR_IMAGES = tx.TEXTURE_DIR.parents[1] / "evaluation" / "whdr_data" / "images"


def test_box_blur_by_hand():
    img = np.zeros((1, 7, 1), np.float32)
    img[0, 3] = 9.0
    once = np.array([0, 0, 3, 3, 3, 0, 0], np.float32)  # radius 1: a 3-wide box, applied twice
    twice = np.convolve(once, np.ones(3) / 3, mode="same")
    np.testing.assert_allclose(box_blur(img, 1)[0, :, 0], twice, atol=1e-5)
    flat = np.full((5, 6, 3), 0.25, np.float32)
    np.testing.assert_allclose(box_blur(flat, 2), flat, atol=1e-6)  # edges clamped: a flat image stays flat
    assert box_blur(img, 0) is img


def test_defocus_keeps_the_focal_plane_sharp_and_blurs_the_rest():
    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3)).astype(np.float32)
    depth = np.full((20, 30), 2.0, np.float32)
    np.testing.assert_allclose(defocus(img, depth, focus=2.0, strength=10.0), img, atol=1e-6)  # all in focus
    depth[:, 15:] = np.inf  # right half: the sky, 0.5 dioptre from the focus -> radius 5 px at strength 10
    out = defocus(img, depth, focus=2.0, strength=10.0)
    np.testing.assert_allclose(out[:, :10], img[:, :10], atol=1e-6)
    assert out[:, 20:].std() < 0.5 * img[:, 20:].std()  # blurred: the noise is smoothed away


def test_open_air_layout_ground_below_sky_above():
    """Over a few scenes: the top rows are mostly sky (clamped to SKY_DEPTH) or far backdrop, the bottom rows
    near ground, and every depth is finite and within (0, SKY_DEPTH]."""
    top, bottom = [], []
    for scene in range(6):
        rng = seed_rng(1, scene)
        world = sample_open_scene(rng)
        cam = open_camera(rng, world, *SMALL)
        depth = clamp_sky(render(world.scene, cam).depth)
        assert np.isfinite(depth).all() and 0 < depth.min() and depth.max() <= SKY_DEPTH
        top.append(np.median(depth[:4]))
        bottom.append(np.median(depth[-4:]))
    assert np.median(top) > 3 * np.median(bottom)
    assert np.median(bottom) < 10.0


def test_person_is_people_sized_and_stands_on_the_ground():
    rng = np.random.default_rng(3)
    prims = person(rng, (0.0, 0.0, 5.0), 0.0, height=1.8)
    from apdepth.synth.camera import camera_from_fov

    cam = camera_from_fov(120, 120, 40.0, (0.0, 0.9, 0.0), 0.0, 0.0)  # looking at the figure from 5 m
    out = render(Scene(prims), cam, shadows=False)
    hit = np.isfinite(out.depth)
    rows = np.flatnonzero(hit.any(axis=1))
    # the figure spans 1.8 m at 5 m: 1.8 / 5 * f pixels, f = 60 / tan(20 deg)
    f = 60 / np.tan(np.radians(20))
    assert abs((rows[-1] - rows[0] + 1) - 1.8 / 5 * f) < 4
    assert 4.5 < out.depth[hit].min() and out.depth[hit].max() < 5.5


def test_outdoor_fraction_mixes_scene_kinds_and_keeps_rooms_unchanged(tmp_path):
    kinds = [is_open_air(0, s, 0.5) for s in range(40)]
    assert 10 < sum(kinds) < 30
    assert not any(is_open_air(0, s, 0.0) for s in range(40))
    room = next(s for s in range(40) if not kinds[s])
    sky = next(s for s in range(40) if kinds[s])
    # a room is the same whether or not other scenes are open-air
    a = render_scene("hypersim", 0, room, [0], SMALL, keep_depth=True, outdoor=0.5).depths[0]
    b = render_scene("hypersim", 0, room, [0], SMALL, keep_depth=True).depths[0]
    np.testing.assert_array_equal(a, b)
    res = render_scene("hypersim", 0, sky, [0, 1], SMALL, keep_depth=True, outdoor=0.5)
    assert res.meta[0]["room"] == "open_air"
    stored = np.asarray(Image.open(io.BytesIO(res.files[1][1])))
    np.testing.assert_array_equal(stored, np.round(res.depths[0].astype(np.float64) * 1000).astype(np.uint16))
    info = generate("hypersim", tmp_path / "h", 4, size=SMALL, outdoor=0.5, frames_per_scene=1, progress=False)
    assert info["outdoor"] == 0.5 and info["images"] == 4
    with pytest.raises(ValueError, match="outdoor"):
        generate("nyu", tmp_path / "n", 1, outdoor=0.5, progress=False)


def test_texture_pool_holds_no_labelled_photograph():
    """The labelled WHDR photographs and stereo_motorcycle stay out of the texture pool: only the three tileable
    greyscale photos ship, pictures on walls are painted procedurally, and no texture file equals a labelled one."""
    shipped = sorted(p.stem for p in tx.TEXTURE_DIR.iterdir() if p.suffix in (".png", ".jpg"))
    assert shipped == sorted(tx.PHOTO_TEXTURES)
    labelled = {p.stem for p in WHDR_IMAGES.glob("*.jpg")}
    assert len(labelled) >= 20 and not labelled & set(shipped)
    sources = (tx.TEXTURE_DIR / "SOURCES.md").read_text().lower()
    for name in labelled | {"motorcycle"}:
        assert f"`{name}." not in sources and f"data.{name}" not in sources, name
    for kind in tx.PAINTINGS:
        img, name = tx.picture(np.random.default_rng(0), kind)
        assert name == kind and img.dtype == np.float32 and img.ndim == 3 and 0 <= img.min() <= img.max() <= 1
    with pytest.raises(ValueError, match="painting"):
        tx.picture(np.random.default_rng(0), "astronaut")
