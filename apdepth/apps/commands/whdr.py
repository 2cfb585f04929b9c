"""Relative depth on real photographs: the weighted human disagreement rate (WHDR) of a model on
point pairs labelled by a person ("which point is closer?"), as in Depth in the Wild.

By default it runs the model (default: the released checkpoint if cached, else the embedded model)
over the photographs and labels shipped in the package (apdepth/evaluation/whdr_data: 21 photographs
from Python packages, their sources in SOURCES.md) and reports four rows: the model, its prior alone,
a vertical ramp (far at the top, near at the bottom) and a constant map. Lower is better; a constant
scores 0.5 (ties count half). The report is JSON, on stdout and in --output. See
docs/evaluation-whdr.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ...evaluation.whdr import DATA_DIR, DEFAULT_IMAGES, DEFAULT_LABELS, METHODS, evaluate_whdr  # noqa: F401
from .common import add_model_arguments

logger = logging.getLogger(__name__)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("labels")
    g.add_argument("--labels", type=Path, default=DEFAULT_LABELS,
                   help="label CSV (image,x1,y1,x2,y2,closer[,weight]; default: the packaged pairs)")
    g.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help="folder holding the labelled images (default: the packaged photographs)")
    g.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated rows among {','.join(METHODS)} (default: all)")
    g.add_argument("--tie-penalty", type=float, default=0.5,
                   help="error of a pair the prediction calls equal (default: 0.5, a coin flip; 1 = strict)")
    g = parser.add_argument_group("run")
    g.add_argument("--processing-res", type=int, default=None,
                   help="long edge used for inference; 0 = native size (default: the checkpoint's)")
    g.add_argument("-o", "--output", type=Path, default=None, metavar="JSON",
                   help="also write the report to this file")
    add_model_arguments(parser)


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"--methods: unknown {unknown or text!r}; choose among {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def run(args: argparse.Namespace) -> int:
    from ...evaluation.whdr import read_labels
    from ...io import atomic_open

    methods = parse_methods(args.methods)
    labels = read_labels(args.labels)
    missing = [name for name in labels if not (args.images / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{args.images}: labelled images not found: {', '.join(missing)}")
    pipe, model = None, None
    if {"model", "prior"} & set(methods):
        from .common import load_pipeline

        pipe = load_pipeline(args)
        model = args.model
    start = time.perf_counter()
    result = evaluate_whdr(labels, args.images, methods, pipe, args.processing_res, args.tie_penalty)
    report = {
        "labels": str(args.labels),
        "images": len(labels),
        "pairs": sum(len(p) for p in labels.values()),
        "model": model,
        "processing_resolution": args.processing_res if pipe is None or args.processing_res is not None
        else pipe.config.default_processing_resolution,
        "tie_penalty": args.tie_penalty,
        "seconds": round(time.perf_counter() - start, 2),
        **result,
    }
    text = json.dumps(report, indent=2)
    if args.output is not None:
        with atomic_open(args.output, "w") as f:
            f.write(text + "\n")
    print(text)
    for method, value in report["whdr"].items():
        hard = report["whdr_closer_not_lower"][method]
        logger.info("WHDR %-8s %.4f on %d pairs in %d images; %s on the %d pairs whose closer point is not lower",
                    method, value, report["pairs"], report["images"], "n/a" if hard is None else f"{hard:.4f}",
                    report["pairs_closer_not_lower"])
    return 0
