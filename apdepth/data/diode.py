"""DIODE validation set, indoor and outdoor (771 frames, ``diode_val.tar``).

Split line: ``<indoors|outdoor>/scene_X/scan_Y/<name>.png <...>/<name>_depth.npy <...>/<name>_depth_mask.npy``.
Depth: ``.npy`` in metres (``[H, W, 1]``). Which pixels are valid is chosen by ``mask``:

- ``"paper"`` (default): the ApDepth paper (Sec. 4.2) and the authors' released evaluation code: the
  provided mask AND the Sobel edge mask AND 0.6 <= d <= 350 m AND finite. The edge mask keeps pixels
  where ``|sobel_0| + |sobel_1| <= 0.3`` on the full-resolution metric ground truth (float32), computed
  as ``scipy.ndimage.sobel`` computes it (unnormalised 3x3 kernels, borders mirrored), removing the
  discontinuities where DIODE's scans are ambiguous. Table 1's DIODE column uses this mask.
- ``"marigold"``: Marigold's evaluation code: the provided mask and nothing else (no range check).
  Pixels inside it whose depth is not finite or not > 0 are also left out; on them Marigold's
  metrics would be infinite or NaN, so on every sample where Marigold's numbers are finite the two agree.
- ``"range"``: the paper's mask without the Sobel part (provided mask AND 0.6 <= d <= 350 AND finite).
"""

from __future__ import annotations

import numpy as np

from .base import DepthDataset

SOBEL_THRESHOLD = 0.3
DIODE_MASKS = ("paper", "marigold", "range")


def _sobel_axis(padded: np.ndarray, axis: int) -> np.ndarray:
    """``scipy.ndimage.sobel(depth, axis)`` for float32 ``depth`` given mirrored ``padded`` (float64,
    ``[H+2, W+2]``): the derivative ``[-1, 0, 1]`` along ``axis``, rounded to float32, then the smoothing
    ``[1, 2, 1]`` along the other axis, rounded to float32. Each pass adds its terms in float64 in the
    order ndimage does (centre tap first), so the result is bit-identical; a non-finite centre value
    propagates through its zero-weight tap, as there."""
    if axis == 0:
        centre, before, after = padded[1:-1, :], padded[:-2, :], padded[2:, :]  # [H, W+2] each
    else:
        centre, before, after = padded[:, 1:-1], padded[:, :-2], padded[:, 2:]  # [H+2, W] each
    deriv = (centre * 0.0 + (before - after) * -1.0).astype(np.float32).astype(np.float64)
    if axis == 0:
        smooth = deriv[:, 1:-1] * 2.0 + (deriv[:, :-2] + deriv[:, 2:]) * 1.0  # [H, W]
    else:
        smooth = deriv[1:-1, :] * 2.0 + (deriv[:-2, :] + deriv[2:, :]) * 1.0  # [H, W]
    return smooth.astype(np.float32)


def sobel_magnitude(depth: np.ndarray) -> np.ndarray:
    """``|sobel_0| + |sobel_1|`` (float32 ``[H, W]``) of ``[H, W]`` depth, as the authors' code computes it
    with ``scipy.ndimage.sobel`` on float32 (borders mirrored with the edge pixel repeated,
    ``d c b a | a b c d``). NaN and inf propagate to their neighbours and to themselves."""
    with np.errstate(invalid="ignore", over="ignore"):
        padded = np.pad(np.asarray(depth, dtype=np.float32), 1, mode="symmetric").astype(np.float64)
        return np.abs(_sobel_axis(padded, 0)) + np.abs(_sobel_axis(padded, 1))


def sobel_edge_mask(depth: np.ndarray, threshold: float = SOBEL_THRESHOLD) -> np.ndarray:
    """bool ``[H, W]``: True where the depth is locally smooth (``|sobel_0| + |sobel_1| <= threshold``,
    compared in float32 as the authors' code does)."""
    with np.errstate(invalid="ignore"):
        return sobel_magnitude(depth) <= np.float32(threshold)


class DIODEDataset(DepthDataset):
    """DIODE val.

    Args:
        mask: ``"paper"`` (default), ``"marigold"`` or ``"range"``; see the module docstring.
        edge_mask: older spelling: ``False`` is ``mask="range"`` (which is *not* Marigold's protocol).
        edge_threshold: the Sobel threshold of the paper's mask (0.3).
    """

    name = "diode"
    min_depth = 0.6
    max_depth = 350.0
    range_inclusive = True  # the paper and the release: 0.6 <= d <= 350
    num_paths = 3
    processing_resolution = 640
    expected_samples = 771

    def __init__(self, *args, mask: str | None = None, edge_mask: bool | None = None,
                 edge_threshold: float = SOBEL_THRESHOLD, **kwargs):
        if mask is not None and edge_mask is not None:
            raise ValueError("give DIODE's mask or the older edge_mask, not both")
        if mask is None:
            mask = "range" if edge_mask is False else "paper"
        if mask not in DIODE_MASKS:
            raise ValueError(f"DIODE mask must be one of {DIODE_MASKS}, got {mask!r}")
        self.mask = mask
        self.edge_threshold = edge_threshold
        super().__init__(*args, **kwargs)

    def settings(self):
        return {"mask": self.mask, **({"edge_threshold": self.edge_threshold} if self.mask == "paper" else {})}

    def range_mask(self, depth):
        if self.mask == "marigold":  # no range check: only where the metrics are defined
            with np.errstate(invalid="ignore"):
                return np.isfinite(depth) & (depth > 0)
        return super().range_mask(depth)

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = np.squeeze(self.read_npy(entry[1])).astype(np.float32)  # [H, W, 1] -> [H, W]
        mask = np.squeeze(self.read_npy(entry[2])).astype(bool)
        if depth.ndim != 2 or mask.shape != depth.shape:
            raise ValueError(f"{self.root}: {entry[1]!r} ({depth.shape}) and {entry[2]!r} ({mask.shape}) "
                             "should be one [H, W] depth map and mask")
        if self.mask != "paper":
            return {"rgb": rgb, "depth": depth, "mask": mask}
        smooth = sobel_edge_mask(depth, self.edge_threshold)  # on the full-resolution metric GT
        # The edge metrics need the discontinuities the Sobel mask removes: they get the mask without it.
        return {"rgb": rgb, "depth": depth, "mask": mask & smooth, "edge_metric_mask": mask}
