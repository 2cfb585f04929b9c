"""Furniture-like compositions of boxes, cylinders and ellipsoids.

Each builder takes a random generator and a :class:`Palette` and returns a :class:`Piece` built
around the origin: standing on y = 0, centred in x and z, its back towards local +z (the wall when it
stands against one). The scene sampler then turns and moves it into place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import materials as mt
from .compose import Frame
from .render import Light
from .textures import random_color


@dataclass
class Palette:
    """The materials of one room, so that its furniture matches."""

    wood: list
    fabric: list
    metal: mt.Material
    objects: list

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Palette:
        return cls(
            wood=[mt.furniture_material(rng) for _ in range(3)],
            fabric=[mt.furniture_material(rng) if rng.random() < 0.3 else
                    mt.textured(mt.tx.noise_texture(rng, 64, cells=16, contrast=0.5), (0.3, 0.3), name="fabric")
                    for _ in range(2)],
            metal=mt.plain(random_color(rng, sat=(0.0, 0.15), val=(0.3, 0.8)), specular=0.8, shininess=64),
            objects=[mt.object_material(rng) for _ in range(5)],
        )

    def pick(self, rng, group: str):
        items = getattr(self, group)
        return items if isinstance(items, mt.Material) else items[int(rng.integers(len(items)))]


@dataclass
class Piece:
    """A composite object: its primitives, any lights it carries, and its footprint (width x, depth z)."""

    prims: list
    width: float
    depth: float
    lights: list = field(default_factory=list)
    top: float | None = None  # height of a surface that can carry small objects

    def move(self, position, yaw: float) -> None:
        frame = Frame(position, yaw)
        for p in self.prims:
            p.transform(frame.rot, frame.position)
        for light in self.lights:
            light.position = frame.rot @ light.position + frame.position


def _legs(f: Frame, w, d, h, size, mat, round_legs: bool):
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (w / 2 - size), sz * (d / 2 - size)
            if round_legs:
                f.cylinder((x, h / 2, z), size * 0.6, h / 2, mat)
            else:
                f.box((x, h / 2, z), (size / 2, h / 2, size / 2), mat)


def small_object(rng, pal: Palette, f: Frame, x: float, y: float, z: float, room: float) -> None:
    """A cup, vase, bowl, fruit, box or book stack standing at (x, y, z) with ``room`` metres of space."""
    mat = pal.pick(rng, "objects")
    kind = rng.choice(["cylinder", "sphere", "box", "books"])
    size = min(room, rng.uniform(0.05, 0.2))
    if kind == "cylinder":
        hh = rng.uniform(0.04, 0.2)
        f.cylinder((x, y + hh, z), size / 2, hh, mat)
    elif kind == "sphere":
        f.ellipsoid((x, y + size / 2, z), (size / 2,) * 3, mat)
    elif kind == "box":
        hh = rng.uniform(0.02, 0.12)
        f.box((x, y + hh, z), (size / 2, hh, size / 2 * rng.uniform(0.5, 1.0)), mat, rotation=None)
    else:
        yy = y
        for _ in range(int(rng.integers(1, 5))):
            th = rng.uniform(0.015, 0.04)
            f.box((x, yy + th / 2, z), (size / 2, th / 2, size * 0.35), pal.pick(rng, "objects"))
            yy += th


def table(rng, pal: Palette) -> Piece:
    w, d, h = rng.uniform(0.7, 1.8), rng.uniform(0.5, 1.0), rng.uniform(0.68, 0.78)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "wood")
    th = rng.uniform(0.025, 0.05)
    f.box((0, h - th / 2, 0), (w / 2, th / 2, d / 2), mat)
    _legs(f, w, d, h - th, rng.uniform(0.03, 0.06), pal.pick(rng, "wood") if rng.random() < 0.3 else mat,
          rng.random() < 0.4)
    for _ in range(int(rng.integers(0, 4))):
        small_object(rng, pal, f, rng.uniform(-w / 2 + 0.1, w / 2 - 0.1), h, rng.uniform(-d / 2 + 0.1, d / 2 - 0.1), 0.2)
    return Piece(f.prims, w, d, top=h)


def chair(rng, pal: Palette) -> Piece:
    s, h = rng.uniform(0.38, 0.5), rng.uniform(0.42, 0.48)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "wood")
    th = 0.04
    f.box((0, h - th / 2, 0), (s / 2, th / 2, s / 2), mat)
    _legs(f, s, s, h - th, 0.035, mat, rng.random() < 0.3)
    back = rng.uniform(0.35, 0.5)
    f.box((0, h + back / 2, s / 2 - 0.02), (s / 2, back / 2, 0.02), mat)
    return Piece(f.prims, s, s)


def shelf(rng, pal: Palette) -> Piece:
    w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.25, 0.4), rng.uniform(0.8, 2.1)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "wood")
    t = 0.02
    for sx in (-1, 1):
        f.box((sx * (w / 2 - t / 2), h / 2, 0), (t / 2, h / 2, d / 2), mat)
    f.box((0, h / 2, d / 2 - 0.005), (w / 2 - t, h / 2, 0.005), mat)  # back panel
    n = int(rng.integers(2, 6))
    levels = np.linspace(0.05, h - t / 2, n + 1)
    for k, y in enumerate(levels):
        f.box((0, y, 0), (w / 2 - t, t / 2, d / 2 - 0.01), mat)
        if k == n:
            break
        space = levels[k + 1] - y - t
        x = -w / 2 + t + rng.uniform(0.0, 0.2)
        while x < w / 2 - t - 0.08 and rng.random() < 0.9:
            bw, bh = rng.uniform(0.02, 0.06), min(space - 0.01, rng.uniform(0.15, 0.32))
            if bh > 0.05:
                f.box((x + bw / 2, y + t / 2 + bh / 2, 0.0), (bw / 2, bh / 2, d / 2 * rng.uniform(0.6, 0.9)),
                      pal.pick(rng, "objects"))
            x += bw + (rng.uniform(0.05, 0.3) if rng.random() < 0.15 else 0.003)
    return Piece(f.prims, w, d)


def bed(rng, pal: Palette) -> Piece:
    w, length = rng.uniform(0.9, 1.8), rng.uniform(1.9, 2.15)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "wood")
    fh, mh = rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.25)
    f.box((0, fh / 2, 0), (w / 2, fh / 2, length / 2), mat)
    f.box((0, fh + mh / 2, 0), (w / 2 - 0.02, mh / 2, length / 2 - 0.02), pal.pick(rng, "fabric"))
    head = rng.uniform(0.8, 1.2)
    f.box((0, head / 2, length / 2 + 0.03), (w / 2 + 0.03, head / 2, 0.03), mat)
    blanket = pal.pick(rng, "fabric")
    f.box((0, fh + mh + 0.02, -length / 6), (w / 2, 0.03, length / 3), blanket)
    for k in range(1 if w < 1.2 else 2):
        x = 0.0 if w < 1.2 else (k - 0.5) * w / 2
        f.ellipsoid((x, fh + mh + 0.06, length / 2 - 0.25), (min(0.3, w / 4.5), 0.07, 0.18), pal.pick(rng, "objects"))
    return Piece(f.prims, w + 0.06, length + 0.06)


def sofa(rng, pal: Palette) -> Piece:
    w, d = rng.uniform(1.4, 2.4), rng.uniform(0.8, 1.0)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "fabric")
    sh, bh, arm = rng.uniform(0.38, 0.45), rng.uniform(0.75, 0.95), rng.uniform(0.12, 0.22)
    f.box((0, sh / 2, 0), (w / 2, sh / 2, d / 2), mat)
    f.box((0, bh / 2, d / 2 - 0.1), (w / 2, bh / 2, 0.1), mat)
    for sx in (-1, 1):
        f.box((sx * (w / 2 - arm / 2), (sh + 0.2) / 2, 0), (arm / 2, (sh + 0.2) / 2, d / 2), mat)
    n = int(rng.integers(2, 4))
    cw = (w - 2 * arm) / n
    cushion = pal.pick(rng, "fabric")
    for k in range(n):
        f.box((-w / 2 + arm + cw * (k + 0.5), sh + 0.05, -0.05), (cw / 2 - 0.01, 0.05, d / 2 - 0.12), cushion)
    return Piece(f.prims, w, d)


def cabinet(rng, pal: Palette) -> Piece:
    w, d, h = rng.uniform(0.5, 1.6), rng.uniform(0.4, 0.6), rng.uniform(0.6, 1.3)
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "wood")
    f.box((0, h / 2, 0), (w / 2, h / 2, d / 2), mat)
    n = int(rng.integers(1, 5))
    front, knob = pal.pick(rng, "wood"), pal.metal
    dh = (h - 0.1) / n
    for k in range(n):
        y = 0.05 + dh * (k + 0.5)
        f.box((0, y, -d / 2 - 0.01), (w / 2 - 0.03, dh / 2 - 0.015, 0.01), front)
        f.ellipsoid((0, y, -d / 2 - 0.035), (0.02, 0.02, 0.02), knob, casts_shadow=False)
    for _ in range(int(rng.integers(0, 3))):
        small_object(rng, pal, f, rng.uniform(-w / 2 + 0.1, w / 2 - 0.1), h, rng.uniform(-d / 4, d / 4), 0.2)
    return Piece(f.prims, w, d + 0.06, top=h)


def floor_lamp(rng, pal: Palette, light_color, power: float) -> Piece:
    f = Frame((0, 0, 0))
    h, r = rng.uniform(1.3, 1.7), rng.uniform(0.15, 0.25)
    f.cylinder((0, 0.015, 0), 0.15, 0.015, pal.metal)
    f.cylinder((0, h / 2, 0), 0.015, h / 2, pal.metal)
    shade = mt.Material(np.asarray(light_color, np.float32) * 0.8, emission=np.asarray(light_color, np.float32) * 0.6,
                        name="lamp_shade")
    f.cylinder((0, h + 0.12, 0), r, 0.12, shade, casts_shadow=False)
    light = Light("point", np.asarray(light_color) * power, position=np.array([0.0, h - 0.03, 0.0]))
    return Piece(f.prims, 2 * r, 2 * r, lights=[light])


def plant(rng, pal: Palette) -> Piece:
    f = Frame((0, 0, 0))
    r, h = rng.uniform(0.1, 0.25), rng.uniform(0.2, 0.45)
    f.cylinder((0, h / 2, 0), r, h / 2, pal.pick(rng, "objects"))
    leaves = mt.foliage_material(rng)
    for _ in range(int(rng.integers(1, 4))):
        rr = rng.uniform(0.15, 0.4)
        f.ellipsoid((rng.uniform(-0.1, 0.1), h + rr * rng.uniform(0.6, 1.2), rng.uniform(-0.1, 0.1)),
                    (rr, rr * rng.uniform(0.8, 1.6), rr), leaves)
    return Piece(f.prims, 2 * max(r, 0.3), 2 * max(r, 0.3))


def clutter(rng, pal: Palette) -> Piece:
    """A crate (perhaps with something on it), a barrel or a ball on the floor."""
    f, mat = Frame((0, 0, 0)), pal.pick(rng, "objects")
    kind = rng.choice(["box", "box", "cylinder", "sphere"])
    if kind == "box":
        hx, hy, hz = rng.uniform(0.1, 0.4, 3)
        f.box((0, hy, 0), (hx, hy, hz), pal.pick(rng, "wood") if rng.random() < 0.5 else mat)
        if rng.random() < 0.4:
            small_object(rng, pal, f, 0.0, 2 * hy, 0.0, min(hx, hz) * 2)
        return Piece(f.prims, 2 * hx, 2 * hz)
    if kind == "cylinder":
        r, hh = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.5)
        f.cylinder((0, hh, 0), r, hh, mat)
        return Piece(f.prims, 2 * r, 2 * r)
    r = rng.uniform(0.08, 0.35)
    f.ellipsoid((0, r, 0), (r, r, r), mat)
    return Piece(f.prims, 2 * r, 2 * r)


# name -> (builder, stands against a wall)
BUILDERS = {
    "table": (table, False), "chair": (chair, False), "shelf": (shelf, True), "bed": (bed, True),
    "sofa": (sofa, True), "cabinet": (cabinet, True), "plant": (plant, False), "clutter": (clutter, False),
}
