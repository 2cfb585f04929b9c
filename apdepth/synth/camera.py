"""A pinhole camera and its primary rays.

World frame: y up (metres). Camera frame: OpenCV convention, x right, y down, z forward.
Primary ray directions are scaled so that their camera-frame z component is 1: the ray parameter
``t`` of a hit is then directly the **planar depth** (z-depth along the optical axis), the quantity
Hypersim's ``depth_plane`` and the benchmarks store; the Euclidean ray length is ``t * |d|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole camera.

    Attributes:
        height, width: image size in pixels.
        fx, fy, cx, cy: intrinsics in pixels; pixel ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``.
        position: camera centre in world coordinates, shape ``[3]``.
        rotation: camera-to-world rotation, ``[3, 3]``; its columns are the camera x, y, z axes in the world.
    """

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: np.ndarray
    rotation: np.ndarray

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f"Camera size must be positive, got {self.height}x{self.width}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"Camera focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def forward(self) -> np.ndarray:
        """Optical axis in world coordinates, ``[3]`` (unit)."""
        return self.rotation[:, 2]

    def ray_directions(self) -> np.ndarray:
        """World-space directions of the pixel-centre rays, float32 ``[3, H, W]``, camera-frame z = 1."""
        cols = (np.arange(self.width, dtype=np.float64) + 0.5 - self.cx) / self.fx
        rows = (np.arange(self.height, dtype=np.float64) + 0.5 - self.cy) / self.fy
        r = self.rotation
        # d_world = R @ (x, y, 1): separable in x (columns) and y (rows).
        d = (r[:, 0, None, None] * cols[None, None, :] + r[:, 1, None, None] * rows[None, :, None]
             + r[:, 2, None, None])
        return d.astype(np.float32)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points ``[3, ...]`` -> (col, row, z) with continuous pixel coordinates (centres at +0.5)."""
        p = np.tensordot(self.rotation.T, points - self.position.reshape((3,) + (1,) * (points.ndim - 1)), axes=1)
        z = p[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return p[0] / z * self.fx + self.cx, p[1] / z * self.fy + self.cy, z

    def screen_rect(self, center: np.ndarray, radius: float, near: float = 1e-3) -> tuple[int, int, int, int] | None:
        """Conservative pixel rectangle ``(row0, row1, col0, col1)`` (exclusive ends) covering a sphere.

        None if the sphere is entirely behind the camera; the whole image if it crosses the near plane.
        """
        c = self.rotation.T @ (np.asarray(center, dtype=np.float64) - self.position)
        if c[2] + radius <= near:
            return None
        if c[2] - radius <= near:
            return 0, self.height, 0, self.width
        corners = c[:, None] + radius * np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1)
        u = corners[0] / corners[2] * self.fx + self.cx
        v = corners[1] / corners[2] * self.fy + self.cy
        c0, c1 = max(0, math.floor(u.min())), min(self.width, math.ceil(u.max()) + 1)
        r0, r1 = max(0, math.floor(v.min())), min(self.height, math.ceil(v.max()) + 1)
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1


def rotation_from_angles(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation for a camera with the world's y up.

    yaw: radians about the world y axis (0 looks along world +z, positive turns towards +x);
    pitch: radians, positive looks up; roll: radians about the optical axis.
    """
    forward = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.array([-math.cos(yaw), 0.0, math.sin(yaw)])  # forward x world-up, normalised
    down = np.cross(forward, right)  # right x down = forward: a right-handed camera frame
    if roll:
        c, s = math.cos(roll), math.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward], axis=1)


def camera_from_fov(height: int, width: int, hfov_deg: float, position, yaw: float, pitch: float,
                    roll: float = 0.0) -> Camera:
    """A camera with square pixels, the principal point at the image centre and horizontal FOV ``hfov_deg``."""
    if not 1.0 < hfov_deg < 179.0:
        raise ValueError(f"hfov_deg must be in (1, 179) degrees, got {hfov_deg}")
    f = width / 2.0 / math.tan(math.radians(hfov_deg) / 2.0)
    return Camera(height, width, f, f, width / 2.0, height / 2.0, np.asarray(position, dtype=np.float64),
                  rotation_from_angles(yaw, pitch, roll))


def camera_from_focal(height: int, width: int, focal: float, position, yaw: float, pitch: float,
                      roll: float = 0.0) -> Camera:
    """As :func:`camera_from_fov`, with the focal length in pixels."""
    return Camera(height, width, focal, focal, width / 2.0, height / 2.0, np.asarray(position, dtype=np.float64),
                  rotation_from_angles(yaw, pitch, roll))
