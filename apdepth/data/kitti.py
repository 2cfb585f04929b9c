"""KITTI, the Eigen test split as packaged by Marigold (``kitti_eigen_split_test.tar``).

Split line: ``<date>/<drive>/image_02/data/<frame>.png <drive>/proj_depth/groundtruth/image_02/<frame>.png
<focal>``; the depth field is ``None`` for frames without ground truth (45 of the 697 lines), which
the protocol skips (652 samples remain; the count is logged). Depth: 16-bit PNG / 256 (metres), 0 = no
LiDAR return. Valid range 1e-5..80 m. RGB and depth are cropped to the KITTI benchmark size 352x1216
(bottom rows, centred columns); the Eigen crop (default) or Garg crop is then an evaluation mask.
"""

from __future__ import annotations

import logging

import numpy as np

from .base import DepthDataset

logger = logging.getLogger(__name__)

BENCHMARK_HEIGHT, BENCHMARK_WIDTH = 352, 1216
# Fractions of the (benchmark-cropped) frame: top, bottom, left, right.
EVAL_CROPS = {
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen et al., NIPS 2014
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al., ECCV 2016
}


def kitti_benchmark_box(height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the 352x1216 KITTI benchmark crop: top = H - 352, left = (W - 1216) // 2."""
    if height < BENCHMARK_HEIGHT or width < BENCHMARK_WIDTH:
        raise ValueError(f"The KITTI benchmark crop needs at least {BENCHMARK_HEIGHT}x{BENCHMARK_WIDTH} (HxW); "
                         f"got {height}x{width}")
    return height - BENCHMARK_HEIGHT, (width - BENCHMARK_WIDTH) // 2, BENCHMARK_HEIGHT, BENCHMARK_WIDTH


def kitti_benchmark_crop(array: np.ndarray) -> np.ndarray:
    """Crop ``[H, W, ...]`` to the KITTI benchmark region ``[352, 1216, ...]``."""
    top, left, h, w = kitti_benchmark_box(*array.shape[:2])
    return array[top : top + h, left : left + w]


def kitti_eval_mask(height: int, width: int, crop: str = "eigen") -> np.ndarray:
    """bool ``[H, W]``: True inside the Eigen or Garg evaluation crop (rows/cols truncated to ints)."""
    if crop not in EVAL_CROPS:
        raise ValueError(f"crop must be one of {tuple(EVAL_CROPS)}, got {crop!r}")
    top, bottom, left, right = EVAL_CROPS[crop]
    mask = np.zeros((height, width), dtype=bool)
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


class KITTIDataset(DepthDataset):
    """KITTI Eigen test split. ``eval_crop``: ``"eigen"`` (default), ``"garg"`` or ``None``;
    ``benchmark_crop``: crop to 352x1216 first (default, as the protocol)."""

    name = "kitti"
    min_depth = 1e-5
    max_depth = 80.0
    expected_samples = 652  # of 697 split lines

    def __init__(self, *args, eval_crop: str | None = "eigen", benchmark_crop: bool = True, **kwargs):
        if eval_crop is not None and eval_crop not in EVAL_CROPS:
            raise ValueError(f"eval_crop must be one of {tuple(EVAL_CROPS)} or None, got {eval_crop!r}")
        self.eval_crop = eval_crop
        self.benchmark_crop = benchmark_crop
        self.num_without_gt = 0
        super().__init__(*args, **kwargs)

    def filter_entries(self, entries):
        kept = [e for e in entries if e[1] != "None"]
        self.num_without_gt = len(entries) - len(kept)
        if self.num_without_gt:
            logger.info("kitti: %d of %d split lines have no ground truth (None) and are skipped; %d remain",
                        self.num_without_gt, len(entries), len(kept))
        return kept

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = self.read_png_depth(entry[1], 256.0)
        if self.benchmark_crop:
            rgb, depth = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth)
        return {"rgb": rgb, "depth": depth}

    def settings(self):
        return {"eval_crop": self.eval_crop, "benchmark_crop": self.benchmark_crop}

    def eval_mask(self, height, width):
        return kitti_eval_mask(height, width, self.eval_crop) if self.eval_crop else None
