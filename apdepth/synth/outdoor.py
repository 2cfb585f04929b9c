"""Outdoor street scenes: ground, a road with lane markings, kerbs and sidewalks, building blocks with
window facades, parked and moving car-like boxes, poles and trees, a sun and a sky beyond the geometry.

The street runs along world +z, centred on x = 0; the camera drives in a right-hand lane (x < 0).
Weather and time of day are the Virtual KITTI 2 variants (:data:`VARIANTS`): one street geometry can be
rendered under each of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import materials as mt
from . import textures as tx
from .camera import Camera, camera_from_focal
from .compose import Frame
from .geometry import Box, Quad, rot_x, rot_z
from .render import Light, Scene

VARIANTS = ("clone", "morning", "sunset", "overcast", "fog", "rain", "15-deg-left", "15-deg-right")
KITTI_HEIGHT, KITTI_WIDTH = 375, 1242
STREET_START, STREET_END = -30.0, 260.0


@dataclass
class Street:
    prims: list
    road_width: float
    lane_width: float
    lanes: int
    camera_lane_x: float


def _car(rng, position, yaw: float) -> list:
    f = Frame(position, yaw)
    length, width = rng.uniform(3.6, 4.9), rng.uniform(1.6, 1.9)
    wheel_r = rng.uniform(0.28, 0.36)
    body_h = rng.uniform(0.55, 0.8)
    paint = mt.plain(tx.random_color(rng, sat=(0.0, 0.9), val=(0.1, 0.9)), specular=0.8, shininess=64, name="paint")
    glass = mt.plain((0.05, 0.06, 0.08), specular=1.0, shininess=96, name="glass")
    tyre = mt.plain((0.04, 0.04, 0.04), name="tyre")
    base = wheel_r * 0.8
    f.box((0, base + body_h / 2, 0), (width / 2, body_h / 2, length / 2), paint)
    cab_h, cab_l = rng.uniform(0.4, 0.6), length * rng.uniform(0.45, 0.6)
    f.box((0, base + body_h + cab_h / 2, -length * rng.uniform(0.0, 0.1)), (width / 2 - 0.08, cab_h / 2, cab_l / 2),
          (glass, glass, paint, paint, glass, glass))
    for sx in (-1, 1):
        for sz in (-1, 1):
            f.cylinder((sx * (width / 2 - 0.1), wheel_r, sz * (length / 2 - wheel_r - 0.25)), wheel_r, 0.1, tyre,
                       rotation=rot_z(math.pi / 2), casts_shadow=False)  # hidden in the body's shadow anyway
    return f.prims


def _tree(rng, x: float, z: float) -> list:
    f = Frame((x, 0.0, z))
    h, r = rng.uniform(2.0, 4.5), rng.uniform(0.1, 0.25)
    bark = mt.textured(tx.wood_texture(rng, 64), 0.5, name="bark")
    f.cylinder((0, h / 2, 0), r, h / 2, bark)
    leaves = mt.foliage_material(rng)
    for _ in range(int(rng.integers(1, 4))):
        rr = rng.uniform(1.0, 2.5)
        f.ellipsoid((rng.uniform(-0.5, 0.5), h + rr * 0.6, rng.uniform(-0.5, 0.5)),
                    (rr, rr * rng.uniform(0.7, 1.3), rr), leaves)
    return f.prims


def _pole(rng, x: float, z: float, side: float) -> list:
    f = Frame((x, 0.0, z))
    h = rng.uniform(4.0, 8.0)
    metal = mt.plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.2, 0.6)), specular=0.4)
    f.cylinder((0, h / 2, 0), rng.uniform(0.05, 0.1), h / 2, metal)
    if rng.random() < 0.6:  # a lamp arm reaching over the road
        f.box((-side * 0.8, h, 0), (0.8, 0.05, 0.08), metal)
    if rng.random() < 0.3:  # a sign
        sign = mt.plain(tx.random_color(rng, sat=(0.6, 1.0), val=(0.5, 0.9)), specular=0.3)
        f.box((0, rng.uniform(2.0, 2.8), -0.06), (0.35, 0.35, 0.02), sign)
    return f.prims


def sample_street(rng: np.random.Generator) -> Street:
    """The geometry and materials of one street (lighting comes with :func:`street_scene`)."""
    lanes = int(rng.integers(2, 5))
    lane_w = rng.uniform(3.0, 3.6)
    parking = rng.random() < 0.7
    margin = 2.4 if parking else 0.4  # parking strip (or hard shoulder) outside the edge lines
    road_w = lanes * lane_w + 2 * margin
    prims: list = []
    ground_kind = rng.choice(["grass", "gravel", "noise"])
    if ground_kind == "noise":
        ground = mt.textured(tx.noise_texture(rng, 128, cells=16), rng.uniform(1.0, 4.0), name="ground")
    else:
        img, _ = tx.photo_texture(rng, str(ground_kind))
        ground = mt.textured(img, rng.uniform(1.0, 3.0), name=str(ground_kind))
    flat = rot_x(-math.pi / 2)  # a quad's local x, y, z -> world +x, -z, +y: lying flat, normal up
    prims.append(Quad((0, 0, 0), flat, ground, half=(math.inf, math.inf), casts_shadow=False))
    road_img = tx.road_texture(rng, road_w, lanes, margin)
    road = mt.textured(road_img, (road_w, 12.0), specular=0.1, name="road")
    length = STREET_END - STREET_START
    prims.append(Quad((0, 0.002, (STREET_START + STREET_END) / 2), flat @ rot_z(math.pi), road,
                      half=(road_w / 2, length / 2), casts_shadow=False))
    pave = mt.textured(tx.tiles_texture(rng, 64, n=2), rng.uniform(0.5, 1.2), name="paving")
    kerb = mt.plain(tx.random_color(rng, sat=(0.0, 0.1), val=(0.4, 0.8)), name="kerb")
    sw_w, sw_h = rng.uniform(1.5, 4.0), rng.uniform(0.1, 0.18)
    for side in (-1, 1):
        x = side * (road_w / 2 + sw_w / 2)
        prims.append(Box((x, sw_h / 2, (STREET_START + STREET_END) / 2), None, (kerb, kerb, kerb, pave, kerb, kerb),
                         half=(sw_w / 2, sw_h / 2, length / 2), casts_shadow=False))
        _buildings(rng, prims, side, road_w / 2 + sw_w)
        for z in np.arange(STREET_START + rng.uniform(0, 20), STREET_END, rng.uniform(12, 35)):
            if rng.random() < 0.5:
                prims += _tree(rng, side * (road_w / 2 + rng.uniform(0.6, sw_w - 0.3)), z)
            elif rng.random() < 0.6:
                prims += _pole(rng, side * (road_w / 2 + 0.4), z, side)
        # parked cars along this kerb
        z = STREET_START + rng.uniform(0, 10)
        while parking and z < STREET_END:
            if rng.random() < 0.55:
                yaw = rng.normal(0, 0.03) + (0 if rng.random() < 0.8 else math.pi)
                prims += _car(rng, (side * (road_w / 2 - margin / 2), 0.0, z), yaw)
            z += rng.uniform(5.5, 14.0)
    lane_centres = [-lanes * lane_w / 2 + lane_w * (k + 0.5) for k in range(lanes)]  # right-most first
    cam_lane = int(rng.integers(0, max(1, lanes // 2)))
    for _ in range(int(rng.integers(0, 7))):  # traffic in the other lanes: same way on the right, oncoming left
        k = int(rng.integers(lanes))
        if k != cam_lane:
            x = lane_centres[k]
            prims += _car(rng, (x, 0.0, rng.uniform(5.0, 150.0)), math.pi if x > 0 else 0.0)
    if rng.random() < 0.5:  # a far skyline closing the street
        for _ in range(int(rng.integers(2, 7))):
            h = rng.uniform(10, 60)
            facade = mt.textured(tx.facade_texture(rng, 64, 4, 4), (12.0, 12.0), name="facade")
            prims.append(Box((rng.uniform(-80, 80), h / 2, STREET_END + rng.uniform(10, 150)), None, facade,
                             half=(rng.uniform(8, 30), h / 2, rng.uniform(8, 30))))
    return Street(prims, road_w, lane_w, lanes, lane_centres[cam_lane])


def _buildings(rng, prims: list, side: int, x_front: float) -> None:
    z = STREET_START
    while z < STREET_END:
        w = rng.uniform(6.0, 25.0)
        if rng.random() < 0.15:  # a gap: an alley or an empty lot
            z += w
            continue
        depth, h = rng.uniform(8.0, 20.0), rng.uniform(4.0, 30.0) if rng.random() < 0.8 else rng.uniform(30, 60)
        setback = rng.uniform(0.0, 3.0) if rng.random() < 0.6 else 0.0
        floors = max(1, int(round(h / 3.2)))
        bays = max(1, int(round(w / rng.uniform(2.5, 4.5))))
        rep_f, rep_b = min(floors, 4), min(bays, 4)
        facade = mt.textured(tx.facade_texture(rng, 128, rep_f, rep_b), (w * rep_b / bays, h * rep_f / floors),
                             name="facade")
        roof = mt.plain(tx.random_color(rng, sat=(0.0, 0.2), val=(0.2, 0.5)))
        side_wall = facade if rng.random() < 0.5 else mt.textured(tx.noise_texture(rng, 64), 3.0, name="wall")
        x = side * (x_front + setback + depth / 2)
        # faces: -x, +x, bottom, roof, -z, +z; the street-facing side is -x for buildings at x > 0, else +x
        front_left = (side_wall, facade) if side < 0 else (facade, side_wall)
        prims.append(Box((x, h / 2, z + w / 2), None, (*front_left, roof, roof, side_wall, side_wall),
                         half=(depth / 2, h / 2, w / 2)))
        z += w + (rng.uniform(0.0, 1.5) if rng.random() < 0.5 else 0.0)


def street_camera(rng: np.random.Generator, street: Street, frame: int, variant: str = "clone",
                  height: int = KITTI_HEIGHT, width: int = KITTI_WIDTH, step: float | None = None,
                  focal: float | None = None) -> Camera:
    """The camera of frame ``frame`` of a drive along ``street``: KITTI-like height, pitch and focal length
    (``focal`` in pixels at 1242 wide, scaled to ``width``; default: random in 690..740)."""
    step = rng.uniform(0.8, 1.6) if step is None else step
    z = STREET_START + 15.0 + frame * step
    yaw = rng.normal(0.0, math.radians(3.0))
    if variant.endswith("-left") or variant.endswith("-right"):
        deg = float(variant.split("-")[0])
        yaw += math.radians(deg if variant.endswith("-right") else -deg)
    x = street.camera_lane_x + rng.normal(0.0, 0.3)
    pitch = math.radians(rng.normal(-1.0, 1.5))
    focal = (rng.uniform(690.0, 740.0) if focal is None else focal) * width / KITTI_WIDTH
    return camera_from_focal(height, width, focal, (x, rng.uniform(1.5, 1.75), z), yaw, pitch,
                             math.radians(rng.normal(0.0, 0.5)))


def street_scene(rng: np.random.Generator, street: Street, variant: str = "clone") -> Scene:
    """``street`` lit for one of :data:`VARIANTS`: sun, sky, ambient light and fog."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose among {', '.join(VARIANTS)}")
    weather = "clone" if variant.endswith(("-left", "-right")) else variant
    azimuth = rng.uniform(-math.pi, math.pi)
    elevation = math.radians({"clone": rng.uniform(30, 70), "morning": rng.uniform(10, 25),
                              "sunset": rng.uniform(2, 9)}.get(weather, 45.0))
    sun_dir = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                        math.cos(elevation) * math.cos(azimuth)])
    if weather == "clone":
        sun, zenith, horizon = np.array([1.0, 0.97, 0.9]) * 3.0, np.array([0.25, 0.45, 0.85]), np.array([0.7, 0.8, 0.95])
    elif weather == "morning":
        sun, zenith, horizon = np.array([1.0, 0.85, 0.65]) * 2.5, np.array([0.35, 0.5, 0.8]), np.array([0.95, 0.85, 0.75])
    elif weather == "sunset":
        sun, zenith, horizon = np.array([1.0, 0.55, 0.3]) * 2.0, np.array([0.25, 0.25, 0.5]), np.array([1.0, 0.55, 0.3])
    else:  # overcast, fog, rain: no direct sun
        grey = {"overcast": 0.75, "fog": 0.8, "rain": 0.5}[weather]
        sun, zenith, horizon = None, np.array([grey, grey, grey * 1.03]), np.array([grey, grey, grey]) * 1.1
    lights = [] if sun is None else [Light("directional", sun * rng.uniform(0.8, 1.2), direction=sun_dir)]
    ambient_strength = 0.35 if sun is not None else 1.2
    ambient = (zenith * ambient_strength, np.array([0.5, 0.45, 0.4]) * ambient_strength * 0.5)
    cloud = tx.Texture(tx.fbm(rng, 256, 4, 5))
    cover = rng.uniform(0.0, 0.6) if sun is not None else 0.0
    fog = None
    if weather == "fog":
        fog = (horizon * 1.1, rng.uniform(0.015, 0.05))
    elif weather == "rain":
        fog = (horizon, rng.uniform(0.004, 0.012))
    return Scene(list(street.prims), lights, ambient, _sky(zenith, horizon, sun_dir, sun, cloud, cover), fog)


def _sky(zenith, horizon, sun_dir, sun, cloud: tx.Texture, cover: float):
    zenith, horizon = np.asarray(zenith, np.float32), np.asarray(horizon, np.float32)

    def sky(d: np.ndarray) -> np.ndarray:  # unit directions [3, N] -> radiance [N, 3]
        up = np.clip(d[1], 0.0, 1.0)
        blend = (1 - up) ** 3
        rgb = zenith[None, :] * (1 - blend[:, None]) + horizon[None, :] * blend[:, None]
        if cover > 0:
            k = 1.0 / np.maximum(up, 0.05)
            c = cloud.sample(d[0] * k * 64, d[2] * k * 64, 1.0)[:, 0]
            amount = np.clip((c - (1 - cover)) / 0.2, 0, 1)[:, None] * np.clip(up * 8, 0, 1)[:, None]
            rgb = rgb * (1 - amount) + np.float32(0.95) * amount
        if sun is not None:
            cos_sun = np.clip(d.T @ sun_dir.astype(np.float32), -1, 1)
            rgb = rgb + (np.exp((cos_sun - 1) * 300) * 3 + np.exp((cos_sun - 1) * 8) * 0.3)[:, None] * \
                np.asarray(sun, np.float32)[None, :] / 3
        return rgb.astype(np.float32) * 1.3

    return sky
