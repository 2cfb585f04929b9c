"""Evaluate a data set end to end: predict (or load saved predictions), score, write, resume.

Output folder of one data set::

    run.json          protocol and prediction source (a resumed run must match them)
    per_sample.csv    one row per evaluated sample, written atomically every few seconds
    summary.json      means over images, counts, failures, samples without valid ground truth, protocol
    table.md          all metrics as a Markdown table
    predictions/      with save_predictions: <rgb path without extension>.npy, [h, w] float32 at the
                      processing resolution (evaluate them again with SavedPredictions)

A re-run skips the samples already in ``per_sample.csv``. A sample that cannot be read or predicted is
reported, left out of the CSV (so the next run retries it) and makes the result incomplete. A sample
without valid ground-truth pixels is recorded without metrics, listed in the summary
(``without_valid_gt``) and also makes the result incomplete: the means are over fewer images than
the split has. Valid pixels where a prediction is NaN or infinite are left out and counted
(``n_nonfinite`` per sample, ``nonfinite_predictions`` in the summary), or fail the sample with
``Protocol(nonfinite="reject")``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import DepthDataset
from ..io import atomic_open, save_json, save_npy
from .metrics import METRICS
from .protocol import EDGE_METRICS, Protocol, evaluate_sample
from .report import dataset_table, mean_over_images

logger = logging.getLogger(__name__)

CSV_FIELDS = ("rgb_path", "n_valid", "n_nonfinite", "scale", "shift", *METRICS, *EDGE_METRICS)
FLUSH_SECONDS = 10.0


class ResumeMismatchError(ValueError):
    """The output folder holds results of a run with other settings."""


# ---------------------------------------------------------------------------------------------- predictors


class PipelinePredictor:
    """Runs an :class:`~apdepth.pipeline.ApDepthPipeline` (or anything called like one) on samples;
    returns depth at the processing resolution (the protocol resizes it to the ground truth's size,
    as ``match_input_resolution`` would; under the release's ``size_mode`` the VAE's size, multiples of 8, so
    that this one resize is the release's)."""

    def __init__(self, pipe, processing_resolution: int, resample: str = "bilinear"):
        self.pipe = pipe
        self.processing_resolution = processing_resolution
        self.resample = resample

    def __call__(self, samples: list[dict]) -> list[torch.Tensor]:
        out = self.pipe(
            [s["rgb"] for s in samples],  # uint8 [3, H, W] each
            processing_resolution=self.processing_resolution,
            match_input_resolution=False,
            resample=self.resample,
            batch_size=len(samples),
            output_type="pt",
        )
        depth = out.depth if isinstance(out.depth, list) else list(out.depth)  # [1, h, w] or [1, 1, h, w] each
        return [d.reshape(d.shape[-2:]) for d in depth]  # [h, w] each


class SavedPredictions:
    """Loads ``.npy`` predictions saved beside the RGB paths of the split.

    For RGB ``a/b/rgb_0001.png`` the first existing of ``a/b/rgb_0001.npy`` (this package's layout),
    ``a/b/pred_rgb_0001.npy`` and ``a/b/pred_0001.npy`` (Marigold's ``infer.py`` layouts) is used.
    """

    def __init__(self, folder: str | os.PathLike, device: torch.device | str = "cpu"):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"Predictions folder {self.folder} does not exist")
        self.device = torch.device(device)

    def candidates(self, rgb_path: str) -> list[Path]:
        rel = PurePosixPath(rgb_path)
        stem, parent = rel.stem, self.folder / rel.parent
        names = [f"{stem}.npy", f"pred_{stem}.npy"]
        if "_" in stem:
            names.append(f"pred_{stem.split('_', 1)[1]}.npy")
        return [parent / n for n in names]

    def path_for(self, rgb_path: str) -> Path:
        tried = self.candidates(rgb_path)
        for path in tried:
            if path.is_file():
                return path
        raise FileNotFoundError(f"No prediction for {rgb_path!r}: tried {', '.join(str(p) for p in tried)}")

    def __call__(self, samples: list[dict]) -> list[torch.Tensor]:
        out = []
        for s in samples:
            path = self.path_for(s["rgb_path"])
            array = np.squeeze(np.load(path, allow_pickle=False))
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
                raise ValueError(f"{path}: a prediction must be a numeric [H, W] array, got {array.dtype} {array.shape}")
            out.append(torch.from_numpy(array.astype(np.float32)).to(self.device))
        return out


def prediction_path(folder: Path, rgb_path: str) -> Path:
    """Where :func:`evaluate_dataset` saves the prediction of ``rgb_path`` (found again by SavedPredictions)."""
    return folder / PurePosixPath(rgb_path).with_suffix(".npy")


# ---------------------------------------------------------------------------------------------- runner


class _Guarded(Dataset):
    """A view of ``dataset`` on ``indices`` that returns an error record instead of raising."""

    def __init__(self, dataset: DepthDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        index = self.indices[i]
        try:
            return self.dataset[index]
        except Exception as e:  # noqa: BLE001 - reported per sample by the runner
            return {"error": f"cannot read sample ({type(e).__name__}: {e})",
                    "rgb_path": self.dataset.entries[index][0], "index": index}


@dataclass
class EvalResult:
    summary: dict
    rows: list[dict]
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.summary["complete"]


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "rgb_path" not in reader.fieldnames:
            raise ValueError(f"{path} is not a per-sample CSV of this tool (no rgb_path column)")
        rows = []
        for r in reader:
            rows.append({k: (r[k] if k == "rgb_path" else float(r[k]) if r[k] not in ("", None) else math.nan)
                         for k in reader.fieldnames})
        return rows


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (r[k] if k == "rgb_path" else repr(float(r[k]))) for k in fields if k in r})


def _check_resume(outdir: Path, run: dict, overwrite: bool) -> None:
    run_file, csv_file = outdir / "run.json", outdir / "per_sample.csv"
    if overwrite:
        for p in (run_file, csv_file, outdir / "summary.json"):
            p.unlink(missing_ok=True)
        return
    if not csv_file.exists():
        return
    import json

    previous = json.loads(run_file.read_text()) if run_file.exists() else {}
    for key in ("protocol", "source", "data_options"):
        if previous.get(key) != run.get(key):
            raise ResumeMismatchError(
                f"{outdir} holds results with another {key} ({previous.get(key)} vs {run.get(key)}); use another "
                "output folder or overwrite=True / --overwrite to start again"
            )


def evaluate_dataset(
    dataset: DepthDataset,
    predictor,
    outdir: str | os.PathLike,
    protocol: Protocol,
    *,
    source: dict | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 1,
    workers: int = 0,
    save_predictions: bool = False,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``predictor`` on ``dataset`` under ``protocol``, writing into ``outdir``; resumable.

    Args:
        predictor: callable ``list[sample] -> list[[h, w] tensor]`` (:class:`PipelinePredictor`,
            :class:`SavedPredictions` or your own).
        source: what produced the predictions (model, prior, dtype, ...): recorded, and a resumed run
            must match it.
        device: where the metrics are computed (default: the predictions' device).
        batch_size: samples per predictor call. workers: DataLoader worker processes for reading.
        limit: evaluate only the first ``limit`` samples of the split (smoke runs).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    run = {"dataset": dataset.name, "data": str(dataset.root), "split": str(dataset.split),
           "data_options": dataset.settings(), "protocol": protocol.to_dict(), "source": source or {}}
    _check_resume(outdir, run, overwrite)
    save_json(outdir / "run.json", run)

    entries = dataset.entries if limit is None else dataset.entries[:limit]
    if limit is None and dataset.expected_samples not in (None, len(entries)):
        logger.warning("%s: %d samples, but the protocol evaluates %d: is %s the right split list?",
                       dataset.name, len(entries), dataset.expected_samples, dataset.split)
    csv_file = outdir / "per_sample.csv"
    rows, todo = _resume(csv_file, entries, dataset.name)
    fields = [f for f in CSV_FIELDS if protocol.edge_metrics or f not in EDGE_METRICS]
    scorer = _Scorer(predictor, protocol, device, outdir / "predictions" if save_predictions else None, rows)
    try:
        _score_in_batches(dataset, todo, scorer, batch_size, workers, progress,
                          flush=lambda: _write_csv(csv_file, rows, fields))
    finally:
        _write_csv(csv_file, _in_split_order(rows, entries), fields)

    summary = summarize(dataset, rows, scorer.failed, protocol, run, len(entries))
    save_json(outdir / "summary.json", summary)
    with atomic_open(outdir / "table.md", "w") as f:
        f.write(dataset_table(summary))
    return EvalResult(summary=summary, rows=rows, failed=scorer.failed)


def _resume(csv_file: Path, entries, name: str) -> tuple[list[dict], list[int]]:
    """The rows already in ``csv_file`` for ``entries``, and the indices of the entries still to evaluate."""
    wanted = {e[0] for e in entries}
    rows = [r for r in _read_csv(csv_file) if r["rgb_path"] in wanted] if csv_file.exists() else []
    done = {r["rgb_path"] for r in rows}
    if done:
        logger.info("%s: resuming, %d of %d samples already evaluated", name, len(done), len(entries))
    return rows, [i for i, e in enumerate(entries) if e[0] not in done]


@dataclass
class _Scorer:
    """Predicts and scores batches of samples: a row per scored sample into ``rows``, ``(rgb_path, reason)``
    per sample that could not be predicted or scored into ``failed``. ``pred_dir``: save the predictions there."""

    predictor: Callable[[list[dict]], list[torch.Tensor]]
    protocol: Protocol
    device: torch.device | str | None
    pred_dir: Path | None
    rows: list[dict]
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, rgb_path: str, reason: str) -> None:
        self.failed.append((rgb_path, reason))
        logger.error("%s: %s", rgb_path, reason)

    def __call__(self, batch: list[dict]) -> None:
        try:
            preds = self.predictor(batch)
        except Exception as e:  # noqa: BLE001 - isolate the bad sample below
            if len(batch) > 1:
                for s in batch:
                    self([s])
                return
            self.fail(batch[0]["rgb_path"], f"prediction failed ({type(e).__name__}: {e})")
            return
        for sample, pred in zip(batch, preds):
            self.score(sample, pred)

    def score(self, sample: dict, pred: torch.Tensor) -> None:
        """One prediction ``[h, w]``: saved (with ``pred_dir``), scored, its row recorded."""
        try:
            if self.pred_dir is not None:
                save_npy(prediction_path(self.pred_dir, sample["rgb_path"]), pred.float().cpu().numpy())
            target = pred.to(self.device) if self.device is not None else pred
            row = evaluate_sample(target, sample, self.protocol)
        except Exception as e:  # noqa: BLE001 - reported per sample
            self.fail(sample["rgb_path"], f"evaluation failed ({type(e).__name__}: {e})")
            return
        if row["n_valid"] < 2:
            logger.warning("%s: %d valid ground-truth pixels (fewer than 2): recorded without metrics, "
                           "listed in the summary; the result is incomplete", sample["rgb_path"], row["n_valid"])
        elif row["n_nonfinite"]:
            logger.warning("%s: the prediction is NaN or infinite on %d of the %d valid pixels; they are left "
                           "out of the fit and the metrics (counted in the summary)", sample["rgb_path"],
                           row["n_nonfinite"], row["n_valid"])
        self.rows.append({"rgb_path": sample["rgb_path"], **row})


def _score_in_batches(dataset: DepthDataset, todo: list[int], scorer: _Scorer, batch_size: int, workers: int,
                      progress: bool, flush: Callable[[], None]) -> None:
    """Read the samples ``todo`` (``workers`` processes), group equal-sized ones into batches of at most
    ``batch_size`` for ``scorer``; ``flush`` (write the CSV so far) at most every :data:`FLUSH_SECONDS`."""
    from tqdm.auto import tqdm

    loader = DataLoader(_Guarded(dataset, todo), batch_size=None, num_workers=workers)
    bar = tqdm(total=len(todo), desc=f"evaluate {dataset.name}", unit="img", disable=not progress or None)
    batch: list[dict] = []
    last_flush = time.monotonic()
    try:
        for sample in loader:
            if "error" in sample:
                scorer.fail(sample["rgb_path"], sample["error"])
                bar.update(1)
                continue
            if batch and (len(batch) >= batch_size or batch[0]["rgb"].shape != sample["rgb"].shape):
                scorer(batch)
                bar.update(len(batch))
                batch = []
            batch.append(sample)
            if time.monotonic() - last_flush > FLUSH_SECONDS:
                flush()
                last_flush = time.monotonic()
        if batch:
            scorer(batch)
            bar.update(len(batch))
    finally:
        bar.close()


def _in_split_order(rows: list[dict], entries) -> list[dict]:
    order = {e[0]: i for i, e in enumerate(entries)}
    return sorted(rows, key=lambda r: order.get(r["rgb_path"], len(order)))


def _count(value) -> int:
    """A pixel count read back from the CSV (absent or empty in files written before the column existed)."""
    return 0 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def summarize(dataset: DepthDataset, rows: list[dict], failed: list[tuple[str, str]], protocol: Protocol,
              run: dict, num_samples: int) -> dict:
    """Means over images (NaN rows left out per metric) with the counts that qualify them."""
    scored = [r for r in rows if r["n_valid"] >= 2]
    without_gt = [r["rgb_path"] for r in rows if r["n_valid"] < 2]
    keys = [*METRICS, *(EDGE_METRICS if protocol.edge_metrics else ())]
    means, counts = mean_over_images(scored, keys)
    missing = [e[0] for e in dataset.missing_entries]
    nonfinite = [(r["rgb_path"], _count(r.get("n_nonfinite"))) for r in scored]
    nonfinite = [(p, n) for p, n in nonfinite if n]
    return {
        "dataset": dataset.name,
        "data": run["data"],
        "split": run["split"],
        "samples": num_samples,
        "expected_samples": dataset.expected_samples,
        "evaluated": len(scored),
        "without_valid_pixels": len(without_gt),
        "without_valid_gt": without_gt,
        "nonfinite_predictions": {"policy": protocol.nonfinite, "samples": len(nonfinite),
                                  "pixels": sum(n for _, n in nonfinite), "rgb_paths": [p for p, _ in nonfinite]},
        "failed": [{"rgb_path": p, "error": e} for p, e in failed],
        "not_evaluated": num_samples - len(rows),
        "skipped_missing_files": missing,
        "excluded_without_gt": getattr(dataset, "num_without_gt", 0),
        "complete": len(rows) == num_samples and not failed and not missing and not without_gt,
        "metrics": {k: (None if math.isnan(v) else v) for k, v in means.items()},  # JSON has no NaN
        "metric_counts": counts,
        "protocol": protocol.to_dict(),
        "data_options": run["data_options"],
        "source": run["source"],
    }
