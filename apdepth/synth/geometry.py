"""Analytic primitives: quads / infinite planes, oriented boxes, ellipsoids (spheres) and capped cylinders.

Rays come as structure-of-arrays: origins ``o`` of shape ``[3]`` (one shared origin) or ``[3, ...]``
and directions ``d`` of shape ``[3, ...]`` (not necessarily unit length). :meth:`Primitive.intersect`
returns the ray parameter ``t`` of the nearest hit with ``t_min < t < t_max`` (``inf`` where none),
so hit points are ``o + t * d``. Every primitive is placed by a local-to-world rotation ``rotation``
``[3, 3]`` and a centre ``center`` ``[3]``; its shape is canonical in its local frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

INF = np.float32(np.inf)


def apply_rotation(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``r`` ``[3, 3]`` applied to the vectors ``v`` ``[3, ...]`` (one matrix product; cheaper than tensordot)."""
    return (r @ v.reshape(3, -1)).reshape(v.shape)


def _as_rot(rotation) -> np.ndarray:
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3):
        raise ValueError(f"rotation must be a 3x3 matrix, got shape {r.shape}")
    return r


def rot_y(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the world y (up) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(eq=False)
class Primitive:
    """Base class. ``materials`` holds one material per face kind (see each subclass's ``faces``);
    a single material is used for every face. ``casts_shadow`` False leaves it out of shadow rays."""

    center: Any
    rotation: Any = None
    materials: tuple = ()
    casts_shadow: bool = True
    faces: int = field(default=1, init=False, repr=False)

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.float64).reshape(3)
        self.rotation = _as_rot(self.rotation)
        self._rt = self.rotation.T.astype(np.float32)  # world -> local
        self._c32 = self.center.astype(np.float32)
        if not isinstance(self.materials, tuple):
            self.materials = (self.materials,)

    def transform(self, rotation: np.ndarray, translation) -> None:
        """Move rigidly: ``x -> rotation @ x + translation`` (in place)."""
        rotation = _as_rot(rotation)
        self.center = rotation @ self.center + np.asarray(translation, dtype=np.float64)
        self.rotation = rotation @ self.rotation
        self._rt = self.rotation.T.astype(np.float32)
        self._c32 = self.center.astype(np.float32)

    def material(self, face: int):
        return self.materials[face if len(self.materials) > 1 else 0]

    # ---------------------------------------------------------------- to implement
    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def intersect(self, o: np.ndarray, d: np.ndarray, t_min: float = 1e-4, t_max=INF) -> np.ndarray:
        raise NotImplementedError

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hit points ``[3, N]`` -> (outward normals ``[3, N]`` unit, uv ``[2, N]`` in metres, face ``[N]`` int)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def _local_o(self, o: np.ndarray, ndim: int) -> np.ndarray:
        o = np.asarray(o, dtype=np.float32)
        if o.ndim == 1:
            return (self._rt @ (o - self._c32)).reshape((3,) + (1,) * (ndim - 1))
        return apply_rotation(self._rt, o - self._c32.reshape((3,) + (1,) * (o.ndim - 1)))

    def _local(self, o, d):
        return self._local_o(o, d.ndim), apply_rotation(self._rt, d)

    def _local_points(self, p: np.ndarray) -> np.ndarray:
        """World points ``[3, N]`` -> local coordinates ``[3, N]``."""
        return self._rt @ (p - self._c32[:, None])

    def _world_normal(self, n_local: np.ndarray) -> np.ndarray:
        n = self.rotation.astype(np.float32) @ n_local
        return n / np.maximum(np.sqrt((n * n).sum(0)), 1e-12)


def _select(t_lo, t_hi, t_min, t_max):
    """The nearest root inside (t_min, t_max), else inf."""
    t = np.where(t_lo > t_min, t_lo, t_hi)
    return np.where((t > t_min) & (t < t_max), t, INF)


@dataclass(eq=False)
class Quad(Primitive):
    """A rectangle in its local xy plane (normal = local z), half sizes ``half`` (inf = infinite plane).
    uv = local (x, y) in metres, from the rectangle's corner along finite sides. Double sided."""

    half: tuple[float, float] = (math.inf, math.inf)

    def bounding_sphere(self):
        return self.center, float(math.hypot(*self.half))

    def intersect(self, o, d, t_min=1e-4, t_max=INF):
        o_l, d_l = self._local(o, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o_l[2] / d_l[2]
        ok = (t > t_min) & (t < t_max)
        hx, hy = self.half
        if math.isfinite(hx):
            ok &= np.abs(o_l[0] + t * d_l[0]) <= hx
        if math.isfinite(hy):
            ok &= np.abs(o_l[1] + t * d_l[1]) <= hy
        return np.where(ok, t, INF).astype(np.float32)

    def surface(self, p):
        p_l = self._local_points(p)
        n = np.repeat(self.rotation[:, 2:3].astype(np.float32), p.shape[1], axis=1)
        offset = np.array([h if math.isfinite(h) else 0.0 for h in self.half], np.float32)[:, None]
        return n, p_l[:2] + offset, np.zeros(p.shape[1], dtype=np.int64)


@dataclass(eq=False)
class Box(Primitive):
    """An oriented box with half extents ``half`` along its local axes. Faces: ``2 * axis + (side > 0)``
    (0/1: -x/+x, 2/3: -y/+y, 4/5: -z/+z). A ray starting inside hits the far wall (rooms)."""

    half: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        super().__post_init__()
        self.faces = 6
        self._h = np.asarray(self.half, dtype=np.float32).reshape(3, *(1,))
        if np.any(self._h <= 0):
            raise ValueError(f"Box half extents must be positive, got {self.half}")

    def bounding_sphere(self):
        return self.center, float(np.linalg.norm(self.half))

    def intersect(self, o, d, t_min=1e-4, t_max=INF):
        o_l, d_l = self._local(o, d)
        h = self._h.reshape((3,) + (1,) * (d.ndim - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d_l
            t1 = (-h - o_l) * inv
            t2 = (h - o_l) * inv
        t_near = np.fmax(np.fmax(np.fmin(t1[0], t2[0]), np.fmin(t1[1], t2[1])), np.fmin(t1[2], t2[2]))
        t_far = np.fmin(np.fmin(np.fmax(t1[0], t2[0]), np.fmax(t1[1], t2[1])), np.fmax(t1[2], t2[2]))
        t = _select(t_near, t_far, t_min, t_max)
        return np.where(t_near <= t_far, t, INF).astype(np.float32)

    def surface(self, p):
        p_l = self._local_points(p)
        h = self._h.reshape(3, 1)
        axis = np.argmax(np.abs(p_l) / h, axis=0)  # [N]: the face the point lies on
        cols = np.arange(p.shape[1])
        sign = np.sign(p_l[axis, cols])
        sign[sign == 0] = 1
        n_local = np.zeros_like(p_l)
        n_local[axis, cols] = sign
        # uv: the two other local coordinates (offset by the half size so textures start at a corner)
        u_axis = np.where(axis == 0, 2, 0)
        v_axis = np.where(axis == 1, 2, 1)
        uv = np.stack([p_l[u_axis, cols] + h[u_axis, 0], p_l[v_axis, cols] + h[v_axis, 0]])
        face = 2 * axis + (sign > 0)
        return self._world_normal(n_local), uv, face


@dataclass(eq=False)
class Ellipsoid(Primitive):
    """An ellipsoid with semi-axes ``radii`` along its local axes (a sphere when all are equal).
    uv: longitude and latitude times the mean radius (metres along the surface)."""

    radii: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        super().__post_init__()
        self._s = np.asarray(self.radii, dtype=np.float32)
        if np.any(self._s <= 0):
            raise ValueError(f"Ellipsoid radii must be positive, got {self.radii}")

    def bounding_sphere(self):
        return self.center, float(max(self.radii))

    def intersect(self, o, d, t_min=1e-4, t_max=INF):
        o_l, d_l = self._local(o, d)
        s = self._s.reshape((3,) + (1,) * (d.ndim - 1))
        o_l, d_l = o_l / s, d_l / s
        a = (d_l * d_l).sum(0)
        b = (o_l * d_l).sum(0)
        c = (o_l * o_l).sum(0) - 1.0
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            root = np.sqrt(disc)
            t = _select((-b - root) / a, (-b + root) / a, t_min, t_max)
        return np.where(disc >= 0, t, INF).astype(np.float32)

    def surface(self, p):
        p_l = self._local_points(p)
        s = self._s[:, None]
        q = p_l / s  # on the unit sphere
        r_mean = float(self._s.mean())
        uv = np.stack([np.arctan2(q[0], q[2]) * r_mean, np.arccos(np.clip(q[1], -1, 1)) * r_mean])
        return self._world_normal(q / s), uv, np.zeros(p.shape[1], dtype=np.int64)


def Sphere(center, radius: float, **kwargs) -> Ellipsoid:  # noqa: N802 - reads as a constructor
    return Ellipsoid(center, radii=(radius, radius, radius), **kwargs)


@dataclass(eq=False)
class Cylinder(Primitive):
    """A capped cylinder along its local y axis: ``radius``, ``half_height``. Faces: 0 side, 1 bottom, 2 top.
    uv: side (arc length, height), caps (local x, z)."""

    radius: float = 0.5
    half_height: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        self.faces = 3
        if self.radius <= 0 or self.half_height <= 0:
            raise ValueError(f"Cylinder radius and half_height must be positive, got {self.radius}, {self.half_height}")

    def bounding_sphere(self):
        return self.center, float(math.hypot(self.radius, self.half_height))

    def intersect(self, o, d, t_min=1e-4, t_max=INF):
        o_l, d_l = self._local(o, d)
        r, h = np.float32(self.radius), np.float32(self.half_height)
        ox, oy, oz = o_l
        dx, dy, dz = d_l
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        c = ox * ox + oz * oz - r * r
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            root = np.sqrt(disc)  # nan where the infinite cylinder is missed: every comparison below is False
            inv_a = 1.0 / a
            best = np.full(d.shape[1:], INF, dtype=np.float32)
            for t_side in ((-b - root) * inv_a, (-b + root) * inv_a):
                ok = (t_side > t_min) & (t_side < best) & (np.abs(oy + t_side * dy) <= h)
                np.copyto(best, t_side, where=ok)
            inv_dy = 1.0 / dy
            for y_cap in (-h, h):
                t_cap = (y_cap - oy) * inv_dy
                x, z = ox + t_cap * dx, oz + t_cap * dz
                ok = (t_cap > t_min) & (t_cap < best) & (x * x + z * z <= r * r)
                np.copyto(best, t_cap, where=ok)
        best[best >= t_max] = INF
        return best

    def surface(self, p):
        p_l = self._local_points(p)
        rho = np.sqrt(p_l[0] ** 2 + p_l[2] ** 2)
        on_cap = np.abs(p_l[1]) / self.half_height > rho / self.radius
        n_local = np.where(on_cap, np.stack([0 * rho, np.sign(p_l[1]), 0 * rho]),
                           np.stack([p_l[0], 0 * rho, p_l[2]]) / np.maximum(rho, 1e-9))
        uv = np.where(on_cap, np.stack([p_l[0], p_l[2]]),
                      np.stack([np.arctan2(p_l[0], p_l[2]) * self.radius, p_l[1] + self.half_height]))
        face = np.where(on_cap, np.where(p_l[1] > 0, 2, 1), 0)
        return self._world_normal(n_local.astype(np.float32)), uv, face
