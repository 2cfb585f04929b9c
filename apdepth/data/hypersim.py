"""Hypersim (training), in Marigold's preprocessing: 480x640 PNG frames with planar depth.

Split line: ``ai_XXX_YYY/rgb_cam_00_frNNNN.png ai_XXX_YYY/depth_plane_cam_00_frNNNN.png``.
Depth: 16-bit PNG in millimetres (planar depth), valid range 1e-5..65 m. This is the raw reader:
normalisation, flips and sampling belong to the training code on top of it.
"""

from __future__ import annotations

from .base import DepthDataset


class HypersimDataset(DepthDataset):
    name = "hypersim"
    min_depth = 1e-5
    max_depth = 65.0

    def load(self, entry):
        return {"rgb": self.read_rgb(entry[0]), "depth": self.read_png_depth(entry[1], 1000.0)}
