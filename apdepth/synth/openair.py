"""Open-air scenes laid out like everyday photographs: ground below, sky above, a backdrop of tree lines,
buildings, hedges or hills tens of metres away, and subjects a few metres from the camera (people-sized
figures, animals, cars, benches, rocks, bushes), lit by a sun and a sky and seen through haze.

The camera stands near the origin looking roughly along +z, at a person's eye height or lower, often
framing one subject (a portrait: the subject fills the view, the backdrop is far). Depth beyond
:data:`SKY_DEPTH` (the sky included) is written as :data:`SKY_DEPTH`, so that a training set in the
Hypersim layout (uint16 millimetres, valid up to 65 m) supervises the sky as the farthest thing in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import materials as mt
from . import textures as tx
from .camera import Camera, camera_from_fov
from .compose import Frame
from .geometry import Box, Ellipsoid, Quad, rot_x, rot_y
from .outdoor import _sky, _tree
from .render import Light, Scene

SKY_DEPTH = 60.0  # metres: the sky and anything farther
SKIN = ((0.95, 0.78, 0.65), (0.85, 0.62, 0.45), (0.62, 0.42, 0.3), (0.4, 0.27, 0.18), (0.28, 0.18, 0.12))


@dataclass
class OpenScene:
    scene: Scene
    subjects: list  # (centre [3], height in metres) of the subjects near the camera


def clothing(rng) -> mt.Material:
    kind = rng.choice(["plain", "plain", "stripes", "noise", "checker"])
    if kind == "plain":
        return mt.plain(tx.random_color(rng, sat=(0.0, 0.9), val=(0.08, 0.95)), name="cloth")
    image = {"stripes": tx.stripes_texture, "noise": tx.noise_texture, "checker": tx.checker_texture}[str(kind)](rng, 64)
    return mt.textured(image, (rng.uniform(0.1, 0.5),) * 2, name="cloth")


def person(rng, position, yaw: float, height: float | None = None) -> list:
    """A standing figure: legs, torso, arms, neck and head (ellipsoids and cylinders), ``height`` metres."""
    f = Frame(position, yaw)
    h = rng.uniform(1.55, 1.9) if height is None else height
    skin = mt.plain(np.array(SKIN[int(rng.integers(len(SKIN)))]) * rng.uniform(0.85, 1.1), specular=0.15, name="skin")
    top, trousers = clothing(rng), clothing(rng)
    leg_h, torso_h, head_r = 0.47 * h, 0.3 * h, 0.065 * h
    width = rng.uniform(0.85, 1.2) * 0.13 * h
    for sx in (-1, 1):
        f.cylinder((sx * width * 0.45, leg_h / 2, 0), 0.035 * h, leg_h / 2, trousers)
        f.cylinder((sx * width * 1.15, leg_h + torso_h * 0.55, 0), 0.028 * h, torso_h * 0.5, top)
    f.ellipsoid((0, leg_h + torso_h / 2, 0), (width, torso_h * 0.55, width * 0.6), top)
    f.cylinder((0, leg_h + torso_h + 0.02 * h, 0), 0.025 * h, 0.03 * h, skin)
    f.ellipsoid((0, h - head_r, 0), (head_r * 0.85, head_r, head_r * 0.9), skin)
    if rng.random() < 0.6:  # hair or a hat
        hair = mt.plain(tx.random_color(rng, sat=(0.0, 0.6), val=(0.03, 0.6), hue=(0.02, 0.12)), name="hair")
        f.ellipsoid((0, h - head_r * 0.7, head_r * 0.1), (head_r * 0.9, head_r * 0.75, head_r * 0.95), hair)
    return f.prims


def animal(rng, position, yaw: float) -> list:
    """A four-legged animal from a dog's to a horse's size: body, legs, neck and head."""
    f = Frame(position, yaw)
    size = rng.uniform(0.35, 1.6)  # body length / 2
    fur_color = tx.random_color(rng, sat=(0.1, 0.7), val=(0.1, 0.85), hue=(0.02, 0.12))
    fur = mt.textured(tx.noise_texture(rng, 64, fur_color, fur_color * 0.7, cells=16), (0.2 * size,) * 2, name="fur")
    leg, r = size * rng.uniform(0.7, 1.1), size * rng.uniform(0.3, 0.45)
    f.ellipsoid((0, leg + r * 0.7, 0), (r, r, size), fur)
    for sx in (-1, 1):
        for sz in (-1, 1):
            f.cylinder((sx * r * 0.5, (leg + r * 0.3) / 2, sz * size * 0.7), size * 0.07, (leg + r * 0.3) / 2, fur)
    f.ellipsoid((0, leg + r * 1.6, size * 1.05), (r * 0.55, r * 0.6, r * 0.8), fur)
    return f.prims


def car(rng, position, yaw: float) -> list:
    f = Frame(position, yaw)
    length, width, body_h = rng.uniform(3.6, 4.8), rng.uniform(1.6, 1.9), rng.uniform(0.6, 0.8)
    paint = mt.plain(tx.random_color(rng, sat=(0.0, 0.9), val=(0.1, 0.9)), specular=0.8, shininess=64)
    glass = mt.plain((0.05, 0.06, 0.08), specular=1.0, shininess=96)
    f.box((0, 0.3 + body_h / 2, 0), (width / 2, body_h / 2, length / 2), paint)
    f.box((0, 0.3 + body_h + 0.25, -0.2), (width / 2 - 0.1, 0.25, length * 0.28), (glass, glass, paint, paint, glass, glass))
    tyre = mt.plain((0.04, 0.04, 0.04))
    for sx in (-1, 1):
        for sz in (-1, 1):
            f.ellipsoid((sx * (width / 2 - 0.05), 0.32, sz * (length / 2 - 0.7)), (0.1, 0.32, 0.32), tyre)
    return f.prims


def bench(rng, position, yaw: float) -> list:
    f = Frame(position, yaw)
    wood = mt.textured(tx.wood_texture(rng, 64), 0.6)
    metal = mt.plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.1, 0.5)), specular=0.5)
    length = rng.uniform(1.2, 2.2)
    f.box((0, 0.45, 0), (length / 2, 0.03, 0.22), wood)
    f.box((0, 0.75, 0.2), (length / 2, 0.12, 0.02), wood)
    for sx in (-1, 1):
        f.box((sx * (length / 2 - 0.1), 0.22, 0), (0.03, 0.22, 0.2), metal)
    return f.prims


def rock_or_bush(rng, position, yaw: float) -> list:
    f = Frame(position, yaw)
    r = rng.uniform(0.3, 1.3)
    if rng.random() < 0.5:
        stone = tx.random_color(rng, sat=(0.0, 0.2), val=(0.3, 0.7))
        mat = mt.textured(tx.noise_texture(rng, 64, stone, stone * 0.6, cells=8), (r,) * 2, name="rock")
    else:
        mat = mt.foliage_material(rng)
    f.ellipsoid((0, r * 0.5, 0), (r * rng.uniform(0.8, 1.5), r, r * rng.uniform(0.8, 1.5)), mat)
    return f.prims


SUBJECTS = {"person": 5, "animal": 2, "car": 1, "bench": 1, "rock_or_bush": 2, "tree": 1}


def _subject(rng, kind: str, x: float, z: float) -> tuple[list, float]:
    yaw = rng.uniform(-math.pi, math.pi)
    if kind == "person":
        h = rng.uniform(1.55, 1.9) if rng.random() < 0.8 else rng.uniform(0.9, 1.4)
        return person(rng, (x, 0.0, z), yaw, h), h
    if kind == "tree":
        return _tree(rng, x, z), 4.0
    builder = {"animal": animal, "car": car, "bench": bench, "rock_or_bush": rock_or_bush}[kind]
    return builder(rng, (x, 0.0, z), yaw), {"animal": 1.0, "car": 1.5, "bench": 0.8, "rock_or_bush": 1.0}[kind]


def ground_material(rng) -> mt.Material:
    kind = rng.choice(["grass", "grass", "gravel", "sand", "paving", "asphalt"])
    if kind in ("grass", "gravel"):
        img, _ = tx.photo_texture(rng, str(kind))
        if kind == "grass":
            img = np.clip(img * np.array([0.6, 1.0, 0.45], np.float32), 0, 1)
        return mt.textured(img, rng.uniform(0.8, 2.5), name=str(kind))
    if kind == "paving":
        return mt.textured(tx.tiles_texture(rng, 128), rng.uniform(0.5, 2.0), name="paving")
    color = tx.random_color(rng, sat=(0.0, 0.4), val=(0.2, 0.7), hue=(0.05, 0.15))
    return mt.textured(tx.noise_texture(rng, 128, color, color * 0.7, cells=16), rng.uniform(1.0, 4.0), name=str(kind))


def _backdrop(rng, prims: list) -> None:
    """Things 12-55 m away across the view: tree lines, buildings, hedges, hills."""
    for kind in rng.choice(["trees", "buildings", "hedge", "hills"], size=int(rng.integers(1, 4)), replace=False):
        if kind == "trees":
            dist = rng.uniform(12, 45)
            for a in np.arange(-1.3, 1.3, rng.uniform(0.05, 0.2)):
                d = dist * rng.uniform(0.85, 1.15)
                prims += _tree(rng, d * math.sin(a), d * math.cos(a))
        elif kind == "buildings":
            dist = rng.uniform(18, 50)
            for a in np.arange(-1.2, 1.2, rng.uniform(0.2, 0.5)):
                w, h, d = rng.uniform(6, 20), rng.uniform(4, 30), dist * rng.uniform(0.9, 1.2)
                facade = mt.textured(tx.facade_texture(rng, 64, 4, 4), (w, min(h, 12.0)), name="facade")
                prims.append(Box((d * math.sin(a), h / 2, d * math.cos(a)), rot_y(a + rng.normal(0, 0.2)), facade,
                                 half=(w / 2, h / 2, rng.uniform(4, 10))))
        elif kind == "hedge":
            dist, h = rng.uniform(6, 20), rng.uniform(0.8, 3.0)
            mat = mt.foliage_material(rng) if rng.random() < 0.6 else mt.textured(tx.brick_texture(rng, 64), 1.2)
            prims.append(Box((rng.normal(0, 3), h / 2, dist), rot_y(rng.normal(0, 0.3)), mat,
                             half=(rng.uniform(10, 40), h / 2, 0.4)))
        else:
            for _ in range(int(rng.integers(1, 4))):
                a, d = rng.uniform(-1.0, 1.0), rng.uniform(45, 58)
                color = tx.random_color(rng, sat=(0.2, 0.6), val=(0.2, 0.5), hue=(0.15, 0.4))
                mat = mt.textured(tx.noise_texture(rng, 64, color, color * 0.6, cells=8), 8.0, name="hill")
                prims.append(Ellipsoid((d * math.sin(a), -rng.uniform(0, 10), d * math.cos(a)), None, mat,
                                       radii=(rng.uniform(20, 60), rng.uniform(4, 15), rng.uniform(6, 12)),
                                       casts_shadow=False))


def _lighting(rng, prims: list) -> Scene:
    weather = rng.choice(["sunny", "sunny", "hazy", "overcast", "evening"])
    azimuth, elevation = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(15, 70))
    if weather == "evening":
        elevation = math.radians(rng.uniform(4, 15))
    sun_dir = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                        math.cos(elevation) * math.cos(azimuth)])
    zenith = tx.random_color(rng, sat=(0.3, 0.7), val=(0.6, 0.95), hue=(0.55, 0.65))
    horizon = np.clip(zenith + rng.uniform(0.2, 0.45), 0, 1)
    sun = np.array([1.0, 0.96, 0.88]) * rng.uniform(2.2, 3.2)
    if weather == "evening":
        sun, horizon = np.array([1.0, 0.65, 0.35]) * 2.0, np.array([1.0, 0.7, 0.45])
    if weather == "overcast":
        grey = rng.uniform(0.6, 0.85)
        sun, zenith, horizon = None, np.full(3, grey), np.full(3, grey * 1.08)
    lights = [] if sun is None else [Light("directional", sun, direction=sun_dir)]
    strength = 0.4 if sun is not None else 1.2
    ambient = (np.asarray(zenith) * strength, np.array([0.45, 0.42, 0.35]) * strength * 0.5)
    cloud = tx.Texture(tx.fbm(rng, 256, 4, 5))
    cover = rng.uniform(0.0, 0.7) if sun is not None else 0.0
    haze = rng.uniform(0.004, 0.03) if weather in ("hazy", "overcast") else rng.uniform(0.0, 0.008)
    fog = (np.asarray(horizon) * 1.1, haze) if haze > 0.001 else None
    return Scene(prims, lights, ambient, _sky(zenith, horizon, sun_dir, sun, cloud, cover), fog)


def sample_open_scene(rng: np.random.Generator) -> OpenScene:
    """Ground, backdrop, 1-6 subjects 1.5-14 m in front of the origin (within +-40 degrees of +z), lighting."""
    flat = rot_x(-math.pi / 2)
    prims: list = [Quad((0, 0, 0), flat, ground_material(rng), half=(math.inf, math.inf), casts_shadow=False)]
    if rng.random() < 0.3:  # a path or road crossing the ground
        path = ground_material(rng)
        prims.append(Quad((rng.normal(0, 2), 0.003, 30), flat, path,
                          half=(rng.uniform(1, 4), 40), casts_shadow=False))
    _backdrop(rng, prims)
    names, weights = zip(*SUBJECTS.items())
    p = np.array(weights, float) / sum(weights)
    subjects = []
    for _ in range(int(rng.integers(1, 7))):
        a, d = rng.uniform(-0.7, 0.7), rng.uniform(1.5, 14.0)
        x, z = d * math.sin(a), d * math.cos(a)
        if any(math.hypot(x - c[0], z - c[2]) < 1.5 for c, _ in subjects):
            continue
        parts, h = _subject(rng, str(rng.choice(names, p=p)), x, z)
        prims += parts
        subjects.append((np.array([x, h / 2, z]), h))
    return OpenScene(_lighting(rng, prims), subjects)


def open_camera(rng: np.random.Generator, scene: OpenScene, height: int, width: int) -> Camera:
    """A camera near the origin: eye height (sometimes a child's or a low one), aimed at a subject's upper
    part (a portrait with a narrow field of view when close) or at the backdrop, with a little roll."""
    y = rng.uniform(1.3, 1.8) if rng.random() < 0.7 else rng.uniform(0.3, 1.3)
    pos = np.array([rng.normal(0, 0.3), y, rng.normal(0, 0.3)])
    hfov = rng.uniform(40.0, 75.0)
    if scene.subjects and rng.random() < 0.8:
        centre, h = scene.subjects[int(rng.integers(len(scene.subjects)))]
        target = centre + np.array([0.0, h * rng.uniform(0.0, 0.35), 0.0])
        dist = math.hypot(target[0] - pos[0], target[2] - pos[2])
        if dist < 4.0 and rng.random() < 0.6:  # a portrait: the subject fills most of the view
            hfov = float(np.clip(math.degrees(2 * math.atan(h * rng.uniform(0.8, 1.6) / dist)), 20.0, 75.0))
    else:
        target = np.array([rng.normal(0, 5), rng.uniform(0.5, 4.0), 30.0])
    dx, dy, dz = target - pos
    yaw = math.atan2(dx, dz) + rng.normal(0, math.radians(5))
    pitch = float(np.clip(math.atan2(dy, math.hypot(dx, dz)) + rng.normal(0, math.radians(4)),
                          math.radians(-30), math.radians(15)))
    return camera_from_fov(height, width, hfov, pos, yaw, pitch, math.radians(rng.normal(0, 2.0)))


def clamp_sky(depth: np.ndarray) -> np.ndarray:
    """Planar depth with the sky (inf) and anything beyond :data:`SKY_DEPTH` set to :data:`SKY_DEPTH`."""
    return np.where(np.isfinite(depth), np.minimum(depth, SKY_DEPTH), SKY_DEPTH).astype(np.float32)
