"""Encodings of the data sets' files: 16-bit depth PNGs in each set's unit, RGB PNG/JPEG, ``.npy``, simulated
sensor holes (Kinect-like for NYU, projected LiDAR for KITTI) and deterministic tar archives. The one set of
file writers for generated data: the synthetic data sets, the evaluation's fidelity scenes and the test
fixtures (:mod:`apdepth.testing.fixtures`)."""

from __future__ import annotations

import io
import math
import tarfile

import numpy as np
from PIL import Image

from .camera import Camera

UINT16_MAX = 65535


def metres_to_uint16(depth_m: np.ndarray, units_per_metre: float, invalid: int = 0,
                    overflow: int | None = None) -> np.ndarray:
    """Metric depth ``[H, W]`` -> uint16 ``round(depth * units_per_metre)``.

    Pixels that are not finite or <= 0 get ``invalid``; values too large for uint16 get ``overflow``
    (default: ``invalid``). VKITTI uses ``invalid = overflow = 65535`` for the sky.
    """
    overflow = invalid if overflow is None else overflow
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.round(depth_m.astype(np.float64) * units_per_metre)
    out = np.where(np.isfinite(scaled) & (scaled > 0), np.minimum(scaled, UINT16_MAX), invalid)
    out = np.where(np.isfinite(scaled) & (scaled > UINT16_MAX), overflow, out)
    return out.astype(np.uint16)


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 ``[H, W, 3]`` or uint16 ``[H, W]`` -> PNG bytes (uint16 as 16-bit greyscale)."""
    if array.dtype == np.uint16 and array.ndim != 2:
        raise ValueError(f"uint16 images must be 2-D, got shape {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def jpg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    """uint8 ``[H, W, 3]`` -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """Any array -> the bytes of its ``.npy`` file (as ``np.save`` writes it)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def kinect_holes(depth_m: np.ndarray, rng: np.random.Generator, max_range: float = 10.0) -> np.ndarray:
    """bool ``[H, W]``: pixels a Kinect-like sensor would miss: out of range, and a strip on the far side of
    depth edges (the projector's shadow), with random gaps."""
    far = ~np.isfinite(depth_m) | (depth_m > max_range)
    d = np.where(np.isfinite(depth_m), depth_m, max_range * 2)
    jump = np.zeros_like(far)
    # a pixel right of a step towards the far side is in the projector's shadow (projector left of the camera)
    step = d[:, 1:] - d[:, :-1] > 0.04 * d[:, 1:]
    width = d.shape[1]
    for k in range(1, 4):  # step[:, j] puts pixels j+1 .. j+3 in shadow
        jump[:, k:] |= step[:, : width - k]
    jump &= rng.random(d.shape) < 0.7
    return far | jump


def lidar_mask(camera: Camera, depth_m: np.ndarray, rng: np.random.Generator, beams: int = 64,
               elev_range_deg: tuple[float, float] = (-24.8, 2.0), keep: float = 0.5,
               max_range: float = 120.0) -> np.ndarray:
    """bool ``[H, W]``: pixels with a projected LiDAR return, like KITTI's sparse ground truth.

    The ``beams`` scan lines are evenly spaced in elevation (world-horizontal, as a level roof scanner);
    a pixel is on a line when its ray elevation lies in the first 40% of a beam interval; ``keep`` of
    those survive (misses, accumulation gaps); no returns from the sky or beyond ``max_range`` metres.
    """
    d = camera.ray_directions()  # [3, H, W]
    elev = np.degrees(np.arcsin(d[1] / np.sqrt((d * d).sum(0))))
    lo, hi = elev_range_deg
    spacing = (hi - lo) / (beams - 1)
    phase = (elev - lo) / spacing + rng.uniform(0, 1)
    on_line = (phase % 1.0 < 0.4) & (elev >= lo - spacing / 2) & (elev <= hi + spacing / 2)
    ray_len = depth_m * np.sqrt((d * d).sum(0))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth_m) & (ray_len < max_range)
    return on_line & ok & (rng.random(depth_m.shape) < keep)


class TarWriter:
    """Writes members in order with fixed metadata (mtime 0, root owner), names prefixed ``prefix`` (``./``
    as Marigold's archives; ``""`` for bare names), parent folders added first: the same inputs give
    byte-identical archives. ``fileobj`` may be a ``gzip.GzipFile`` (with ``mtime=0`` to stay deterministic)."""

    def __init__(self, fileobj, prefix: str = "./"):
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"a tar member prefix must be empty or end with '/', got {prefix!r}")
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)
        self.prefix = prefix
        self.dirs: set[str] = set()
        if prefix:
            self._add_dir(prefix.rstrip("/"))

    def _info(self, name: str, size: int, is_dir: bool) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        info.mode = 0o755 if is_dir else 0o644
        return info

    def _add_dir(self, name: str) -> None:
        if name not in self.dirs:
            self.dirs.add(name)
            self.tar.addfile(self._info(name, 0, True))

    def add(self, rel: str, data: bytes) -> None:
        parts = rel.split("/")
        for k in range(1, len(parts)):
            self._add_dir(self.prefix + "/".join(parts[:k]))
        self.tar.addfile(self._info(self.prefix + rel, len(data), False), io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()


def focal_text(f: float) -> str:
    """The focal length field of a KITTI split line (4 decimals, like ``721.5377``)."""
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"focal length must be positive and finite, got {f}")
    return f"{f:.4f}"
