"""Frozen external vision encoders for stage-1 feature alignment (paper Sec. 3.3, Table 5).

Every encoder maps RGB ``[B, 3, H, W]`` in [-1, 1] to a patch-feature grid ``[B, C, gh, gw]`` and owns
its input preprocessing (normalisation, resize to its patch size). It is frozen: no gradients, always
in ``eval()``.

- ``dinov2`` (default, the paper): transformers ``Dinov2Model`` patch tokens after the final
  LayerNorm; ImageNet-normalised input. :meth:`DINOv2Encoder.from_backbone` reuses the DINOv2 inside a
  Depth Anything V2 model (the authors' release aligns with the DINOv2 of the DA2 ViT-G checkpoint)
  without copying weights. Two input modes (``input_mode``):

  * ``"paper"`` (default): RGB mapped to [0, 1], ImageNet-normalised, resized (bicubic, antialiased)
    to the image's own size rounded to multiples of 14 (or ``resolution`` on the long edge);
    transformers' position-embedding interpolation.
  * ``"release"``: the authors' stage-1 input, exactly: the [-1, 1] RGB goes straight into the ImageNet
    normalisation (``(x - mean) / std`` without mapping to [0, 1] first), then
    ``F.interpolate(scale_factor=0.875, mode="bicubic", align_corners=False)`` (no antialias), so a
    480x640 image becomes 420x560 and the patch grid 30x40 is half the 60x80 latent grid; the position
    embeddings are interpolated as the original DINOv2 code does (:func:`original_position_embeddings`).
- ``openclip``: the vision tower of a LAION OpenCLIP model in transformers format
  (``CLIPVisionModel``, e.g. ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, the model SD2's text encoder
  comes from); patch tokens after the post-LayerNorm; CLIP normalisation; position embeddings
  interpolated to the input's grid.
- ``sam``: the Segment Anything image encoder (``SamVisionModel``, e.g. ``facebook/sam-vit-huge``): its
  neck output (256 channels); the image is resized to the long side 1024 and zero-padded to a square
  as SAM does, and the features of the padding are cropped off.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..image_utils import IMAGENET_MEAN, IMAGENET_STD
from ..priors.depth_anything import original_position_embeddings

logger = logging.getLogger(__name__)

ENCODER_KINDS = ("dinov2", "prior", "openclip", "sam", "none")
DEFAULT_SOURCES = {
    "dinov2": "facebook/dinov2-giant",
    "openclip": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "sam": "facebook/sam-vit-huge",
}
INPUT_MODES = ("paper", "release")
RELEASE_SCALE = 0.875  # the release's DINOv2 input scale: 14-pixel patches on a 16-pixel grid
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def patch_grid_size(height: int, width: int, patch: int, resolution: int = 0) -> tuple[int, int]:
    """Input size for a ViT with ``patch``-pixel patches: each side a multiple of ``patch`` (nearest, at
    least one patch). ``resolution`` > 0 first scales the image so its long edge is ``resolution``."""
    if resolution:
        scale = resolution / max(height, width)
        height, width = height * scale, width * scale
    return max(1, round(height / patch)) * patch, max(1, round(width / patch)) * patch


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, gh*gw, C]`` patch tokens (row-major) -> ``[B, C, gh, gw]``."""
    batch, count, channels = tokens.shape
    if count != grid[0] * grid[1]:
        raise ValueError(f"{count} tokens do not fill a {grid[0]}x{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(batch, channels, *grid)


class ExternalEncoder(nn.Module):
    """Base class: frozen, owns its normalisation (non-persistent buffers)."""

    out_channels: int
    patch_size: int

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> ExternalEncoder:
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> ExternalEncoder:
        return super().train(False)  # frozen: stays in eval mode whatever its parent does

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> the encoder's normalised input, in the encoder's dtype."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects [B, 3, H, W] RGB, got {tuple(rgb.shape)}")
        x = (rgb.float() + 1.0) / 2.0
        x = (x - self.mean) / self.std
        return x.to(next(self.parameters()).dtype)

    def resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


class DINOv2Encoder(ExternalEncoder):
    """DINOv2 patch tokens after the final LayerNorm. ``resolution`` (``input_mode="paper"``): 0 = the
    image's own size (each side rounded to a multiple of 14), else the long edge in pixels.
    ``input_mode``: ``"paper"`` or ``"release"`` (module docstring)."""

    def __init__(self, model: nn.Module, resolution: int = 0, input_mode: str = "paper"):
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        if input_mode not in INPUT_MODES:
            raise ValueError(f"DINOv2Encoder: input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        if input_mode == "release" and resolution:
            raise ValueError("DINOv2Encoder: the release input mode has a fixed 0.875 scale; leave resolution at 0")
        self.model = model
        config = model.config
        self.patch_size = int(config.patch_size)
        self.out_channels = int(config.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.resolution = resolution
        self.input_mode = input_mode
        if input_mode == "release" and self.num_prefix_tokens != 1:
            raise ValueError("DINOv2Encoder: the release input mode takes a DINOv2 without register tokens "
                             "(as in Depth Anything V2)")
        self.freeze()

    @classmethod
    def from_backbone(cls, backbone: nn.Module, resolution: int = 0, input_mode: str = "paper") -> DINOv2Encoder:
        """Wrap a transformers ``Dinov2Backbone`` (e.g. ``DepthAnythingForDepthEstimation.backbone``) as a
        ``Dinov2Model`` that shares its modules (no weight copy)."""
        from accelerate import init_empty_weights
        from transformers import Dinov2Model

        for name in ("embeddings", "encoder", "layernorm"):
            if not isinstance(getattr(backbone, name, None), nn.Module):
                raise TypeError(f"{type(backbone).__name__} is not a DINOv2 backbone (no {name!r} module)")
        with init_empty_weights():
            model = Dinov2Model(backbone.config)
        model.embeddings, model.encoder, model.layernorm = backbone.embeddings, backbone.encoder, backbone.layernorm
        return cls(model.eval(), resolution, input_mode)

    def release_input(self, rgb: torch.Tensor) -> torch.Tensor:
        """The release's DINOv2 input: ``(rgb - mean) / std`` on the [-1, 1] RGB, then 0.875x bicubic.
        ``[B, 3, H, W]`` -> ``[B, 3, floor(0.875 H), floor(0.875 W)]``."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"DINOv2Encoder expects [B, 3, H, W] RGB, got {tuple(rgb.shape)}")
        x = (rgb.float() - self.mean) / self.std
        x = F.interpolate(x, scale_factor=RELEASE_SCALE, mode="bicubic", align_corners=False)
        return x.to(next(self.parameters()).dtype)

    def _release_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, gh*gw, C]`` with the original DINOv2 position-embedding interpolation."""
        embeddings = self.model.embeddings
        patches = embeddings.patch_embeddings(x)  # [B, gh*gw, C]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        cls_token = embeddings.cls_token.expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls_token, patches], dim=1)
        square = x.shape[-2] == x.shape[-1]
        tokens = tokens + original_position_embeddings(embeddings.position_embeddings, grid, square).to(tokens.dtype)
        hidden = self.model.encoder(tokens).last_hidden_state
        return self.model.layernorm(hidden)[:, 1:]

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, C, gh, gw]``."""
        if self.input_mode == "release":
            x = self.release_input(rgb)
            grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
            return tokens_to_grid(self._release_tokens(x), grid)
        size = patch_grid_size(*rgb.shape[-2:], self.patch_size, self.resolution)
        x = self.resize(self.normalize(rgb), size)
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.num_prefix_tokens:]  # [B, gh*gw, C]
        return tokens_to_grid(tokens, (size[0] // self.patch_size, size[1] // self.patch_size))


class CLIPEncoder(ExternalEncoder):
    """OpenCLIP / CLIP vision tower (transformers ``CLIPVisionModel``): patch tokens after the
    post-LayerNorm. ``resolution``: long edge in pixels (0 = the model's training size)."""

    def __init__(self, model: nn.Module, resolution: int = 0):
        super().__init__(CLIP_MEAN, CLIP_STD)
        self.model = model
        config = model.config
        self.patch_size = int(config.patch_size)
        self.out_channels = int(config.hidden_size)
        self.resolution = resolution or int(config.image_size)
        self.freeze()

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        size = patch_grid_size(*rgb.shape[-2:], self.patch_size, self.resolution)
        x = self.resize(self.normalize(rgb), size)
        hidden = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        tokens = self.model.post_layernorm(hidden[:, 1:])  # drop CLS: [B, gh*gw, C]
        return tokens_to_grid(tokens, (size[0] // self.patch_size, size[1] // self.patch_size))


class SAMEncoder(ExternalEncoder):
    """Segment Anything image encoder (transformers ``SamVisionModel``): the neck's output, with the
    features of SAM's square padding cropped off."""

    def __init__(self, model: nn.Module):
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        self.model = model
        config = model.config
        self.patch_size = int(config.patch_size)
        self.image_size = int(config.image_size)
        self.out_channels = int(config.output_channels)
        self.freeze()

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        scale = self.image_size / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = self.resize(self.normalize(rgb), size)
        x = F.pad(x, (0, self.image_size - size[1], 0, self.image_size - size[0]))  # zeros = the mean colour
        features = self.model(pixel_values=x).last_hidden_state  # [B, C, S/16, S/16]
        return features[:, :, : math.ceil(size[0] / self.patch_size), : math.ceil(size[1] / self.patch_size)]


def load_external_encoder(kind: str, source: str | os.PathLike | None = None, resolution: int = 0,
                          dtype: torch.dtype | None = None, local_files_only: bool = False,
                          input_mode: str = "paper") -> ExternalEncoder:
    """Build a frozen external encoder.

    Args:
        kind: ``dinov2``, ``openclip`` or ``sam`` (``prior`` is built from the prior's backbone with
            :meth:`DINOv2Encoder.from_backbone`; ``none`` means no encoder and is handled by the caller).
        source: hub id or local folder in transformers format; default :data:`DEFAULT_SOURCES`.
        resolution: input long edge (see each encoder); 0 = its default.
        dtype: weights dtype (default: as stored, normally fp32).
        input_mode: ``"paper"`` or ``"release"`` (DINOv2 only; see :class:`DINOv2Encoder`).
    """
    from transformers import AutoModel, CLIPVisionModel, SamVisionModel

    if kind not in DEFAULT_SOURCES:
        raise ValueError(f"load_external_encoder: unknown encoder {kind!r}; expected one of {tuple(DEFAULT_SOURCES)}")
    if input_mode != "paper" and kind != "dinov2":
        raise ValueError(f"load_external_encoder: input_mode={input_mode!r} is a DINOv2 input; {kind} takes 'paper'")
    source = os.fspath(source) if source is not None else DEFAULT_SOURCES[kind]
    kwargs = {"local_files_only": local_files_only}
    try:
        if kind == "dinov2":
            model = AutoModel.from_pretrained(source, **kwargs)
            if "dinov2" not in model.config.model_type:
                raise ValueError(f"{source}: a {model.config.model_type!r} model, not DINOv2")
            encoder = DINOv2Encoder(model, resolution, input_mode)
        elif kind == "openclip":
            encoder = CLIPEncoder(CLIPVisionModel.from_pretrained(source, **kwargs), resolution)
        else:
            if resolution:
                raise ValueError("The SAM encoder has a fixed input size; leave its resolution at 0")
            encoder = SAMEncoder(SamVisionModel.from_pretrained(source, **kwargs))
    except OSError as e:
        raise OSError(f"Cannot load the {kind} external encoder from {source!r}: {e}") from e
    if dtype is not None:
        encoder.to(dtype=dtype)
    logger.info("External encoder: %s from %s (%d channels)", kind, source, encoder.out_channels)
    return encoder
