"""The zero-shot protocol for one sample: bring the prediction to the ground truth's size, align,
clip, score (docs/reference.md section 5; paper Sec. 4.2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..data import DepthDataset
from ..image_utils import RESAMPLE_MODES, resize
from .alignment import SPACES, SUBSAMPLES, align_least_squares, clip_depth
from .edges import edge_metrics
from .metrics import METRICS, depth_metrics

EDGE_METRICS = ("boundary_f1", "flying_pixels")
NONFINITE_POLICIES = ("mask", "reject")


class NonFinitePredictionError(ValueError):
    """A prediction is NaN or infinite on valid pixels (``nonfinite="reject"``), or on all of them."""


@dataclass
class Protocol:
    """How one data set is evaluated. :meth:`for_dataset` fills in the data set's defaults.

    Attributes:
        dataset: data set name.
        min_depth, max_depth: the valid range; aligned predictions are clipped to it.
        processing_resolution: long edge the model sees (0 = native).
        alignment_space: ``"depth"`` (the paper) or ``"disparity"`` (for disparity predictions).
        alignment_max_resolution: fit the alignment on a nearest subsample (ETH3D: 1024; None or 0:
            at full resolution).
        alignment_subsample: how that subsample is taken: ``"width"`` (Marigold's code: the columns
            only, factor ``min(max / H, max / W)``) or ``"both"`` (both axes, long side at most the max).
        resample: interpolation that brings a prediction to the ground truth's size.
        edge_metrics: also compute the boundary F1 and the flying-pixel ratio.
        nonfinite: valid pixels where the (resized) prediction is NaN or infinite: ``"mask"`` leaves
            them out of the fit and the metrics and counts them (``n_nonfinite``); ``"reject"`` fails
            the sample. (Marigold's code has no check: one such pixel makes its data set mean NaN.)
    """

    dataset: str
    min_depth: float
    max_depth: float
    processing_resolution: int = 0
    alignment_space: str = "depth"
    alignment_max_resolution: int | None = None
    alignment_subsample: str = "width"
    resample: str = "bilinear"
    edge_metrics: bool = True
    nonfinite: str = "mask"

    def __post_init__(self):
        if self.alignment_space not in SPACES:
            raise ValueError(f"alignment_space must be one of {SPACES}, got {self.alignment_space!r}")
        if self.alignment_subsample not in SUBSAMPLES:
            raise ValueError(f"alignment_subsample must be one of {SUBSAMPLES}, got {self.alignment_subsample!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}")
        if self.alignment_max_resolution is not None:
            if not isinstance(self.alignment_max_resolution, int) or self.alignment_max_resolution < 0:
                raise ValueError("alignment_max_resolution must be an int >= 0 (0: fit at full resolution) or None, "
                                 f"got {self.alignment_max_resolution!r}")
            if self.alignment_max_resolution == 0:
                self.alignment_max_resolution = None
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {self.resample!r}")
        if not isinstance(self.processing_resolution, int) or self.processing_resolution < 0:
            raise ValueError(f"processing_resolution must be an int >= 0, got {self.processing_resolution!r}")

    @classmethod
    def for_dataset(cls, dataset: DepthDataset | type[DepthDataset], **overrides) -> Protocol:
        """The data set's protocol; ``None`` overrides are ignored (keep the default)."""
        base = {
            "dataset": dataset.name,
            "min_depth": dataset.min_depth,
            "max_depth": dataset.max_depth,
            "processing_resolution": dataset.processing_resolution,
            "alignment_max_resolution": dataset.alignment_max_resolution,
        }
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"Unknown protocol settings {sorted(unknown)}; allowed: {sorted(known)}")
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict:
        out = asdict(self)
        if math.isinf(out["max_depth"]):
            out["max_depth"] = "inf"  # JSON has no infinity
        return out


def evaluate_sample(pred: torch.Tensor, sample: dict, protocol: Protocol) -> dict[str, float]:
    """Score one prediction against one ground-truth sample.

    Args:
        pred: affine-invariant prediction ``[h, w]`` (any size; resized to the ground truth's).
        sample: a data set sample (``"depth"`` ``[1, H, W]``, ``"valid_mask"`` ``[1, H, W]``, optionally
            ``"edge_valid_mask"``); computed on ``pred``'s device.
        protocol: the data set's :class:`Protocol`.

    Returns:
        ``n_valid`` (valid ground-truth pixels), ``n_nonfinite`` (of those, where the prediction is NaN
        or infinite: left out under ``nonfinite="mask"``), ``scale``, ``shift``, every
        :data:`~apdepth.evaluation.metrics.METRICS` entry and, with ``protocol.edge_metrics``,
        ``boundary_f1`` and ``flying_pixels`` (NaN where undefined). A sample with fewer than 2 valid
        ground-truth pixels returns its ``n_valid`` and NaN metrics.

    Raises:
        NonFinitePredictionError: the prediction is not finite on a valid pixel and
            ``protocol.nonfinite == "reject"``, or on all but at most one of them.
    """
    device = pred.device
    gt = sample["depth"][0].to(device=device, dtype=torch.float32)  # [H, W]
    valid = sample["valid_mask"][0].to(device)  # [H, W] bool
    if pred.ndim != 2:
        raise ValueError(f"predictions must be [h, w], got {tuple(pred.shape)}")
    pred = resize(pred.float()[None, None], tuple(gt.shape), protocol.resample)[0, 0]  # [H, W]
    n_valid = int(valid.sum())
    finite = torch.isfinite(pred)  # [H, W]
    n_nonfinite = int((valid & ~finite).sum())
    row: dict[str, float] = {"n_valid": n_valid, "n_nonfinite": n_nonfinite}
    if n_valid < 2:
        row.update({"scale": math.nan, "shift": math.nan, **dict.fromkeys(METRICS, math.nan)})
        if protocol.edge_metrics:
            row.update(dict.fromkeys(EDGE_METRICS, math.nan))
        return row
    if n_nonfinite:
        what = (f"the prediction (at the ground truth's size) is NaN or infinite on {n_nonfinite} of the "
                f"{n_valid} valid pixels")
        if protocol.nonfinite == "reject":
            raise NonFinitePredictionError(f"{what}; rejected (nonfinite='reject'; 'mask' scores the rest)")
        if n_valid - n_nonfinite < 2:
            raise NonFinitePredictionError(f"{what}; fewer than 2 finite pixels are left to score")
        valid = valid & finite
    aligned, scale, shift = align_least_squares(
        pred, gt, valid, space=protocol.alignment_space, max_resolution=protocol.alignment_max_resolution,
        subsample=protocol.alignment_subsample,
    )
    aligned = clip_depth(aligned, protocol.min_depth, protocol.max_depth)
    row.update({"scale": scale, "shift": shift, **depth_metrics(aligned, gt, valid)})
    if protocol.edge_metrics:
        edge_valid = sample.get("edge_valid_mask", sample["valid_mask"])[0].to(device) & finite
        row.update(edge_metrics(aligned, gt, edge_valid))
    return row
