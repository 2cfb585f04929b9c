"""Building blocks shared by the scene samplers: a local frame for composite objects and a 2-D
footprint map that keeps furniture, cars and the camera from overlapping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .geometry import Box, Cylinder, Ellipsoid, rot_y


@dataclass
class Frame:
    """A local frame on the ground: origin ``position`` ``[3]`` and heading ``yaw`` (radians about y).

    Composite objects (a table, a car) are written in this frame: x across, y up, z depth.
    """

    position: np.ndarray
    yaw: float = 0.0
    prims: list = field(default_factory=list)

    def __post_init__(self):
        self.position = np.asarray(self.position, dtype=np.float64)
        self.rot = rot_y(self.yaw)

    def world(self, p) -> np.ndarray:
        return self.rot @ np.asarray(p, dtype=np.float64) + self.position

    def box(self, center, half, materials, rotation=None, **kw) -> Box:
        r = self.rot if rotation is None else self.rot @ rotation
        prim = Box(self.world(center), r, materials, half=tuple(half), **kw)
        self.prims.append(prim)
        return prim

    def cylinder(self, center, radius, half_height, materials, rotation=None, **kw) -> Cylinder:
        r = self.rot if rotation is None else self.rot @ rotation
        prim = Cylinder(self.world(center), r, materials, radius=radius, half_height=half_height, **kw)
        self.prims.append(prim)
        return prim

    def ellipsoid(self, center, radii, materials, rotation=None, **kw) -> Ellipsoid:
        r = self.rot if rotation is None else self.rot @ rotation
        prim = Ellipsoid(self.world(center), r, materials, radii=tuple(radii), **kw)
        self.prims.append(prim)
        return prim


class Footprints:
    """Axis-aligned rectangles on the ground plane (x, z) already taken."""

    def __init__(self):
        self.rects: list[tuple[float, float, float, float]] = []  # x0, x1, z0, z1

    @staticmethod
    def rect(x: float, z: float, width: float, depth: float, yaw: float, margin: float = 0.0):
        """Bounding rectangle of a ``width x depth`` footprint centred at (x, z) turned by ``yaw``."""
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        hx = 0.5 * (width * c + depth * s) + margin
        hz = 0.5 * (width * s + depth * c) + margin
        return x - hx, x + hx, z - hz, z + hz

    def free(self, rect) -> bool:
        x0, x1, z0, z1 = rect
        return all(x1 <= a0 or x0 >= a1 or z1 <= b0 or z0 >= b1 for a0, a1, b0, b1 in self.rects)

    def add(self, rect) -> None:
        self.rects.append(rect)

    def contains(self, x: float, z: float, margin: float = 0.0) -> bool:
        return any(a0 - margin <= x <= a1 + margin and b0 - margin <= z <= b1 + margin for a0, a1, b0, b1 in self.rects)


def seed_rng(*keys: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative integers (seed, stream, scene, frame, ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))
