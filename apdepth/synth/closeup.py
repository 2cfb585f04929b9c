"""Close-up scenes: one subject a few tens of centimetres to three metres from the camera, filling much of
the view, in front of a backdrop that is clearly farther (figure and ground, as in most photographs of
people, animals and things).

Subjects: a person's head and shoulders or upper body, an animal, a plant or a rock, a still life (cups,
fruit, books on a table top, seen from above). Backdrops: a wall, curtain or hedge 0.4-6 m behind the
subject, or the open-air backdrop of :mod:`.openair` (tree lines, buildings, hills tens of metres away,
and the sky). The subject stands at the origin; the camera is placed at a distance that makes the
subject fill a chosen share of the view, so close and far subjects, narrow and wide lenses all occur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import materials as mt
from . import textures as tx
from .camera import Camera, camera_from_fov
from .compose import Frame
from .geometry import Box, Quad, rot_x
from .openair import _backdrop, _lighting, animal, ground_material, person, rock_or_bush
from .render import Scene

SUBJECTS = {"person": 4, "animal": 2, "plant": 1, "still_life": 2}


@dataclass
class CloseScene:
    scene: Scene
    target: np.ndarray  # [3]: the point the camera frames
    extent: float  # metres of the subject the view's height should hold
    from_above: bool  # a still life: the camera looks down on it


def _still_life(rng, prims: list) -> tuple[np.ndarray, float]:
    """A table top at 0.7-0.8 m with 2-6 cups, plates, fruit and books on it; returns (target, extent)."""
    top_y = rng.uniform(0.7, 0.8)
    hx, hz = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.8)
    f = Frame((0.0, 0.0, 0.0), rng.uniform(-0.4, 0.4))
    f.box((0, top_y - 0.02, 0), (hx, 0.02, hz), mt.furniture_material(rng))
    leg = mt.furniture_material(rng)
    for sx in (-1, 1):
        for sz in (-1, 1):
            f.box((sx * (hx - 0.05), (top_y - 0.04) / 2, sz * (hz - 0.05)), (0.03, (top_y - 0.04) / 2, 0.03), leg)
    spread = rng.uniform(0.12, 0.35)
    for _ in range(int(rng.integers(2, 7))):
        x, z = np.clip(rng.normal(0, spread, 2), [-hx + 0.1, -hz + 0.1], [hx - 0.1, hz - 0.1])
        kind = rng.choice(["cup", "plate", "fruit", "book", "bottle"])
        mat = mt.object_material(rng)
        if kind == "cup":
            r, h = rng.uniform(0.035, 0.06), rng.uniform(0.06, 0.12)
            f.cylinder((x, top_y + 0.008, z), r * 2.2, 0.008, mt.object_material(rng))  # saucer
            f.cylinder((x, top_y + 0.016 + h / 2, z), r, h / 2, mat)
        elif kind == "plate":
            f.cylinder((x, top_y + 0.01, z), rng.uniform(0.09, 0.15), 0.01, mat)
        elif kind == "fruit":
            r = rng.uniform(0.03, 0.07)
            f.ellipsoid((x, top_y + r, z), (r, r * rng.uniform(0.85, 1.1), r), mat)
        elif kind == "book":
            w, d, h = rng.uniform(0.1, 0.2), rng.uniform(0.14, 0.25), rng.uniform(0.02, 0.06)
            f.box((x, top_y + h / 2, z), (w, h / 2, d), mat)
        else:
            r, h = rng.uniform(0.03, 0.05), rng.uniform(0.15, 0.3)
            f.cylinder((x, top_y + h / 2, z), r, h / 2, mat)
    prims += f.prims
    return np.array([0.0, top_y, 0.0]), rng.uniform(0.2, 0.6)


def _subject(rng, kind: str, prims: list) -> tuple[np.ndarray, float, bool]:
    """The subject at the origin: (target [3], extent in metres, seen from above)."""
    yaw = math.pi + rng.normal(0, 0.6)  # roughly facing the camera (which looks along +z)
    if kind == "person":
        h = rng.uniform(1.55, 1.9) if rng.random() < 0.8 else rng.uniform(0.9, 1.4)
        prims += person(rng, (0.0, 0.0, 0.0), yaw, h)
        extent = h * rng.uniform(0.2, 0.75)  # a face to half a body
        return np.array([0.0, h - extent * 0.45, 0.0]), extent, False
    if kind == "animal":
        prims += animal(rng, (0.0, 0.0, 0.0), yaw + math.pi / 2 * rng.choice([-1, 0, 1]))
        return np.array([0.0, rng.uniform(0.4, 1.2), 0.0]), rng.uniform(0.5, 1.8), False
    if kind == "plant":
        prims += rock_or_bush(rng, (0.0, 0.0, 0.0), yaw)
        return np.array([0.0, rng.uniform(0.3, 0.8), 0.0]), rng.uniform(0.6, 2.0), False
    target, extent = _still_life(rng, prims)
    return target, extent, True


def _wall(rng, prims: list, distance: float) -> None:
    """A wall, curtain or hedge across the view ``distance`` metres behind the subject."""
    kind = rng.choice(["wall", "wall", "curtain", "hedge"])
    if kind == "hedge":
        mat = mt.foliage_material(rng)
    elif kind == "curtain":
        mat = mt.textured(tx.stripes_texture(rng, 64), (rng.uniform(0.1, 0.6),) * 2, name="curtain")
    else:
        mat = mt.wall_material(rng)
    height = rng.uniform(2.0, 4.0) if kind == "hedge" else 30.0
    prims.append(Quad((rng.normal(0, 0.5), height / 2, distance), np.eye(3), mat, half=(40.0, height / 2)))


def sample_closeup_scene(rng: np.random.Generator) -> CloseScene:
    """Ground, a subject at the origin, a wall behind it (half the scenes) or the open-air backdrop, lighting."""
    flat = rot_x(-math.pi / 2)
    indoor = rng.random() < 0.5
    ground = mt.floor_material(rng) if indoor else ground_material(rng)
    prims: list = [Quad((0, 0, 0), flat, ground, half=(math.inf, math.inf), casts_shadow=False)]
    names, weights = zip(*SUBJECTS.items())
    kind = str(rng.choice(names, p=np.array(weights, float) / sum(weights)))
    target, extent, from_above = _subject(rng, kind, prims)
    if indoor or rng.random() < 0.3:
        _wall(rng, prims, rng.uniform(0.4, 6.0) + (1.0 if kind == "still_life" else 0.3))
    if not indoor:
        _backdrop(rng, prims)
    if rng.random() < 0.4:  # something between subject and backdrop: a box, post or second figure
        x, z = rng.uniform(-2.5, 2.5), rng.uniform(0.8, 4.0)
        if rng.random() < 0.5:
            prims += person(rng, (x, 0.0, z), rng.uniform(-math.pi, math.pi))
        else:
            size = rng.uniform(0.2, 0.8)
            prims.append(Box((x, size, z), np.eye(3), mt.furniture_material(rng), half=(size, size, size)))
    return CloseScene(_lighting(rng, prims), target, extent, from_above)


def closeup_camera(rng: np.random.Generator, scene: CloseScene, height: int, width: int) -> Camera:
    """A camera that holds ``scene.extent`` metres of the subject in 60-110% of the view's height, seen
    from the front (within +-35 degrees), a little above or below (from 25-70 degrees above for a still
    life), the subject a little off centre, with a little roll."""
    hfov = rng.uniform(30.0, 70.0)
    vfov = 2 * math.atan(math.tan(math.radians(hfov) / 2) * height / width)
    dist = scene.extent / rng.uniform(0.6, 1.1) / (2 * math.tan(vfov / 2))
    azimuth = rng.normal(0, math.radians(15))
    elevation = math.radians(rng.uniform(25, 70) if scene.from_above else rng.uniform(-10, 20))
    offset = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                       -math.cos(elevation) * math.cos(azimuth)])  # from the target towards the camera
    pos = scene.target + dist * offset
    pos[1] = max(pos[1], 0.15)
    dx, dy, dz = scene.target - pos
    yaw = math.atan2(dx, dz) + rng.normal(0, math.radians(hfov) * 0.12)
    pitch = math.atan2(dy, math.hypot(dx, dz)) + rng.normal(0, vfov * 0.12)
    return camera_from_fov(height, width, hfov, pos, yaw, pitch, math.radians(rng.normal(0, 3.0)))
