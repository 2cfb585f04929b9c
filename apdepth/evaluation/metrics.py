"""Depth metrics, per image over its valid pixels (averaged over images by the caller).

With ``p`` the aligned prediction and ``g`` the ground truth at the M valid pixels (both > 0):

=========  ==========================================================
abs_rel    mean(|p - g| / g)                         (paper Eq. 20)
sq_rel     mean((p - g)^2 / g)
rmse       sqrt(mean((p - g)^2))                     metres
rmse_log   sqrt(mean((ln p - ln g)^2))
log10      mean(|log10 p - log10 g|)
delta1..3  mean(max(p / g, g / p) < 1.25^k)          (paper Eq. 21)
i_rmse     sqrt(mean((1/p - 1/g)^2))                 1/metres
silog      100 * sqrt(mean(e^2) - mean(e)^2), e = ln p - ln g
=========  ==========================================================

These follow the Marigold evaluation code's definitions, so numbers are comparable with Table 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def abs_rel(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return ((p - g).abs() / g).mean()


def sq_rel(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return ((p - g) ** 2 / g).mean()


def rmse(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return ((p - g) ** 2).mean().sqrt()


def rmse_log(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return ((p.log() - g.log()) ** 2).mean().sqrt()


def log10(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (p.log10() - g.log10()).abs().mean()


def _delta(k: int) -> Metric:
    def delta(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (torch.maximum(p / g, g / p) < 1.25**k).to(p.dtype).mean()

    delta.__name__ = f"delta{k}"
    return delta


def i_rmse(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return ((1.0 / p - 1.0 / g) ** 2).mean().sqrt()


def silog(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    e = p.log() - g.log()
    return ((e**2).mean() - e.mean() ** 2).clamp_min(0).sqrt() * 100


METRICS: dict[str, Metric] = {
    "abs_rel": abs_rel,
    "sq_rel": sq_rel,
    "rmse": rmse,
    "rmse_log": rmse_log,
    "log10": log10,
    "delta1": _delta(1),
    "delta2": _delta(2),
    "delta3": _delta(3),
    "i_rmse": i_rmse,
    "silog": silog,
}
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "i_rmse", "silog"}


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid_mask: torch.Tensor) -> dict[str, float]:
    """All :data:`METRICS` for one image (the same definitions, sharing the per-pixel terms).

    Args:
        pred: aligned, clipped depth ``[H, W]`` (> 0 on valid pixels).
        gt: metric depth ``[H, W]``.
        valid_mask: bool ``[H, W]``.
    """
    if not (pred.shape == gt.shape == valid_mask.shape):
        raise ValueError(f"pred, gt and valid_mask shapes differ: {tuple(pred.shape)}, {tuple(gt.shape)}, "
                         f"{tuple(valid_mask.shape)}")
    if valid_mask.dtype != torch.bool:
        raise TypeError(f"valid_mask must be bool, got {valid_mask.dtype}")
    if not bool(valid_mask.any()):
        raise ValueError("no valid ground-truth pixels to evaluate")
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    p, g = pred[valid_mask].to(dtype), gt[valid_mask].to(dtype)  # [M] each
    bad = int((~torch.isfinite(p)).sum())
    if bad:
        raise ValueError(f"the prediction is NaN or infinite on {bad} of the {p.numel()} valid pixels; leave them "
                         "out of valid_mask (evaluate_sample does, with nonfinite='mask')")
    bad = int((p <= 0).sum())
    if bad:
        raise ValueError(f"the prediction is <= 0 on {bad} of the {p.numel()} valid pixels; clip it first (clip_depth)")
    bad = int((~torch.isfinite(g) | (g <= 0)).sum())
    if bad:
        raise ValueError(f"the ground truth is not a positive finite depth on {bad} of the {g.numel()} valid pixels; "
                         "check the valid mask")
    err = p - g
    sq = err * err
    log_err = p.log() - g.log()  # ln p - ln g
    ratio = torch.maximum(p / g, g / p)
    inv_err = 1.0 / p - 1.0 / g
    out = {
        "abs_rel": (err.abs() / g).mean(),
        "sq_rel": (sq / g).mean(),
        "rmse": sq.mean().sqrt(),
        "rmse_log": (log_err * log_err).mean().sqrt(),
        "log10": log_err.abs().mean() / math.log(10.0),
        **{f"delta{k}": (ratio < 1.25**k).to(dtype).mean() for k in (1, 2, 3)},
        "i_rmse": (inv_err * inv_err).mean().sqrt(),
        "silog": ((log_err * log_err).mean() - log_err.mean() ** 2).clamp_min(0).sqrt() * 100,
    }
    assert list(out) == list(METRICS)
    return {name: float(value) for name, value in out.items()}
