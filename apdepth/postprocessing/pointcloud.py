"""Point clouds from depth maps: pinhole intrinsics (flag, field of view or EXIF), back-projection,
flying-pixel removal and coloured PLY files.

Camera convention (OpenCV): x right, y down, z forward; pixel ``(u, v)`` = (column, row) with pixel
centres at integers, principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)`` by default.
Depth is planar (distance along z), as ApDepth predicts.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..io import atomic_open

logger = logging.getLogger(__name__)

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # the 35 mm film frame: 43.27 mm
EXIF_IFD = 0x8769
EXIF_FOCAL_LENGTH_35MM = 0xA405
EXIF_FOCAL_LENGTH = 0x920A
EXIF_FOCAL_PLANE_X_RES = 0xA20E
EXIF_FOCAL_PLANE_UNIT = 0xA210
UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0}  # EXIF resolution unit -> millimetres per unit


def focal_from_fov(width: int, height: int, fov_degrees: float, axis: str = "horizontal") -> float:
    """Focal length in pixels from a field of view across the ``horizontal``, ``vertical`` or ``diagonal``."""
    if not 0 < fov_degrees < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_degrees!r}")
    extent = {"horizontal": width, "vertical": height, "diagonal": math.hypot(width, height)}.get(axis)
    if extent is None:
        raise ValueError(f"axis must be horizontal, vertical or diagonal, got {axis!r}")
    return 0.5 * extent / math.tan(math.radians(fov_degrees) / 2)


def focal_from_exif(image, width: int | None = None, height: int | None = None) -> float | None:
    """Focal length in pixels from a PIL image's EXIF, or ``None`` when it has none.

    Uses ``FocalLengthIn35mmFilm`` (scaled by the image diagonal over the 35 mm frame diagonal), else
    ``FocalLength`` with ``FocalPlaneXResolution``. ``width``/``height``: the size the focal length is
    wanted for (default: the image's own; for a resized prediction pass its size).
    """
    W0, H0 = image.size
    width, height = width or W0, height or H0
    try:
        exif = image.getexif()
        tags = dict(exif.get_ifd(EXIF_IFD))
        tags.update({k: v for k, v in exif.items() if k not in tags})
    except Exception as e:  # noqa: BLE001 - malformed EXIF: treat as absent, but say so
        logger.warning("cannot read EXIF (%s); no focal length from it", e)
        return None
    f35 = tags.get(EXIF_FOCAL_LENGTH_35MM)
    if f35 and float(f35) > 0:
        return float(f35) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    f_mm, xres, unit = tags.get(EXIF_FOCAL_LENGTH), tags.get(EXIF_FOCAL_PLANE_X_RES), tags.get(EXIF_FOCAL_PLANE_UNIT, 2)
    if f_mm and xres and float(f_mm) > 0 and float(xres) > 0 and unit in UNIT_MM:
        pixels_per_mm = float(xres) / UNIT_MM[unit]  # at the sensor's native width, assumed to be the long edge
        return float(f_mm) * pixels_per_mm * max(width, height) / max(W0, H0)
    return None


def resolve_focal(image, width: int, height: int, *, focal: float | None = None, fov: float | None = None,
                  default_fov: float = 60.0, name: str = "image") -> tuple[float, str]:
    """Focal length in pixels for a depth map ``width x height`` of ``image`` (PIL), and where it came from.

    In order: ``focal`` (pixels of ``image``, rescaled to ``width``), ``fov`` (horizontal degrees), the
    image's EXIF, else ``default_fov`` with a warning.
    """
    if focal is not None:
        if not focal > 0:
            raise ValueError(f"focal length must be > 0 pixels, got {focal!r}")
        return focal * width / image.width, f"focal {focal:g} px"
    if fov is not None:
        return focal_from_fov(width, height, fov), f"horizontal fov {fov:g} degrees"
    exif_focal = focal_from_exif(image, width, height)
    if exif_focal is not None:
        return exif_focal, "EXIF focal length"
    logger.warning("%s: no focal length given and none in EXIF; assuming a %g degree horizontal field of view",
                   name, default_fov)
    return focal_from_fov(width, height, default_fov), f"assumed horizontal fov {default_fov:g} degrees"


def backproject(depth: np.ndarray, focal: float, principal_point: tuple[float, float] | None = None,
                focal_y: float | None = None) -> np.ndarray:
    """Planar depth ``[H, W]`` -> camera-frame points ``[H, W, 3]`` (x, y, z).

    ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy``; ``principal_point = (cx, cy)`` defaults to
    the image centre; ``focal_y`` defaults to ``focal`` (square pixels).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W]; got shape {depth.shape}")
    if not focal > 0:
        raise ValueError(f"focal length must be > 0 pixels, got {focal!r}")
    H, W = depth.shape
    cx, cy = principal_point if principal_point is not None else ((W - 1) / 2.0, (H - 1) / 2.0)
    fy = focal if focal_y is None else focal_y
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - cx) * depth / focal, (v - cy) * depth / fy, depth], axis=-1)


def flying_pixel_mask(depth: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Bool ``[H, W]``: ``True`` where a pixel is kept, ``False`` for flying pixels at depth edges.

    A pixel flies when its depth differs from one of its valid 8 neighbours by more than ``threshold``
    times its own depth (a relative jump). Non-positive and non-finite depths are dropped too (and do
    not count as neighbours).
    """
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    filled = np.where(ok, depth, np.nan)
    padded = np.pad(filled, 1, mode="constant", constant_values=np.nan)
    H, W = depth.shape
    jump = np.zeros(depth.shape)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            diff = np.abs(padded[dy:dy + H, dx:dx + W] - filled)
            jump = np.maximum(jump, np.nan_to_num(diff, nan=0.0))  # invalid neighbour or pixel: no jump
    return ok & (jump <= threshold * np.where(ok, filled, 1.0))


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None, *,
              binary: bool = True, comments: list[str] | tuple[str, ...] = ()) -> None:
    """Write a point cloud PLY atomically: float32 ``x y z`` and, with ``colors``, uchar ``red green blue``.

    Args:
        points: ``[N, 3]``.
        colors: ``[N, 3]`` uint8 (or floats in [0, 1]), or ``None``.
        binary: binary little endian (default) or ASCII.
        comments: header comment lines (no newlines).
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8:
            colors = np.round(np.clip(colors.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
        colors = colors.reshape(-1, 3)
        if len(colors) != len(points):
            raise ValueError(f"colors must have one row per point ({len(points)}); got {len(colors)}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(len(points), dtype=fields)
    vertices["x"], vertices["y"], vertices["z"] = points.T
    if colors is not None:
        vertices["red"], vertices["green"], vertices["blue"] = colors.T
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    for comment in comments:
        if "\n" in comment or "\r" in comment:
            raise ValueError(f"PLY comments must be single lines; got {comment!r}")
        header.append(f"comment {comment}")
    header.append(f"element vertex {len(points)}")
    header += [f"property {'float' if t == '<f4' else 'uchar'} {name}" for name, t in fields]
    header.append("end_header")
    with atomic_open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(vertices.tobytes())
        else:
            fmt = " ".join(["%.7g"] * 3 + (["%d"] * 3 if colors is not None else []))
            table = points if colors is None else np.concatenate([points.astype(np.float64), colors], axis=1)
            np.savetxt(f, table, fmt=fmt)


def depth_to_ply(path: str | os.PathLike, depth: np.ndarray, rgb: np.ndarray, focal: float, *,
                 edge_threshold: float | None = 0.05, binary: bool = True,
                 comments: list[str] | tuple[str, ...] = ()) -> int:
    """Back-project ``depth`` ``[H, W]`` with colours ``rgb`` ``[H, W, 3]`` uint8 and write a PLY.

    ``edge_threshold``: drop flying pixels (see :func:`flying_pixel_mask`); ``None`` keeps every pixel
    with a positive depth. Returns the number of points written.
    """
    depth = np.asarray(depth)
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != depth.shape or rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"rgb must be [H, W, 3] matching depth {depth.shape}; got {rgb.shape}")
    if edge_threshold is None:
        keep = np.isfinite(depth) & (depth > 0)
    else:
        keep = flying_pixel_mask(depth, edge_threshold)
    points = backproject(depth, focal)[keep]  # [N, 3]
    header = [*comments, f"intrinsics: focal {focal:.6g} px, principal point at the image centre, "
              f"image {depth.shape[1]}x{depth.shape[0]}; OpenCV camera frame (x right, y down, z forward)"]
    write_ply(path, points, rgb[..., :3][keep], binary=binary, comments=header)
    return int(keep.sum())
