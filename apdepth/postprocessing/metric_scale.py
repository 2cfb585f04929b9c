"""Metric scale from sparse known depths (LiDAR, SfM points, a few measurements).

ApDepth predicts affine-invariant depth: the true depth is ``scale * depth + shift`` for unknown
``scale`` and ``shift``. A handful of known depths fixes both. :func:`align_to_metric` fits them
robustly (RANSAC, then IRLS with a Tukey or Huber loss on relative residuals, so wrong LiDAR returns
and moving objects are rejected as outliers) and returns metric depth with the fit.

Sparse depths come as a depth map the size of the image or any size of the same aspect (zeros and
non-finite values invalid, e.g. projected LiDAR) or as a list of ``(u, v, depth)`` points, where
``u`` is the column and ``v`` the row in pixels of the image (pixel centres at integers).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.alignment import SPACES
from .affine import LOSSES, robust_fit_affine

logger = logging.getLogger(__name__)

SPARSE_EXTENSIONS = (".npy", ".csv", ".txt", ".png", ".tif", ".tiff")


@dataclass
class SparseDepth:
    """Known metric depths at pixel positions.

    Attributes:
        u, v: float ``[N]`` column and row (pixel centres at integers).
        depth: float ``[N]`` metric depth (> 0).
        size: ``(H, W)`` of the image the coordinates refer to; ``None``: the prediction's own size.
    """

    u: np.ndarray
    v: np.ndarray
    depth: np.ndarray
    size: tuple[int, int] | None = None

    def __post_init__(self):
        self.u, self.v, self.depth = (np.asarray(a, dtype=np.float64).ravel() for a in (self.u, self.v, self.depth))
        if not (self.u.shape == self.v.shape == self.depth.shape):
            raise ValueError(f"u, v and depth must have the same length; got {self.u.size}, {self.v.size}, "
                             f"{self.depth.size}")

    @classmethod
    def from_map(cls, depth_map: np.ndarray) -> SparseDepth:
        """A sparse depth map ``[H, W]`` (values <= 0 or non-finite are invalid) -> its valid points."""
        depth_map = np.asarray(depth_map)
        if depth_map.ndim != 2:
            raise ValueError(f"a sparse depth map must be 2-D [H, W]; got shape {depth_map.shape}")
        depth_map = depth_map.astype(np.float64)
        v, u = np.nonzero(np.isfinite(depth_map) & (depth_map > 0))
        return cls(u, v, depth_map[v, u], size=depth_map.shape)

    @classmethod
    def from_points(cls, points: np.ndarray, size: tuple[int, int] | None = None) -> SparseDepth:
        """``[N, 3]`` rows of ``(u, v, depth)``."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"sparse points must be [N, 3] rows of (u, v, depth); got shape {points.shape}")
        return cls(points[:, 0], points[:, 1], points[:, 2], size=size)


@dataclass
class MetricAlignment:
    """Metric depth and the fit that produced it.

    ``depth_metric`` is float32 ``[H, W]`` in the sparse depths' unit (metres for LiDAR).
    ``space`` says what was fitted: ``depth`` (``depth_metric = scale * relative + shift``) or
    ``disparity`` (``1 / depth_metric = scale * relative + shift``). ``inlier_mask`` is per sparse
    point that fell inside the image.
    """

    depth_metric: np.ndarray
    scale: float
    shift: float
    space: str
    num_points: int
    num_inliers: int
    inlier_mask: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"space": self.space, "scale": self.scale, "shift": self.shift,
                "num_points": self.num_points, "num_inliers": self.num_inliers}


def load_sparse_depth(path: str | os.PathLike, *, depth_scale: float = 1.0) -> SparseDepth:
    """Read sparse depths from a file.

    * ``.npy``: a 2-D depth map ``[H, W]`` (zeros invalid) or ``[N, 3]`` ``(u, v, depth)`` rows.
    * ``.csv`` / ``.txt``: ``u, v, depth`` per line (comma or white space; a header line is skipped).
    * ``.png`` / ``.tif``: a (16-bit) sparse depth map, zeros invalid (KITTI style: ``depth_scale=1/256``).

    ``depth_scale`` multiplies the depths read (e.g. ``0.001`` for millimetres).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sparse depth file")
    if suffix not in SPARSE_EXTENSIONS:
        raise ValueError(f"{path}: unsupported sparse depth file; use one of {', '.join(SPARSE_EXTENSIONS)}")
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        sparse = SparseDepth.from_points(arr) if arr.ndim == 2 and arr.shape[1] == 3 and arr.shape[0] != 3 \
            else SparseDepth.from_map(arr)
    elif suffix in (".csv", ".txt"):
        sparse = SparseDepth.from_points(_read_point_table(path))
    else:
        from PIL import Image

        with Image.open(path) as img:
            sparse = SparseDepth.from_map(np.asarray(img))
    if depth_scale != 1.0:
        sparse.depth = sparse.depth * depth_scale
    if sparse.depth.size == 0:
        raise ValueError(f"{path}: no valid sparse depths (all zero or non-finite)")
    return sparse


def _read_point_table(path: Path) -> np.ndarray:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows:  # a header line
                continue
            raise ValueError(f"{path}:{n}: expected numbers 'u, v, depth', got {line!r}") from None
        if len(values) != 3:
            raise ValueError(f"{path}:{n}: expected 3 values 'u, v, depth', got {len(values)}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def sample_at_points(image: np.ndarray, sparse: SparseDepth) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-pixel values of ``image`` ``[H, W]`` at the sparse points (coordinates rescaled when the
    points refer to another size). Returns ``(values [M], index [M])``: the points inside the image."""
    H, W = image.shape
    u, v = sparse.u, sparse.v
    if sparse.size is not None and tuple(sparse.size) != (H, W):
        sh, sw = sparse.size
        if abs(sh / sw - H / W) > 0.02 * H / W:
            logger.warning("sparse depth map is %dx%d but the prediction is %dx%d (another aspect ratio); "
                           "stretching the coordinates", sw, sh, W, H)
        u = (u + 0.5) * (W / sw) - 0.5
        v = (v + 0.5) * (H / sh) - 0.5
    col, row = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H) & np.isfinite(sparse.depth) & (sparse.depth > 0)
    if not inside.all():
        logger.warning("%d of %d sparse depths lie outside the %dx%d image or are not positive; ignored",
                       int((~inside).sum()), inside.size, W, H)
    index = np.flatnonzero(inside)
    return image[row[index], col[index]], index


def align_to_metric(
    relative: np.ndarray,
    sparse: SparseDepth | np.ndarray,
    *,
    space: str = "depth",
    loss: str = "tukey",
    threshold: float | None = None,
    ransac_iterations: int = 200,
    max_depth: float | None = None,
    seed: int = 0,
) -> MetricAlignment:
    """Align a relative map to metric depth with sparse known depths.

    Args:
        relative: float ``[H, W]``: ApDepth's affine-invariant depth (``space="depth"``) or an
            affine-invariant disparity such as the prior's (``space="disparity"``).
        sparse: :class:`SparseDepth`, or a sparse depth map ``[H', W']`` (zeros invalid).
        space: ``depth``: fit ``metric = scale * relative + shift``; ``disparity``: fit
            ``1 / metric = scale * relative + shift``.
        loss: IRLS loss, ``tukey`` or ``huber``.
        threshold: inlier threshold on the relative error (0.1 = 10%); ``None``: from the data (3
            robust standard deviations of the best RANSAC model).
        ransac_iterations: two-point RANSAC samples.
        max_depth: clip for the result; ``None``: 10x the largest known depth. The lower clip is
            1e-6 x that (depth can never be 0 or negative).
        seed: RANSAC seed (the result is deterministic).

    Returns:
        :class:`MetricAlignment`.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    relative = np.asarray(relative, dtype=np.float64)
    if relative.ndim != 2:
        raise ValueError(f"relative must be a 2-D map [H, W]; got shape {relative.shape}")
    if not isinstance(sparse, SparseDepth):
        sparse = SparseDepth.from_map(sparse)
    rel_at, index = sample_at_points(relative, sparse)
    known = sparse.depth[index]
    if known.size < 2:
        raise ValueError(f"metric alignment needs at least 2 known depths inside the image; got {known.size}")
    target = known if space == "depth" else 1.0 / known
    fit = robust_fit_affine(rel_at, target, residual="relative", loss=loss, threshold=threshold,
                            ransac_iterations=ransac_iterations, seed=seed)
    depth_metric = _to_metric(fit.apply(relative), space, 10.0 * float(known.max()) if max_depth is None else max_depth)
    if fit.scale <= 0:
        logger.warning("metric alignment found a non-positive scale (%.4g): the sparse depths disagree with "
                       "the prediction's ordering; check that they belong to this image", fit.scale)
    logger.info("metric alignment (%s space): scale %.6g, shift %.6g, %d of %d points inliers",
                space, fit.scale, fit.shift, fit.num_inliers, fit.num_points)
    inliers = np.zeros(sparse.depth.size, dtype=bool)
    inliers[index] = fit.inlier_mask
    return MetricAlignment(depth_metric.astype(np.float32), fit.scale, fit.shift, space, int(known.size),
                           fit.num_inliers, inliers)


def _to_metric(fitted: np.ndarray, space: str, max_depth: float) -> np.ndarray:
    """The fitted map (depth, or disparity with ``space="disparity"``) as depth in ``[1e-6 * max_depth, max_depth]``."""
    min_depth = 1e-6 * max_depth
    if space == "depth":
        return np.clip(fitted, min_depth, max_depth)
    return 1.0 / np.clip(fitted, 1.0 / max_depth, 1.0 / min_depth)
