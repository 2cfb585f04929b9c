"""Periodic validation during training: the evaluation protocol on a small set, sample depths logged.

Uses :mod:`apdepth.evaluation` (least-squares alignment, the data set's range clip, AbsRel, delta1
...) on the first ``max_samples`` samples of any evaluation data set.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ..data import get_dataset
from ..evaluation import PipelinePredictor, Protocol, evaluate_sample
from ..image_utils import colorize_depth
from .config import ValidationConfig

logger = logging.getLogger(__name__)


class Validator:
    """Evaluates a pipeline on ``max_samples`` samples of a data set; builds (and checks) it up front."""

    def __init__(self, cfg: ValidationConfig):
        self.cfg = cfg
        self.dataset = get_dataset(cfg.dataset, cfg.root, cfg.split)
        self.protocol = Protocol.for_dataset(self.dataset, processing_resolution=cfg.processing_resolution,
                                             edge_metrics=False)
        self.indices = list(range(min(cfg.max_samples, len(self.dataset))))

    @torch.no_grad()
    def __call__(self, pipe) -> tuple[dict[str, float], list[np.ndarray]]:
        """Mean metrics over the samples and up to ``log_images`` coloured predictions (HWC uint8)."""
        predictor = PipelinePredictor(pipe, self.protocol.processing_resolution, self.protocol.resample)
        rows, images = [], []
        for i in self.indices:
            sample = self.dataset[i]
            pred = predictor([sample])[0].float().cpu()  # [h, w] in [0, 1]
            rows.append(evaluate_sample(pred, sample, self.protocol))
            if len(images) < self.cfg.log_images:
                images.append(np.asarray(colorize_depth(pred.numpy())))
        keys = [k for k in rows[0] if k not in ("n_valid", "n_nonfinite", "scale", "shift")]
        metrics = {}
        for k in keys:
            values = [r[k] for r in rows if not math.isnan(r[k])]
            metrics[k] = float(np.mean(values)) if values else math.nan
        return metrics, images
