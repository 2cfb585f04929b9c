"""Least-squares scale and shift alignment of an affine-invariant prediction to metric ground truth.

Paper Eq. 19: ``d~ = a * m^ + b`` with ``a, b`` minimising ``sum (a * m^ + b - d)^2`` over the valid
pixels (``[pred, 1] x = gt``); then the result is clipped to the data set's range and to >= 1e-6.
:func:`least_squares_line` is that fit, shared with the library's fits (:mod:`apdepth.postprocessing.affine`).
``space="disparity"`` is for predictions of affine-invariant *disparity* (Depth Anything, MiDaS):
the fit targets ``1 / gt`` and the aligned disparity is inverted back to depth.

With ``max_resolution`` (ETH3D: 1024) the fit runs on a nearest-neighbour subsample:

- ``subsample="width"`` (default): Marigold's evaluation code. It resizes the ``[H, W]`` arrays,
  viewed as ``[1, H, W]``, with a 1-D nearest ``Upsample(scale_factor=f)``, which resamples the last
  axis only: ``f = min(max_resolution / H, max_resolution / W)``; when ``f < 1`` the width becomes
  ``floor(W * f)`` with source column ``min(floor(j * float32(1 / f)), W - 1)``, and every row is kept
  (ETH3D 4032x6048 -> 4032x1024: columns ``floor(j * 5.90625)``).
- ``subsample="both"``: both axes, aspect kept, long side at most ``max_resolution`` (4032x6048 ->
  682x1024): fewer pixels, spread over the rows as well.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SPACES = ("depth", "disparity")
SUBSAMPLES = ("width", "both")  # "width": Marigold's code (the columns only); "both": aspect kept
DEPTH_FLOOR = 1e-6  # aligned depth is clipped to at least this before the metrics (they divide and log)
DISPARITY_FLOOR = 1e-3  # aligned disparity is clipped to at least this before inversion (as Marigold)


def _accumulate_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def least_squares_line(x, y, weights=None, *, min_variance: float = 0.0) -> tuple[float, float] | None:
    """The least-squares core of every scale-and-shift fit: ``min sum w (scale * x + shift - y)^2``.

    ``x``, ``y`` (and ``weights``, default all ones) are 1-D numpy arrays or torch tensors of one length,
    already in the precision to accumulate in; the sums are the centred ones (``sum w (x - mean x)^2``).
    Returns ``(scale, shift)`` as floats, or ``None`` when that variance of ``x`` is not above
    ``min_variance`` (no unique fit; the caller decides what that means).
    """
    if weights is None:
        x_mean, y_mean = x.mean(), y.mean()
        xc = x - x_mean
        var = (xc * xc).sum()
        cov = (xc * (y - y_mean)).sum()
    else:
        total = weights.sum()
        x_mean, y_mean = (weights * x).sum() / total, (weights * y).sum() / total
        var = (weights * (x - x_mean) ** 2).sum()
        cov = (weights * (x - x_mean) * (y - y_mean)).sum()
    if not bool(var > min_variance):
        return None
    scale = cov / var
    return float(scale), float(y_mean - scale * x_mean)


def fit_scale_shift(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Ordinary least squares ``y ~ scale * x + shift`` over 1-D ``x``, ``y`` (:func:`least_squares_line`,
    accumulated in float64).

    A constant ``x`` has no unique solution; the minimum is then ``scale = 0, shift = mean(y)``.
    """
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit_scale_shift needs two 1-D tensors of one length; got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError(f"Least-squares alignment needs at least 2 valid pixels, got {x.numel()}")
    dtype = _accumulate_dtype(x.device)
    x, y = x.to(dtype), y.to(dtype)
    fit = least_squares_line(x, y)
    return (0.0, float(y.mean())) if fit is None else fit


def _downsample(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[H, W]`` (bool or float) to ``size``."""
    out = F.interpolate(t[None, None].float(), size=size, mode="nearest")[0, 0]
    return out.bool() if t.dtype == torch.bool else out


def width_factor(height: int, width: int, max_resolution: int) -> float:
    """Marigold's resize factor ``min(max_resolution / H, max_resolution / W)`` (applied to the width)."""
    return min(max_resolution / height, max_resolution / width)


def _downsample_width(t: torch.Tensor, factor: float) -> torch.Tensor:
    """Marigold's subsample: ``[H, W]`` seen as ``[1, H, W]`` (batch 1, H channels, length W) through a
    1-D nearest resize by ``factor``; only the columns are resampled. Bool in, bool out."""
    out = F.interpolate(t[None].float(), scale_factor=factor, mode="nearest")[0]  # [H, floor(W * factor)]
    return out.bool() if t.dtype == torch.bool else out


def fit_size(height: int, width: int, max_resolution: int | None, subsample: str = "width") -> tuple[int, int]:
    """Size at which the alignment is fitted (see the module docstring for the two ``subsample`` rules)."""
    if subsample not in SUBSAMPLES:
        raise ValueError(f"subsample must be one of {SUBSAMPLES}, got {subsample!r}")
    if max_resolution is None:
        return height, width
    if subsample == "width":
        factor = width_factor(height, width, max_resolution)
        return (height, math.floor(width * factor)) if factor < 1 else (height, width)
    if max(height, width) <= max_resolution:
        return height, width
    factor = max_resolution / max(height, width)
    return max(1, math.floor(height * factor)), max(1, math.floor(width * factor))


def subsample_for_fit(
    tensors: tuple[torch.Tensor, ...], max_resolution: int | None, subsample: str = "width"
) -> tuple[torch.Tensor, ...]:
    """The ``[H, W]`` tensors (pred, gt, mask, ...) as the alignment fit sees them."""
    height, width = tensors[0].shape
    size = fit_size(height, width, max_resolution, subsample)
    if size == (height, width):
        return tensors
    if subsample == "width":
        factor = width_factor(height, width, max_resolution)
        return tuple(_downsample_width(t, factor) for t in tensors)
    return tuple(_downsample(t, size) for t in tensors)


def align_least_squares(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid_mask: torch.Tensor,
    space: str = "depth",
    max_resolution: int | None = None,
    subsample: str = "width",
) -> tuple[torch.Tensor, float, float]:
    """Align ``pred`` to ``gt`` by least-squares scale and shift on ``valid_mask``.

    Args:
        pred: affine-invariant prediction ``[H, W]`` (depth, or disparity with ``space="disparity"``).
        gt: metric depth ``[H, W]`` in metres.
        valid_mask: bool ``[H, W]``.
        space: ``"depth"`` (default, the paper) or ``"disparity"``.
        max_resolution: fit on a nearest-neighbour subsample (ETH3D: 1024); the fitted scale and
            shift are applied at full resolution.
        subsample: ``"width"`` (Marigold's code: the columns only) or ``"both"`` (aspect kept).

    Returns:
        ``(aligned_depth [H, W] float32, scale, shift)``. Not yet clipped: see :func:`clip_depth`.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not (pred.shape == gt.shape == valid_mask.shape) or pred.ndim != 2:
        raise ValueError(f"pred, gt and valid_mask must all be [H, W]; got {tuple(pred.shape)}, "
                         f"{tuple(gt.shape)}, {tuple(valid_mask.shape)}")
    p, g, m = subsample_for_fit((pred, gt, valid_mask), max_resolution, subsample)
    if space == "depth":
        scale, shift = fit_scale_shift(p[m], g[m])
        return (pred.float() * scale + shift), scale, shift
    m = m & (g > 0) & (p > 0)
    scale, shift = fit_scale_shift(p[m], 1.0 / g[m])
    disparity = (pred.float() * scale + shift).clamp_min(DISPARITY_FLOOR)
    return 1.0 / disparity, scale, shift


def clip_depth(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Clip to the data set's ``[min_depth, max_depth]`` and then to at least :data:`DEPTH_FLOOR`."""
    return depth.clamp(min=min_depth, max=max_depth).clamp_min(DEPTH_FLOOR)
