"""Hypersim (training), in Marigold's preprocessing: PNG frames with planar depth.

Split line: ``ai_XXX_YYY/rgb_cam_00_frNNNN.png ai_XXX_YYY/depth_plane_cam_00_frNNNN.png``.
Depth: 16-bit PNG in millimetres (planar depth), valid range 1e-5..65 m. This is the raw reader:
normalisation, flips and sampling belong to the training code on top of it.

Marigold's preprocessing stores the frames at Hypersim's native 768x1024; Marigold's training loader
then resizes every raster (RGB, depth, valid mask) to 480x640 with nearest-exact interpolation
(torchvision ``Resize(..., InterpolationMode.NEAREST_EXACT)``), after it has normalised the depth
(quantiles of the full-size frame) and flipped the sample. ``resize`` selects the size:

- ``"marigold"`` (default): 768x1024 frames become 480x640 as Marigold's loader makes them; frames
  stored at any other size (apdepth's synthetic Hypersim-layout data) are read as stored.
- ``"native"``: every frame as stored (2.56x the pixels of the paper's training at 768x1024).
- ``"HxW"`` (e.g. ``"480x640"``): every frame to that size, as Marigold's ``resize_to_hw`` does.

Read on its own, the reader returns resized samples. The training view
(:class:`apdepth.data.training.TrainingView`) reads the stored frame with :meth:`HypersimDataset.native_item`
and resizes after normalising and flipping (:meth:`HypersimDataset.resize_sample`), Marigold's order.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as F

from .base import DepthDataset

logger = logging.getLogger(__name__)

MARIGOLD_STORED_SIZE = (768, 1024)  # Hypersim's native frames, as Marigold's preprocessing writes them
MARIGOLD_TRAIN_SIZE = (480, 640)  # Marigold's resize_to_hw for Hypersim


def parse_resize(spec: str) -> str | tuple[int, int]:
    """``"marigold"`` / ``"native"`` as given, ``"HxW"`` as ``(H, W)``; anything else raises ValueError."""
    if spec in ("marigold", "native"):
        return spec
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(spec))
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"resize must be 'marigold', 'native' or 'HxW' with positive sizes (e.g. '480x640'), "
                         f"got {spec!r}")
    return int(match[1]), int(match[2])


def nearest_exact_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[C, H, W]`` (any dtype) with nearest-exact sampling: output pixel ``i`` takes input pixel
    ``floor((i + 0.5) * H / H_out)``, as torchvision's ``NEAREST_EXACT`` does. Values are copied, never
    mixed, so uint8, bool and float tensors keep their values."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x[None].float(), size=tuple(size), mode="nearest-exact")[0]
    return out.to(x.dtype)


class HypersimDataset(DepthDataset):
    """``resize``: see the module docstring (default ``"marigold"``)."""

    name = "hypersim"
    min_depth = 1e-5
    max_depth = 65.0

    def __init__(self, *args, resize: str = "marigold", **kwargs):
        self.resize = parse_resize(resize)
        super().__init__(*args, **kwargs)
        # the sample transform runs after the resize
        self.post_transform, self.transform = self.transform, None
        stored = self.read_image(self.entries[0][0]).size[::-1]  # (H, W) of the first frame
        target = self.target_size(*stored)
        if target is None:
            logger.info("Hypersim %s: frames read at their stored size (%dx%d; resize=%r)", self.root, stored[0],
                        stored[1], resize)
        else:
            logger.info("Hypersim %s: frames stored at %dx%d are resized to %dx%d (nearest-exact, after depth "
                        "normalisation, as Marigold's training loader does); resize='native' keeps the stored size",
                        self.root, stored[0], stored[1], target[0], target[1])

    def target_size(self, height: int, width: int) -> tuple[int, int] | None:
        """The size a ``height x width`` frame is resized to, or None when it is kept."""
        if self.resize == "native":
            return None
        if self.resize == "marigold":
            return MARIGOLD_TRAIN_SIZE if (height, width) == MARIGOLD_STORED_SIZE else None
        return None if (height, width) == self.resize else self.resize

    def load(self, entry):
        return {"rgb": self.read_rgb(entry[0]), "depth": self.read_png_depth(entry[1], 1000.0)}

    def native_item(self, index: int) -> dict:
        """The sample at its stored size (no resize, no transform)."""
        return super().__getitem__(index)

    def resize_sample(self, sample: dict, keys: tuple[str, ...] = ("rgb", "depth", "valid_mask")) -> dict:
        """Resize the ``[C, H, W]`` tensors ``keys`` of ``sample`` (in place) to :meth:`target_size`."""
        height, width = sample[keys[0]].shape[-2:]
        target = self.target_size(height, width)
        if target is not None:
            for key in keys:
                if key in sample:
                    sample[key] = nearest_exact_resize(sample[key], target)
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.resize_sample(self.native_item(index), ("rgb", "depth", "valid_mask", "edge_valid_mask"))
        return self.post_transform(sample) if self.post_transform is not None else sample
