"""Edge metrics: how sharp and how clean the predicted depth discontinuities are.

**Scale-invariant boundary F1** (Depth Pro, Bochkovskii et al. 2024, Sec. 4 and its
``boundary_metrics.py``). Between each pixel and its right / lower neighbour, an occluding contour
with the *first* pixel in front exists where the depth ratio ``d_second / d_first > 1 + t``, and
one with the second pixel in front where ``d_first / d_second > 1 + t``: four contour maps (left,
top, right, bottom pixel in front). A ratio is unchanged by scaling the depth, hence
"scale-invariant". Precision = |pred & gt| / |pred| and recall = |pred & gt| / |gt|, with the
counts pooled over the four maps, and F1 = 2PR / (P + R). The score is the mean of F1 over ten
thresholds ``t = 0.05, 0.0722, ..., 0.25`` weighted by ``1 + t`` (Depth Pro's weighting).

Two departures from Depth Pro's code, both for real, partly measured ground truth, and both
documented in docs/evaluation.md: (1) only neighbour pairs where *both* pixels are valid are
compared; (2) counts are pooled over the four maps instead of averaging per-map precision and
recall with denominators clamped to 1, which scores a map without any contour as P = R = 0 (so a
perfect prediction of a single step edge would get 0.25). ``per_map_mean=True`` gives Depth Pro's
exact reduction. Thresholds at which the ground truth has no contour are left out of the mean, and
an image without any GT contour has no F1 (NaN, left out of the average over images, counted in the
summary). Sparse ground truth (KITTI's LiDAR) has few valid neighbour pairs, so its F1 says little.

**Flying-pixel ratio** (defined here). Flying pixels are the blurred, in-between depths a smooth
predictor puts at an occlusion: they float in the gap between foreground and background. With the
defaults below:

1. GT discontinuities: valid right / lower neighbour pairs whose depth ratio exceeds
   ``edge_ratio = 1.25``.
2. The band: valid pixels within ``radius = 2`` pixels (Chebyshev) of either pixel of such a pair.
3. For a band pixel, ``near`` / ``far`` are the smallest / largest valid GT depths within
   ``radius + 1`` pixels (so both sides of the discontinuity are seen).
4. The pixel is flying if its aligned prediction ``p`` lies strictly inside the gap, away from both
   sides by a relative ``tolerance = 0.1``: ``near * 1.1 < p < far / 1.1``, and is also more than
   10% away from its own GT (``|p - g| > 0.1 g``), so a correct depth on a third surface in between
   does not count.

Ratio = flying pixels / band pixels, per image (NaN without GT discontinuities), averaged over images.
0 is perfect; a prediction that linearly blends the two sides across the band scores high.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

F1_THRESHOLDS = tuple(0.05 + 0.2 * i / 9 for i in range(10))  # t; the depth ratio is 1 + t
FLYING_EDGE_RATIO = 1.25
FLYING_RADIUS = 2
FLYING_TOLERANCE = 0.1


# The two neighbour relations as (first pixel, second pixel) slices of an [H, W] map.
PAIR_SLICES = (
    ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),  # right neighbour: [H, W-1]
    ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),  # lower neighbour: [H-1, W]
)


def _count_above(x: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """``[T]``: how many entries of ``x`` exceed each of the ascending ``ratios`` (one pass)."""
    bucket = torch.bucketize(x, ratios)  # x > ratios[i]  <=>  bucket >= i + 1
    counts = torch.bincount(bucket, minlength=len(ratios) + 1).cpu().double()
    return counts.flip(0).cumsum(0).flip(0)[1:]


def boundary_f1_per_threshold(
    pred: torch.Tensor, gt: torch.Tensor, valid_mask: torch.Tensor, thresholds=F1_THRESHOLDS,
    per_map_mean: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall and F1 ``[T]`` of the predicted occluding contours, one value per threshold.

    Args:
        pred: aligned depth ``[H, W]`` (> 0 where valid).
        gt: metric depth ``[H, W]``.
        valid_mask: bool ``[H, W]``; only pairs of valid pixels are compared.
        thresholds: ascending ``t`` values; a contour needs a depth ratio above ``1 + t``.
        per_map_mean: Depth Pro's exact reduction (precision and recall of each of the four contour
            maps, denominators at least 1, averaged over the maps). Default: counts pooled over the
            maps, so a map without contours does not drag a perfect prediction down to 0.25, and F1 is
            NaN at thresholds where the ground truth has no contour.
    """
    p, g = pred.float(), gt.float()
    ratios = torch.tensor([1.0 + t for t in thresholds], dtype=torch.float32, device=p.device)
    counts = []  # per contour map: (n_pred, n_gt, n_both), each [T]
    for first, second in PAIR_SLICES:
        both = valid_mask[first] & valid_mask[second]
        p1, p2, g1, g2 = p[first][both], p[second][both], g[first][both], g[second][both]  # [N] each
        # Two contour maps per relation: the first pixel in front (d2 / d1 large), or the second.
        for pr, gr in ((p2 / p1, g2 / g1), (p1 / p2, g1 / g2)):
            n_both = _count_above(torch.minimum(pr, gr), ratios)  # a contour in both maps
            counts.append((_count_above(pr, ratios), _count_above(gr, ratios), n_both))
    n_pred, n_gt, n_both = (torch.stack(c) for c in zip(*counts))  # [4, T] each
    if per_map_mean:
        precision = (n_both / n_pred.clamp_min(1)).mean(0)
        recall = (n_both / n_gt.clamp_min(1)).mean(0)
    else:
        n_pred, n_gt, n_both = n_pred.sum(0), n_gt.sum(0), n_both.sum(0)  # [T]
        precision = n_both / n_pred.clamp_min(1)
        recall = torch.where(n_gt > 0, n_both / n_gt.clamp_min(1), torch.full_like(n_gt, math.nan))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(denom))
    f1 = torch.where(recall.isnan(), recall, f1)
    return precision, recall, f1


def has_gt_contours(gt: torch.Tensor, valid_mask: torch.Tensor, threshold: float = F1_THRESHOLDS[0]) -> bool:
    """Whether any valid neighbour pair of ``gt`` differs by a depth ratio above ``1 + threshold``."""
    g = gt.float()
    for first, second in PAIR_SLICES:
        both = valid_mask[first] & valid_mask[second]
        g1, g2 = g[first][both], g[second][both]
        if bool((torch.maximum(g1, g2) > torch.minimum(g1, g2) * (1.0 + threshold)).any()):
            return True
    return False


def boundary_f1(pred: torch.Tensor, gt: torch.Tensor, valid_mask: torch.Tensor,
                thresholds=F1_THRESHOLDS, per_map_mean: bool = False) -> float:
    """Scale-invariant boundary F1: the mean over ``thresholds`` weighted by ``1 + t``, over the thresholds
    at which the GT has contours; NaN when it has none (see :func:`boundary_f1_per_threshold`)."""
    if not has_gt_contours(gt, valid_mask, min(thresholds)):
        return math.nan
    _, _, f1 = boundary_f1_per_threshold(pred, gt, valid_mask, thresholds, per_map_mean)
    weights = torch.tensor([1.0 + t for t in thresholds], dtype=torch.float64)
    defined = ~f1.isnan()
    return float((f1[defined] * weights[defined]).sum() / weights[defined].sum())


def _max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the ``(2r+1)^2`` window of ``[H, W]`` (outside the image counts as -inf); separable."""
    k = 2 * radius + 1
    rows = F.max_pool2d(x[None, None], kernel_size=(1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(rows, kernel_size=(k, 1), stride=1, padding=(radius, 0))[0, 0]


def flying_pixels(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid_mask: torch.Tensor,
    edge_ratio: float = FLYING_EDGE_RATIO,
    radius: int = FLYING_RADIUS,
    tolerance: float = FLYING_TOLERANCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flying, band)``: bool ``[H, W]`` maps of the flying pixels and of the pixels examined."""
    g = torch.where(valid_mask, gt.float(), torch.zeros_like(gt, dtype=torch.float32))
    near_edge = torch.zeros_like(valid_mask)  # [H, W]: a pixel of a GT discontinuity pair
    for first, second in PAIR_SLICES:
        g1, g2 = g[first], g[second]
        jump = valid_mask[first] & valid_mask[second] & (torch.maximum(g1, g2) > edge_ratio * torch.minimum(g1, g2))
        near_edge[first] |= jump
        near_edge[second] |= jump
    band = (_max_pool(near_edge.float(), radius) > 0) & valid_mask
    neg_inf = torch.tensor(-math.inf, dtype=torch.float32, device=g.device)
    far = _max_pool(torch.where(valid_mask, g, neg_inf), radius + 1)
    near = -_max_pool(torch.where(valid_mask, -g, neg_inf), radius + 1)
    p = pred.float()
    between = (p > near * (1 + tolerance)) & (p < far / (1 + tolerance))
    off_own = (p - g).abs() > tolerance * g
    return band & between & off_own, band


def flying_pixel_ratio(pred: torch.Tensor, gt: torch.Tensor, valid_mask: torch.Tensor, **kwargs) -> float:
    """Share of the band around GT discontinuities whose prediction floats between the two sides
    (see the module docstring); NaN when the GT has no discontinuity."""
    flying, band = flying_pixels(pred, gt, valid_mask, **kwargs)
    n = int(band.sum())
    return math.nan if n == 0 else int(flying.sum()) / n


def edge_metrics(pred: torch.Tensor, gt: torch.Tensor, valid_mask: torch.Tensor) -> dict[str, float]:
    """``{"boundary_f1": ..., "flying_pixels": ...}`` for one image (NaN where undefined)."""
    if not (pred.shape == gt.shape == valid_mask.shape) or pred.ndim != 2:
        raise ValueError(f"pred, gt and valid_mask must all be [H, W]; got {tuple(pred.shape)}, "
                         f"{tuple(gt.shape)}, {tuple(valid_mask.shape)}")
    return {"boundary_f1": boundary_f1(pred, gt, valid_mask), "flying_pixels": flying_pixel_ratio(pred, gt, valid_mask)}
