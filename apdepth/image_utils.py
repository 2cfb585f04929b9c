"""Turning user images into float tensors, and depth maps into pictures.

This is the one place that accepts PIL images, numpy arrays and tensors (single, batched or
listed); everything downstream sees float ``[3, H, W]`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageInput = Image.Image | np.ndarray | torch.Tensor
# Per-channel RGB mean and standard deviation of ImageNet, by which DINOv2 / CLIP-style encoders normalise [0, 1] images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Interpolations that resize images and depth maps (:func:`resize`); bilinear and bicubic are antialiased.
RESAMPLE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


@dataclass
class RGBImage:
    """One input image as float ``[3, H, W]`` in [0, 1].

    ``bits`` is 8 when the source held 8-bit levels: after resizing, values are rounded back to
    those levels, as the authors' pipeline does by resizing uint8 tensors.
    """

    pixels: torch.Tensor
    bits: int | None


def _from_pil(image: Image.Image) -> RGBImage:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float32)
        arr = np.clip(arr / 65535.0, 0.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(arr))[None].expand(3, -1, -1).clone()
        return RGBImage(t, None)
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float32)
        if np.nanmax(arr) > 1.0:
            arr = arr / 255.0
        t = torch.from_numpy(np.clip(np.nan_to_num(arr), 0.0, 1.0))[None].expand(3, -1, -1).clone()
        return RGBImage(t, None)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)  # [H, W, 3]; alpha dropped
    return RGBImage(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0, 8)


def _from_numpy(arr: np.ndarray) -> list[RGBImage]:
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"Unsupported numpy image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1].")
    if arr.ndim == 4:
        return [img for a in arr for img in _from_numpy(a)]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy images must be [H, W], [H, W, C] or [N, H, W, C] with C in 1/3/4; got {arr.shape}")
    arr = arr[..., :3]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)  # own, writable memory
    return [_scale_levels(t, f"numpy {arr.dtype}")]


def _from_tensor(t: torch.Tensor) -> list[RGBImage]:
    if t.ndim == 4:
        return [img for x in t for img in _from_tensor(x)]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"tensor images must be [3, H, W], [1, H, W] or [B, C, H, W]; got {tuple(t.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return [_scale_levels(t.detach().cpu(), f"tensor {t.dtype}")]


def _scale_levels(t: torch.Tensor, what: str) -> RGBImage:
    if t.dtype == torch.uint8:
        return RGBImage(t.float() / 255.0, 8)
    if t.dtype in (torch.uint16, torch.int32, torch.int64, torch.int16) and not t.is_floating_point():
        return RGBImage((t.float() / 65535.0).clamp(0, 1), None)
    t = t.float()
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"float {what} images must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")
    return RGBImage(t.clamp(0, 1), None)


def to_rgb_images(images: ImageInput | list[ImageInput]) -> list[RGBImage]:
    """Normalise any supported input into a list of :class:`RGBImage`.

    Accepts a PIL image (any mode: grayscale, RGBA, palette, 16-bit), a numpy array
    (``[H, W]``, ``[H, W, C]`` or ``[N, H, W, C]``; uint8, uint16 or float in [0, 1]), a tensor
    (``[C, H, W]`` or ``[B, C, H, W]``; uint8 or float in [0, 1]) or a list of these.
    """
    if isinstance(images, (list, tuple)):
        out = [img for x in images for img in to_rgb_images(x)]
        if not out:
            raise ValueError("Received an empty list of images.")
        return out
    if isinstance(images, Image.Image):
        return [_from_pil(images)]
    if isinstance(images, np.ndarray):
        return _from_numpy(images)
    if isinstance(images, torch.Tensor):
        return _from_tensor(images)
    raise TypeError(
        f"Unsupported image type {type(images).__name__}; expected PIL.Image, numpy.ndarray, torch.Tensor or a list."
    )


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Size with the long edge equal to ``resolution`` (aspect kept); ``0`` keeps the size."""
    if resolution == 0:
        return height, width
    factor = min(resolution / width, resolution / height)
    return max(1, int(height * factor)), max(1, int(width * factor))


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``[B, C, H, W]``; antialiased for bilinear/bicubic (as the release's resizes)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    kwargs = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


def resize_uint8(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize 8-bit levels ``[B, C, H, W]`` (float holding 0..255) as torchvision resizes a uint8 tensor:
    interpolate in float32 (antialiased for bilinear/bicubic), clamp bicubic's overshoot, round half to
    even, back to 0..255. ``"nearest"`` is nearest-exact (the release's mapping of the name)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "nearest-exact" if mode == "nearest" else mode
    y = resize(x.float(), size, mode)
    if mode == "bicubic":
        y = y.clamp(0.0, 255.0)
    return torch.round(y).clamp(0.0, 255.0)


def colorize_depth(depth: np.ndarray, colormap: str = "Spectral", vmin: float = 0.0, vmax: float = 1.0) -> Image.Image:
    """Colour a depth map ``[H, W]`` with a matplotlib colour map; returns an RGB PIL image."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"Unknown matplotlib colormap {colormap!r}") from None
    norm = np.clip((np.asarray(depth, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    rgba = cmap(norm, bytes=True)  # [H, W, 4] uint8
    return Image.fromarray(rgba[..., :3], mode="RGB")


def depth_to_uint16(depth: np.ndarray) -> np.ndarray:
    """Depth in [0, 1] -> uint16 ``round(depth * 65535)``."""
    return np.round(np.clip(depth, 0.0, 1.0) * 65535.0).astype(np.uint16)
