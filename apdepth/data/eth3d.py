"""ETH3D, 454 DSLR frames (``eth3d.tar``).

Split line: ``rgb/<scene>/images/dslr_images/DSC_NNNN.JPG
depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/DSC_NNNN.JPG``. Despite its name the
depth file is raw little-endian float32, row-major, of the RGB's size (4032x6048 in the release);
``inf`` marks pixels without ground truth. Valid range 1e-5..inf m. Evaluated at processing
resolution 756 with the least-squares alignment fitted on at most 1024 px (long side).
"""

from __future__ import annotations

import numpy as np

from .base import DepthDataset

HEIGHT, WIDTH = 4032, 6048  # the released depth maps


class ETH3DDataset(DepthDataset):
    name = "eth3d"
    min_depth = 1e-5
    max_depth = float("inf")
    processing_resolution = 756
    alignment_max_resolution = 1024
    expected_samples = 454

    def read_raw_depth(self, rel: str, height: int, width: int) -> np.ndarray:
        """float32 ``[H, W]`` from a raw float32 file of ``height * width`` values."""
        data = self.archive.read_bytes(rel)
        expected = height * width * 4
        if len(data) != expected:
            raise ValueError(
                f"{self.root}: {rel!r} holds {len(data)} bytes; a raw float32 depth map of the RGB's size "
                f"{height}x{width} needs {expected} (the release's maps are {HEIGHT}x{WIDTH})"
            )
        return np.frombuffer(data, dtype="<f4").reshape(height, width).copy()

    def load(self, entry):
        rgb = self.read_rgb(entry[0])
        depth = self.read_raw_depth(entry[1], *rgb.shape[:2])  # inf -> invalid via the range mask
        return {"rgb": rgb, "depth": depth}
