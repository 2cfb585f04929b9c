"""The zero-shot protocol for one sample: bring the prediction to the ground truth's size, align,
clip, score (SPEC section 5; paper Sec. 4.2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..data import DepthDataset
from ..pipeline import RESAMPLE_MODES, resize
from .alignment import SPACES, align_least_squares, clip_depth
from .edges import edge_metrics
from .metrics import METRICS, depth_metrics

EDGE_METRICS = ("boundary_f1", "flying_pixels")


@dataclass
class Protocol:
    """How one data set is evaluated. :meth:`for_dataset` fills in the data set's defaults.

    Attributes:
        dataset: data set name.
        min_depth, max_depth: the valid range; aligned predictions are clipped to it.
        processing_resolution: long edge the model sees (0 = native).
        alignment_space: ``"depth"`` (the paper) or ``"disparity"`` (for disparity predictions).
        alignment_max_resolution: fit the alignment on at most this long side (ETH3D: 1024).
        resample: interpolation that brings a prediction to the ground truth's size.
        edge_metrics: also compute the boundary F1 and the flying-pixel ratio.
    """

    dataset: str
    min_depth: float
    max_depth: float
    processing_resolution: int = 0
    alignment_space: str = "depth"
    alignment_max_resolution: int | None = None
    resample: str = "bilinear"
    edge_metrics: bool = True

    def __post_init__(self):
        if self.alignment_space not in SPACES:
            raise ValueError(f"alignment_space must be one of {SPACES}, got {self.alignment_space!r}")
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
        ``n_valid``, ``scale``, ``shift``, every :data:`~apdepth.evaluation.metrics.METRICS` entry and,
        with ``protocol.edge_metrics``, ``boundary_f1`` and ``flying_pixels`` (NaN where undefined).
        A sample without valid pixels returns ``n_valid = 0`` and NaN metrics.
    """
    device = pred.device
    gt = sample["depth"][0].to(device=device, dtype=torch.float32)  # [H, W]
    valid = sample["valid_mask"][0].to(device)  # [H, W] bool
    if pred.ndim != 2:
        raise ValueError(f"predictions must be [h, w], got {tuple(pred.shape)}")
    pred = resize(pred.float()[None, None], tuple(gt.shape), protocol.resample)[0, 0]  # [H, W]
    n_valid = int(valid.sum())
    row: dict[str, float] = {"n_valid": n_valid}
    if n_valid < 2:
        row.update({"scale": math.nan, "shift": math.nan, **dict.fromkeys(METRICS, math.nan)})
        if protocol.edge_metrics:
            row.update(dict.fromkeys(EDGE_METRICS, math.nan))
        return row
    aligned, scale, shift = align_least_squares(
        pred, gt, valid, space=protocol.alignment_space, max_resolution=protocol.alignment_max_resolution
    )
    aligned = clip_depth(aligned, protocol.min_depth, protocol.max_depth)
    row.update({"scale": scale, "shift": shift, **depth_metrics(aligned, gt, valid)})
    if protocol.edge_metrics:
        edge_valid = sample.get("edge_valid_mask", sample["valid_mask"])[0].to(device)
        row.update(edge_metrics(aligned, gt, edge_valid))
    return row
