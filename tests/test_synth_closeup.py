"""Close-up scenes (apdepth.synth.closeup): the subject is nearer than its backdrop and fills much of the view,
the scene kinds mix by fraction without changing rooms or open-air scenes, and bad fractions are refused."""

from __future__ import annotations

import numpy as np
import pytest

from apdepth.synth.closeup import closeup_camera, sample_closeup_scene
from apdepth.synth.compose import seed_rng
from apdepth.synth.datasets import generate, render_scene, scene_kind
from apdepth.synth.render import render

SMALL = (48, 64)


@pytest.mark.parametrize("seed", range(6))
def test_subject_at_the_centre_is_nearer_than_the_border(seed):
    rng = seed_rng(0, 16, seed, 0)
    scene = sample_closeup_scene(rng)
    cam = closeup_camera(seed_rng(0, 16, seed, 1), scene, *SMALL)
    depth = render(scene.scene, cam, shadows=False).depth
    depth = np.where(np.isfinite(depth), depth, 1e3)
    assert np.linalg.norm(cam.position - scene.target) < 8.0  # a close-up: metres, not tens of metres
    centre = np.median(depth[16:32, 21:43])
    top = np.median(depth[:6])
    assert centre < top or scene.from_above  # a still life from above: the table top recedes to the top


def test_closeup_fraction_mixes_kinds_and_keeps_the_other_scenes(tmp_path):
    kinds = [scene_kind(0, s, 0.4, 0.3) for s in range(60)]
    assert {"open", "closeup", "room"} == set(kinds)
    assert [k == "open" for k in kinds] == [scene_kind(0, s, 0.4) == "open" for s in range(60)]
    assert not any(scene_kind(0, s, 0.5) == "closeup" for s in range(60))
    close = kinds.index("closeup")
    res = render_scene("hypersim", 0, close, [0], SMALL, keep_depth=True, outdoor=0.4, closeup=0.3)
    assert res.meta[0]["room"] == "closeup" and np.isfinite(res.depths[0]).any()
    info = generate("hypersim", tmp_path / "h", 4, size=SMALL, closeup=1.0, frames_per_scene=1, progress=False)
    assert info["closeup"] == 1.0 and info["images"] == 4
    with pytest.raises(ValueError, match="closeup"):
        generate("hypersim", tmp_path / "x", 1, outdoor=0.6, closeup=0.5, progress=False)
    with pytest.raises(ValueError, match="closeup"):
        generate("nyu", tmp_path / "n", 1, closeup=0.5, progress=False)
