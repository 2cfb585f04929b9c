"""NYU Depth v2, the Eigen test split (654 images) as packaged by Marigold (``nyu_labeled_extracted.tar``).

Split line: ``test/<scene>/rgb_NNNN.png test/<scene>/depth_NNNN.png test/<scene>/filled_NNNN.png``.
Depth: 16-bit PNG in millimetres; the raw (unfilled) map is evaluated. Valid range 1e-3..10 m. The
Eigen crop (rows 45:471, columns 41:601 of the 480x640 frame) is applied as an evaluation mask.
"""

from __future__ import annotations

import numpy as np

from .base import DepthDataset

EIGEN_CROP = (45, 471, 41, 601)  # top, bottom, left, right (exclusive ends) of a 480x640 frame


def nyu_eigen_mask(height: int, width: int) -> np.ndarray:
    """bool ``[H, W]``: True inside the Eigen crop. The frame must be at least 471x601."""
    top, bottom, left, right = EIGEN_CROP
    if height < bottom or width < right:
        raise ValueError(f"The NYU Eigen crop needs a frame of at least {bottom}x{right} (HxW); got {height}x{width}")
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


class NYUDataset(DepthDataset):
    name = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    num_paths = 2  # the third field (filled depth) is not used for evaluation
    expected_samples = 654

    def __init__(self, *args, eigen_crop: bool = True, **kwargs):
        self.eigen_crop = eigen_crop
        super().__init__(*args, **kwargs)

    def load(self, entry):
        return {"rgb": self.read_rgb(entry[0]), "depth": self.read_png_depth(entry[1], 1000.0)}

    def settings(self):
        return {"eigen_crop": self.eigen_crop}

    def eval_mask(self, height, width):
        return nyu_eigen_mask(height, width) if self.eigen_crop else None
