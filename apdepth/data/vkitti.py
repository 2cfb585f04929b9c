"""Virtual KITTI 2 (training).

Split line: ``rgb/SceneNN/<variant>/frames/rgb/Camera_0/rgb_NNNNN.jpg
depth/SceneNN/<variant>/frames/depth/Camera_0/depth_NNNNN.png``. Depth: 16-bit PNG in centimetres
(65535 = sky, beyond the range), valid range 1e-5..80 m. RGB and depth are cropped to the KITTI
benchmark size 352x1216 (top = H - 352, left = (W - 1216) // 2). Raw reader: normalisation, flips and
sampling belong to the training code on top of it.
"""

from __future__ import annotations

from .base import DepthDataset
from .kitti import EVAL_CROPS, kitti_benchmark_crop, kitti_eval_mask


class VirtualKITTIDataset(DepthDataset):
    """``benchmark_crop``: crop to 352x1216 (default True); ``eval_crop``: optional ``"eigen"`` or
    ``"garg"`` evaluation mask (default None: training uses every valid pixel)."""

    name = "vkitti"
    min_depth = 1e-5
    max_depth = 80.0

    def __init__(self, *args, benchmark_crop: bool = True, eval_crop: str | None = None, **kwargs):
        if eval_crop is not None and eval_crop not in EVAL_CROPS:
            raise ValueError(f"eval_crop must be one of {tuple(EVAL_CROPS)} or None, got {eval_crop!r}")
        self.benchmark_crop = benchmark_crop
        self.eval_crop = eval_crop
        super().__init__(*args, **kwargs)

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = self.read_png_depth(entry[1], 100.0)
        if self.benchmark_crop:
            rgb, depth = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth)
        return {"rgb": rgb, "depth": depth}

    def eval_mask(self, height, width):
        return kitti_eval_mask(height, width, self.eval_crop) if self.eval_crop else None
