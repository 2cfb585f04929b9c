"""Degraded prior maps for stage 2 (``stage2.prior_degrade``; not in the paper, whose default is 0).

A prior fitted to a training domain gives near-perfect maps there and coarse ones elsewhere: on
photographs the small embedded prior gives smooth blobs whose depth *order* is mostly right while their
contrast curve, sharpness and resolution are not. A UNet that only ever saw the clean maps learns a map
from prior latent to depth that need not hold on such inputs (docs/evaluation-whdr.md: it put faces
behind the backdrop although its prior ordered them right). :func:`degrade_prior` turns a clean map into
one of those coarse maps while keeping its order, so that stage 2 learns to follow the prior's ordering
and to take the edges from the RGB:

1. a random monotone remap of the values (piecewise linear through ``knots`` random increasing points),
2. a Gaussian blur of random width (up to ``max_blur`` of the short side),
3. a random loss of resolution (down by up to ``max_down`` and back up, bilinear),
4. a stretch back to the map's own value range (its minimum and maximum): the prior's output is
   unnormalised in the release's ``"compat"`` preprocessing (the embedded prior's lies in about [0, 1]) and
   [-1, 1] in ``"normalized"``, and a degraded map must stay in the range the UNet sees at inference.

Each sample of a batch is degraded with probability ``p``, with its own random draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def monotone_remap(u: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """``u`` ``[B, 1, H, W]`` in [0, 1] through the piecewise-linear curve with values ``knots`` ``[B, K+1]``
    (increasing, from 0 to 1) at the evenly spaced points ``0, 1/K, ..., 1``."""
    k = knots.shape[1] - 1
    x = u.clamp(0, 1) * k
    i = x.floor().clamp(max=k - 1).long()  # segment index, [B, 1, H, W]
    frac = x - i
    flat = i.flatten(1)  # [B, HW]
    lo = knots.gather(1, flat).view_as(u)
    hi = knots.gather(1, flat + 1).view_as(u)
    return lo + frac * (hi - lo)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``[1, 1, H, W]`` with standard deviation ``sigma`` pixels (edges
    replicated); ``sigma < 0.3`` returns ``x``."""
    if sigma < 0.3:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, w.view(1, 1, 1, -1))
    return F.conv2d(x, w.view(1, 1, -1, 1))


def value_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample minimum and maximum of ``[B, 1, H, W]``, each ``[B, 1, 1, 1]``."""
    flat = x.flatten(1)
    return flat.min(dim=1).values.view(-1, 1, 1, 1), flat.max(dim=1).values.view(-1, 1, 1, 1)


def stretch(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, 1, H, W]`` mapped affinely, per sample, so that its minimum is ``lo`` and its maximum ``hi``
    (a flat map becomes all ``lo``)."""
    x_lo, x_hi = value_range(x)
    return lo + (x - x_lo) / (x_hi - x_lo).clamp_min(1e-6) * (hi - lo)


def degrade_prior(disp: torch.Tensor, p: float, generator: torch.Generator | None = None, knots: int = 4,
                  max_blur: float = 0.04, max_down: int = 8) -> torch.Tensor:
    """``disp`` ``[B, 1, H, W]`` (the prior's disparity, in either preprocessing's range) with each sample
    degraded with probability ``p`` and stretched back to its own minimum and maximum (see the module's
    text); the others are returned unchanged. The random draws come from ``generator`` (CPU; ``None``:
    torch's global one)."""
    if p <= 0:
        return disp
    b, _, h, w = disp.shape
    out = disp.clone()
    for s in range(b):
        if float(torch.rand(1, generator=generator)) >= p:
            continue
        lo, hi = value_range(disp[s:s + 1].float())
        x = stretch(disp[s:s + 1].float(), torch.zeros_like(lo), torch.ones_like(hi))  # [1, 1, H, W] in [0, 1]
        steps = torch.rand(knots, generator=generator) + 0.1  # positive increments: a monotone curve
        curve = torch.cat([torch.zeros(1), steps.cumsum(0) / steps.sum()]).to(x.device)  # [K+1], 0 -> 1
        x = monotone_remap(x, curve[None])
        x = gaussian_blur(x, float(torch.rand(1, generator=generator)) * max_blur * min(h, w))
        down = 1 + int(torch.randint(max_down, (1,), generator=generator))  # 1 .. max_down
        if down > 1:
            small = F.interpolate(x, size=(max(1, h // down), max(1, w // down)), mode="area")
            x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        out[s:s + 1] = stretch(x, lo, hi).to(out.dtype)
    return out
