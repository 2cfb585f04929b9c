"""Averages over images, and the Markdown tables (Table 1's layout: AbsRel and delta1 x 100)."""

from __future__ import annotations

import math

from ..data import EVAL_DATASETS
from .metrics import LOWER_IS_BETTER, METRICS
from .protocol import EDGE_METRICS

DISPLAY_NAMES = {"nyu": "NYUv2", "kitti": "KITTI", "eth3d": "ETH3D", "scannet": "ScanNet", "diode": "DIODE"}
# Paper Table 1, ApDepth row: (AbsRel x100, delta1 x100).
PAPER_APDEPTH = {"nyu": (4.5, 97.3), "kitti": (8.7, 93.7), "eth3d": (5.6, 96.3), "scannet": (4.5, 97.3),
                 "diode": (8.3, 93.2)}
PERCENT = {"abs_rel", "delta1", "delta2", "delta3", *EDGE_METRICS}  # shown x 100, as in the paper


def mean_over_images(rows: list[dict], keys) -> tuple[dict[str, float], dict[str, int]]:
    """Per-key mean over the rows where the value is defined (not NaN), and how many rows that was."""
    means, counts = {}, {}
    for key in keys:
        values = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
        means[key] = sum(values) / len(values) if values else math.nan
        counts[key] = len(values)
    return means, counts


def _fmt(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value * scale:.{digits}f}"


def _arrow(key: str) -> str:
    return "↓" if key in LOWER_IS_BETTER or key == "flying_pixels" else "↑"


def dataset_table(summary: dict) -> str:
    """All metrics of one data set as a one-row Markdown table (ratios x100, RMSE in metres)."""
    metrics = summary["metrics"]
    keys = [k for k in (*METRICS, *EDGE_METRICS) if k in metrics]
    header = "| " + " | ".join(f"{k}{_arrow(k)}" for k in keys) + " |"
    values = []
    for k in keys:
        values.append(_fmt(metrics[k]) if k in PERCENT else _fmt(metrics[k], 1.0, 3))
    notes = []
    if summary.get("without_valid_gt"):
        notes.append(f"{len(summary['without_valid_gt'])} samples without valid ground-truth pixels are not in "
                     "the means (summary.json: without_valid_gt).")
    nonfinite = summary.get("nonfinite_predictions") or {}
    if nonfinite.get("pixels"):
        notes.append(f"{nonfinite['pixels']} valid pixels in {nonfinite['samples']} samples had NaN or infinite "
                     "predictions and were left out (summary.json: nonfinite_predictions).")
    lines = [
        f"### {DISPLAY_NAMES.get(summary['dataset'], summary['dataset'])}: {summary['evaluated']} images"
        + ("" if summary.get("complete", True) else " (INCOMPLETE: see summary.json)"),
        "",
        *(notes + [""] if notes else []),
        header,
        "|" + "---|" * len(keys),
        "| " + " | ".join(values) + " |",
        "",
        "AbsRel, delta, boundary F1 and flying pixels x 100; SqRel and RMSE in metres, iRMSE in 1/m, "
        "SILog = 100 * sqrt(var(log error)).",
    ]
    return "\n".join(lines) + "\n"


def table1(summaries: dict[str, dict], method: str = "ApDepth (this run)", paper_row: bool = True) -> str:
    """Markdown in the layout of the paper's Table 1 (AbsRel and delta1 x 100 per data set), followed by
    the edge metrics (boundary F1 and flying-pixel ratio x 100) for the same data sets."""
    names = [n for n in EVAL_DATASETS if n in summaries] + sorted(set(summaries) - set(EVAL_DATASETS))
    head = "| Method | " + " | ".join(f"{DISPLAY_NAMES.get(n, n)} AbsRel↓ | {DISPLAY_NAMES.get(n, n)} δ1↑"
                                     for n in names) + " |"
    rule = "|---|" + "---|---|" * len(names)

    def row(label: str, pairs: list[tuple[str, str]]) -> str:
        return f"| {label} | " + " | ".join(f"{a} | {b}" for a, b in pairs) + " |"

    ours = []
    for n in names:
        m = summaries[n]["metrics"]
        mark = "" if summaries[n].get("complete", True) else "*"
        ours.append((_fmt(m.get("abs_rel")) + mark, _fmt(m.get("delta1")) + mark))
    lines = [head, rule, row(method, ours)]
    if paper_row:
        lines.append(row("ApDepth (paper, Table 1)",
                         [tuple(f"{v:.1f}" for v in PAPER_APDEPTH[n]) if n in PAPER_APDEPTH else ("-", "-")
                          for n in names]))
    if any(not summaries[n].get("complete", True) for n in names):
        lines += ["", "\\* incomplete: some samples failed or were not evaluated (see summary.json)."]

    edge_names = [n for n in names if any(k in summaries[n]["metrics"] for k in EDGE_METRICS)]
    if edge_names:
        lines += [
            "",
            "| Method | " + " | ".join(f"{DISPLAY_NAMES.get(n, n)} F1↑ | {DISPLAY_NAMES.get(n, n)} flying↓"
                                       for n in edge_names) + " |",
            "|---|" + "---|---|" * len(edge_names),
            row(method, [(_fmt(summaries[n]["metrics"].get("boundary_f1")),
                          _fmt(summaries[n]["metrics"].get("flying_pixels"))) for n in edge_names]),
            "",
            "F1: scale-invariant depth-boundary F1 (Depth Pro), weighted over t = 0.05..0.25, x 100. "
            "flying: share of pixels within 2 px of a GT discontinuity (ratio > 1.25) whose depth floats "
            "between the two sides, x 100. See docs/evaluation.md.",
        ]
    return "\n".join(lines) + "\n"
