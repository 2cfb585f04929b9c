"""ScanNet, Marigold's 800-frame validation sample (``scannet_val_sampled_800_1.tar``).

Split line: ``<scene>/color/NNNNNN.jpg <scene>/depth/NNNNNN.png``. Depth: 16-bit PNG in millimetres,
valid range 1e-3..10 m, no crop.
"""

from __future__ import annotations

from .base import DepthDataset


class ScanNetDataset(DepthDataset):
    name = "scannet"
    min_depth = 1e-3
    max_depth = 10.0
    expected_samples = 800

    def load(self, entry):
        return {"rgb": self.read_rgb(entry[0]), "depth": self.read_png_depth(entry[1], 1000.0)}
