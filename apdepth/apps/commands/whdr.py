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

from .common import add_model_arguments

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[2] / "evaluation" / "whdr_data"
DEFAULT_LABELS = DATA_DIR / "pairs.csv"
DEFAULT_IMAGES = DATA_DIR / "images"
METHODS = ("model", "prior", "ramp", "constant")


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


def evaluate_whdr(labels: dict, images_dir: Path, methods: list[str], pipe=None,
                  processing_resolution: int | None = None, tie_penalty: float = 0.5) -> dict:
    """WHDR of each method over the labelled images.

    Returns ``{"whdr": {method: value}, "whdr_closer_not_lower": {method: value}, "per_image": ...}``;
    the second is the WHDR over the pairs whose closer point is not lower in the image than the
    other (those a "lower is closer" rule such as the ramp cannot get right). ``model`` and ``prior``
    need ``pipe`` (an :class:`~apdepth.pipeline.ApDepthPipeline`); they are read at the processing
    resolution, the labelled points mapped to it. The prior's disparity is negated (only the order
    matters).
    """
    import numpy as np

    from ...evaluation import whdr
    from ...io import read_image

    if {"model", "prior"} & set(methods) and pipe is None:
        raise ValueError("the model and prior rows need a pipeline")
    errors: dict[str, list] = {m: [] for m in methods}  # method -> per-image error arrays [N]
    weights, not_lower, per_image = [], [], {}
    for name, pairs in labels.items():
        image = read_image(Path(images_dir) / name).convert("RGB")
        size = image.size  # (W, H)
        maps = {}
        if pipe is not None and {"model", "prior"} & set(methods):
            out = pipe(image, processing_resolution=processing_resolution, match_input_resolution=False,
                       output_type="np", output_prior="prior" in methods)
            maps["model"] = out.depth[0]  # [h, w], near small
            if out.prior is not None:
                maps["prior"] = -out.prior[0]  # disparity [h, w] -> far large
        maps["ramp"] = whdr.vertical_ramp(size[1], size[0])
        maps["constant"] = whdr.constant_depth(size[1], size[0])
        y_near = np.where(pairs.closer == 2, pairs.point2[:, 1], pairs.point1[:, 1])
        y_far = np.where(pairs.closer == 2, pairs.point1[:, 1], pairs.point2[:, 1])
        weights.append(pairs.weight)
        not_lower.append((pairs.closer != 0) & (y_near <= y_far))
        row = {"pairs": len(pairs)}
        for method in methods:
            d1 = whdr.sample_points(maps[method], pairs.point1, size)
            d2 = whdr.sample_points(maps[method], pairs.point2, size)
            errors[method].append(whdr.disagreement(d1, d2, pairs.closer, tie_penalty=tie_penalty))
            row[method] = float((pairs.weight * errors[method][-1]).sum() / pairs.weight.sum())
        per_image[name] = row
        logger.debug("%s: %s", name, row)
    weight, mask = np.concatenate(weights), np.concatenate(not_lower)

    def rate(error: np.ndarray, keep: np.ndarray) -> float | None:
        return float((weight * error)[keep].sum() / weight[keep].sum()) if weight[keep].sum() > 0 else None

    everything = np.ones_like(mask)
    return {
        "whdr": {m: rate(np.concatenate(e), everything) for m, e in errors.items()},
        "pairs_closer_not_lower": int(mask.sum()),
        "whdr_closer_not_lower": {m: rate(np.concatenate(e), mask) for m, e in errors.items()},
        "per_image": per_image,
    }


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
