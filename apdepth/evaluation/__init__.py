"""Zero-shot affine-invariant depth evaluation (paper Sec. 4.2, docs/reference.md section 5) with edge metrics.

- :mod:`.alignment`: least-squares scale and shift (the one least-squares core, also under
  :mod:`apdepth.postprocessing.affine`), depth or disparity space, clipping
- :mod:`.metrics`: AbsRel, SqRel, RMSE, RMSE-log, log10, delta1-3, iRMSE, SILog per image
- :mod:`.edges`: scale-invariant boundary F1 (Depth Pro) and the flying-pixel ratio
- :mod:`.protocol`: :class:`Protocol` and :func:`evaluate_sample` (resize, align, clip, score)
- :mod:`.runner`: :func:`evaluate_dataset` (resumable, per-sample CSV, summary, table) and predictors
- :mod:`.presets`: the Table 1 preset, config files, the combined report
- ``scripts/fidelity_evaluation.py`` measures the evaluation options that can differ from Marigold's code

Scoring imports no inference code (the pipeline, diffusers, transformers): saved predictions are scored with
torch, numpy and the data readers alone (the model comes in through :class:`PipelinePredictor`'s argument).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module that defines it (imported on first use, so `import apdepth.evaluation.whdr` or
# `.metrics` does not load every other module of the package)
_LAZY = {
    "align_least_squares": ".alignment",
    "clip_depth": ".alignment",
    "fit_scale_shift": ".alignment",
    "boundary_f1": ".edges",
    "edge_metrics": ".edges",
    "flying_pixel_ratio": ".edges",
    "flying_pixels": ".edges",
    "METRICS": ".metrics",
    "depth_metrics": ".metrics",
    "DatasetSpec": ".presets",
    "load_config": ".presets",
    "table1_spec": ".presets",
    "write_combined_report": ".presets",
    "EDGE_METRICS": ".protocol",
    "NonFinitePredictionError": ".protocol",
    "Protocol": ".protocol",
    "evaluate_sample": ".protocol",
    "dataset_table": ".report",
    "table1": ".report",
    "EvalResult": ".runner",
    "PipelinePredictor": ".runner",
    "ResumeMismatchError": ".runner",
    "SavedPredictions": ".runner",
    "evaluate_dataset": ".runner",
}

__all__ = [
    "EDGE_METRICS", "METRICS", "DatasetSpec", "EvalResult", "NonFinitePredictionError", "PipelinePredictor",
    "Protocol", "ResumeMismatchError", "SavedPredictions", "align_least_squares", "boundary_f1", "clip_depth", "dataset_table", "depth_metrics",
    "edge_metrics", "evaluate_dataset", "evaluate_sample", "fit_scale_shift", "flying_pixel_ratio",
    "flying_pixels", "load_config", "table1", "table1_spec", "write_combined_report",
]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .alignment import align_least_squares, clip_depth, fit_scale_shift
    from .edges import boundary_f1, edge_metrics, flying_pixel_ratio, flying_pixels
    from .metrics import METRICS, depth_metrics
    from .presets import DatasetSpec, load_config, table1_spec, write_combined_report
    from .protocol import EDGE_METRICS, NonFinitePredictionError, Protocol, evaluate_sample
    from .report import dataset_table, table1
    from .runner import EvalResult, PipelinePredictor, ResumeMismatchError, SavedPredictions, evaluate_dataset


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
