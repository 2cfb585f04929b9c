"""DIODE validation set, indoor and outdoor (771 frames, ``diode_val.tar``).

Split line: ``<indoors|outdoor>/scene_X/scan_Y/<name>.png <...>/<name>_depth.npy <...>/<name>_depth_mask.npy``.
Depth: ``.npy`` in metres (``[H, W, 1]``). The valid mask is the paper's (Sec. 4.2): the provided
mask AND an edge mask AND 0.6 <= d <= 350 m AND finite. The edge mask keeps pixels where
``|sobel_x| + |sobel_y| <= 0.3`` on the full-resolution metric ground truth (unnormalised 3x3 Sobel,
borders reflected), removing the discontinuities where DIODE's scans are ambiguous.
"""

from __future__ import annotations

import numpy as np

from .base import DepthDataset

SOBEL_THRESHOLD = 0.3


def sobel_magnitude(depth: np.ndarray) -> np.ndarray:
    """``|sobel_x| + |sobel_y|`` of ``[H, W]`` with the unnormalised 3x3 Sobel kernels.

    Borders are extended by mirroring with the edge pixel repeated (``d c b a | a b c d``), as
    ``scipy.ndimage.sobel``'s default. NaN and inf propagate to their neighbours.
    """
    d = np.pad(np.asarray(depth, dtype=np.float32), 1, mode="symmetric")  # [H+2, W+2]
    with np.errstate(invalid="ignore", over="ignore"):
        # Separable Sobel: derivative [-1, 0, 1] along one axis, smoothing [1, 2, 1] along the other.
        smooth_rows = d[:-2, :] + 2 * d[1:-1, :] + d[2:, :]  # [H, W+2]
        smooth_cols = d[:, :-2] + 2 * d[:, 1:-1] + d[:, 2:]  # [H+2, W]
        grad_x = smooth_rows[:, 2:] - smooth_rows[:, :-2]  # d/dx: [H, W]
        grad_y = smooth_cols[2:, :] - smooth_cols[:-2, :]  # d/dy: [H, W]
        return np.abs(grad_x) + np.abs(grad_y)


def sobel_edge_mask(depth: np.ndarray, threshold: float = SOBEL_THRESHOLD) -> np.ndarray:
    """bool ``[H, W]``: True where the depth is locally smooth (``|sobel_x| + |sobel_y| <= threshold``)."""
    with np.errstate(invalid="ignore"):
        return sobel_magnitude(depth) <= threshold


class DIODEDataset(DepthDataset):
    """DIODE val. ``edge_mask``: apply the paper's Sobel mask (default True; False = Marigold's protocol)."""

    name = "diode"
    min_depth = 0.6
    max_depth = 350.0
    range_inclusive = True  # the paper and the release: 0.6 <= d <= 350
    num_paths = 3
    processing_resolution = 640
    expected_samples = 771

    def __init__(self, *args, edge_mask: bool = True, edge_threshold: float = SOBEL_THRESHOLD, **kwargs):
        self.edge_mask = edge_mask
        self.edge_threshold = edge_threshold
        super().__init__(*args, **kwargs)

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = np.squeeze(self.read_npy(entry[1])).astype(np.float32)  # [H, W, 1] -> [H, W]
        mask = np.squeeze(self.read_npy(entry[2])).astype(bool)
        if depth.ndim != 2 or mask.shape != depth.shape:
            raise ValueError(f"{self.root}: {entry[1]!r} ({depth.shape}) and {entry[2]!r} ({mask.shape}) "
                             "should be one [H, W] depth map and mask")
        if not self.edge_mask:
            return {"rgb": rgb, "depth": depth, "mask": mask}
        smooth = sobel_edge_mask(depth, self.edge_threshold)  # on the full-resolution metric GT
        # The edge metrics need the discontinuities the Sobel mask removes: they get the mask without it.
        return {"rgb": rgb, "depth": depth, "mask": mask & smooth, "edge_metric_mask": mask}
