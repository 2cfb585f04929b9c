"""Depth Anything V2 as ApDepth's feed-forward prior (M_FFD).

``DepthAnythingPrior`` wraps transformers' ``DepthAnythingForDepthEstimation`` and owns its input
preprocessing. It is a diffusers ``ModelMixin`` so that it saves and loads as a pipeline component
(``prior/config.json`` + safetensors) next to the UNet and VAE.

Two preprocessing modes exist; a checkpoint records which one its UNet was trained with:

``"compat"`` (the authors' release, and the default)
    The [-1, 1] RGB itself (no ImageNet normalisation) is resized bilinearly (``align_corners=True``)
    to the next multiple of 14 per side, run through DA2 (ReLU output), resized back to H x W the
    same way. The relative inverse depth is returned **unnormalised**.
``"normalized"``
    ImageNet-normalised [0, 1] RGB, resized (bicubic) so the short side is at least 518 and both
    sides are multiples of 14, as DA2's own inference does; the output disparity is min-max
    normalised to [-1, 1] per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

PREPROCESSING_MODES = ("compat", "normalized")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PATCH = 14
_NORMALIZED_SIZE = 518


def check_preprocessing(mode: str) -> str:
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"Unknown prior preprocessing {mode!r}; expected one of {PREPROCESSING_MODES}.")
    return mode


def _normalized_input_size(height: int, width: int) -> tuple[int, int]:
    """DA2's own resize: keep aspect, short side >= 518, both sides multiples of 14."""
    scale = max(_NORMALIZED_SIZE / height, _NORMALIZED_SIZE / width)

    def fit(x: float) -> int:
        y = round(x / _PATCH) * _PATCH
        return int(y if y >= _NORMALIZED_SIZE else math.ceil(x / _PATCH) * _PATCH)

    return fit(height * scale), fit(width * scale)


class DepthAnythingPrior(ModelMixin, ConfigMixin):
    """Frozen Depth Anything V2: maps RGB ``[B, 3, H, W]`` in [-1, 1] to disparity ``[B, 1, H, W]``.

    The output is relative inverse depth (large = near), affine-invariant; its range depends on
    ``preprocessing`` (see the module docstring).
    """

    output_kind = "disparity"
    affine_invariant = True
    config_name = "config.json"

    @register_to_config
    def __init__(self, depth_anything_config: dict | None = None, preprocessing: str = "compat",
                 variant: str | None = None):
        super().__init__()
        check_preprocessing(preprocessing)
        config = DepthAnythingConfig.from_dict(depth_anything_config or {})
        self.model = DepthAnythingForDepthEstimation(config)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_model(cls, model: DepthAnythingForDepthEstimation, preprocessing: str = "compat",
                   variant: str | None = None) -> DepthAnythingPrior:
        """Wrap an already loaded transformers model without re-initialising any weights."""
        with init_empty_weights():
            prior = cls(model.config.to_dict(), preprocessing=preprocessing, variant=variant)
        prior.model = model
        prior.requires_grad_(False)
        return prior.eval()

    @property
    def preprocessing(self) -> str:
        return self.config.preprocessing

    def train(self, mode: bool = True) -> DepthAnythingPrior:
        # The prior is frozen: it stays in eval mode whatever its parent does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: ``[B, 3, H, W]`` in [-1, 1]. Returns disparity ``[B, 1, H, W]`` in the input's dtype."""
        return self.disparity(rgb)

    def disparity(self, rgb: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with autograd (pre-training a small prior, see :mod:`apdepth.training.components`)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"DepthAnythingPrior expects [B, 3, H, W], got {tuple(rgb.shape)}")
        _, _, height, width = rgb.shape
        param = next(self.model.parameters())
        x = rgb.to(device=param.device, dtype=param.dtype)
        if self.preprocessing == "compat":
            size = (math.ceil(height / _PATCH) * _PATCH, math.ceil(width / _PATCH) * _PATCH)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        else:
            size = _normalized_input_size(height, width)
            x = F.interpolate((x + 1.0) / 2.0, size=size, mode="bicubic", align_corners=False)
            mean = torch.tensor(_IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        disp = self.model(pixel_values=x).predicted_depth.unsqueeze(1)  # [B, 1, h14, w14]
        disp = F.interpolate(disp, size=(height, width), mode="bilinear", align_corners=True)
        if self.preprocessing == "normalized":
            flat = disp.flatten(1)
            lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
            hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
            disp = (disp - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0
        return disp.to(rgb.dtype)
