"""Evaluate on the zero-shot benchmarks of the paper's Table 1: NYUv2, KITTI, ETH3D, ScanNet and DIODE.
Name data sets with --dataset (repeatable; 'all' for the five) and give each its --data (archive or
folder) and --split (list file), or point --data-root and --split-root at Marigold's archives and
split lists, or list them in a YAML/JSON file with --config. Predictions come from the model (--model,
default the released checkpoint) or from saved .npy files (--predictions DIR). Each data set writes
OUTDIR/<name>/ (per_sample.csv, summary.json, table.md) and OUTDIR/results.md holds one table in
Table 1's layout; a re-run skips the samples already scored. The defaults are the protocol of
Marigold's evaluation code (and, for DIODE, the paper's mask, which the authors' code uses). The exit
status is 1 if any data set is incomplete: a sample failed, was missing, or had no valid ground truth.
See docs/evaluation.md."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ...data import EVAL_DATASETS as NAMES  # plain names: no reader (nor torch) is imported
from .common import add_model_arguments, check_model_arguments

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data sets")
    g.add_argument("--dataset", action="append", choices=(*NAMES, "all"), default=[],
                   help="data set to evaluate; repeat for several, 'all' for the five of Table 1")
    g.add_argument("--data", action="append", type=Path, default=[],
                   help="data root of the matching --dataset: its .tar archive or extracted folder")
    g.add_argument("--split", action="append", type=Path, default=[],
                   help="split list of the matching --dataset (one sample a line)")
    g.add_argument("--data-root", type=Path,
                   help="folder holding Marigold's archives (nyuv2/, kitti/, ...) for data sets without --data")
    g.add_argument("--split-root", type=Path,
                   help="folder holding Marigold's split lists (its data_split/) for data sets without --split")
    g.add_argument("--config", type=Path, help="YAML/JSON file listing data sets (see docs/evaluation.md)")
    g.add_argument("--missing", choices=("error", "skip"), default="error",
                   help="split entries whose files are absent: stop (default) or skip with a warning")
    g.add_argument("--kitti-crop", choices=("eigen", "garg", "none"), default="eigen",
                   help="KITTI evaluation crop (default: eigen)")
    g.add_argument("--diode-mask", choices=("paper", "marigold", "range"), default=None,
                   help="DIODE valid pixels: 'paper' (default; the paper's and the authors' code: provided mask, "
                        "Sobel edge mask, 0.6-350 m, finite), 'marigold' (Marigold's code: the provided mask "
                        "only) or 'range' (the paper's without the Sobel part)")
    g.add_argument("--no-diode-edge-mask", action="store_true",
                   help="same as --diode-mask range (NOT Marigold's protocol, which has no range check: "
                        "use --diode-mask marigold)")

    g = parser.add_argument_group("protocol")
    g.add_argument("--predictions", type=Path,
                   help="evaluate saved .npy predictions in this folder instead of running a model")
    g.add_argument("--processing-res", type=int, default=None,
                   help="long edge for inference, for every data set (default: per data set: "
                        "NYU/KITTI/ScanNet native, ETH3D 756, DIODE 640)")
    g.add_argument("--alignment-space", choices=("depth", "disparity"), default="depth",
                   help="fit scale and shift in depth space (default, the paper) or disparity space "
                        "(for disparity predictions)")
    g.add_argument("--alignment-max-res", type=int, default=None,
                   help="fit the alignment on a nearest subsample for this resolution (default: ETH3D 1024, "
                        "others full; 0: full resolution for every set)")
    g.add_argument("--alignment-subsample", choices=("width", "both"), default=None,
                   help="how that subsample is taken: 'width' (default; Marigold's code: the columns only, "
                        "ETH3D 4032x6048 -> 4032x1024) or 'both' (aspect kept, 682x1024)")
    g.add_argument("--nonfinite", choices=("mask", "reject"), default=None,
                   help="valid pixels where a prediction is NaN or infinite: 'mask' (default) leaves them out "
                        "of the fit and the metrics and counts them; 'reject' fails the sample")
    g.add_argument("--no-edge-metrics", action="store_true", help="skip the boundary F1 and flying-pixel metrics")

    g = parser.add_argument_group("run")
    g.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    g.add_argument("--method", default=None, help="row label in the results table (default: the model or folder)")
    g.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    g.add_argument("--workers", type=int, default=2, help="data loading processes (default: 2; 0 = main process)")
    g.add_argument("--save-predictions", action="store_true",
                   help="also write each prediction to OUTDIR/<dataset>/predictions/ (.npy)")
    g.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples of each split")
    g.add_argument("--overwrite", action="store_true", help="discard earlier results in OUTDIR instead of resuming")
    add_model_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """Model options (paths, --processing-res bound) checked before anything loads (raises UsageError)."""
    check_model_arguments(args)


def resolve_specs(args: argparse.Namespace):
    """The data sets to evaluate, from --config or --dataset/--data/--split/--data-root/--split-root."""
    from ...evaluation import DatasetSpec, load_config
    from ...evaluation.presets import table1_data, table1_split

    if args.config is not None:
        if args.dataset or args.data or args.split:
            raise ValueError("--config lists the data sets: do not combine it with --dataset/--data/--split")
        return load_config(args.config)
    if not args.dataset:
        raise ValueError("name the data sets: --dataset NAME (repeatable, or 'all'), or --config FILE")
    names = [n for d in args.dataset for n in (NAMES if d == "all" else (d,))]
    if len(set(names)) != len(names):
        raise ValueError(f"a data set is named twice: {names}")
    for flag, values in (("--data", args.data), ("--split", args.split)):
        if values and len(values) != len(names):
            raise ValueError(f"give one {flag} per data set ({len(names)} data sets, {len(values)} {flag})")
    specs = []
    for i, name in enumerate(names):
        if args.data:
            data = args.data[i]
        elif args.data_root is not None:
            data = table1_data(name, args.data_root)
        else:
            raise ValueError(f"{name}: give --data PATH, or --data-root DIR holding Marigold's archives")
        if args.split:
            split = args.split[i]
        elif args.split_root is not None:
            split = table1_split(name, args.split_root)
        else:
            raise ValueError(f"{name}: give --split FILE, or --split-root DIR holding Marigold's split lists")
        specs.append(DatasetSpec(name=name, data=data, split=split))
    return specs


def build_dataset(spec, args):
    from ...data import get_dataset

    options = {"missing": args.missing}
    if spec.name == "kitti":
        options["eval_crop"] = None if args.kitti_crop == "none" else args.kitti_crop
    if spec.name == "diode":
        if args.no_diode_edge_mask and args.diode_mask not in (None, "range"):
            raise ValueError(f"--no-diode-edge-mask is --diode-mask range; it contradicts --diode-mask {args.diode_mask}")
        mask = "range" if args.no_diode_edge_mask else args.diode_mask
        if mask is not None:
            options["mask"] = mask
    options.update(spec.options)
    try:
        return get_dataset(spec.name, spec.data, spec.split, **options)
    except TypeError as e:  # an unknown option from a config file
        raise ValueError(f"{spec.name}: bad data set option ({e})") from e


def predictions_folder(root: Path, spec) -> Path:
    if spec.predictions is not None:
        return spec.predictions
    for candidate in (root / spec.name / "predictions", root / spec.name, root):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{spec.name}: predictions folder {root} does not exist")


class _LazyPipeline:
    """Forwards calls to the pipeline, loading it on first use."""

    def __init__(self, args: argparse.Namespace, loader):
        self.args, self.loader, self.pipe = args, loader, None

    def __call__(self, *args, **kwargs):
        if self.pipe is None:
            self.pipe = self.loader(self.args)
        return self.pipe(*args, **kwargs)


def run(args: argparse.Namespace) -> int:
    from .common import load_pipeline, resolve_device, resolve_model

    if args.batch_size < 1 or args.workers < 0 or (args.limit is not None and args.limit < 1):
        raise SystemExit("--batch-size and --limit must be >= 1, --workers >= 0")
    if args.predictions is not None and args.model is not None:
        raise SystemExit("give --model or --predictions, not both")
    if args.predictions is None:
        resolve_model(args)  # args.model: what evaluates (recorded with the results)
    device = resolve_device(args.device)  # where load_pipeline puts the model, and the metrics run
    pipe = _LazyPipeline(args, load_pipeline)  # loaded on the first prediction: a finished resume needs none
    method = args.method or (str(args.predictions) if args.predictions is not None else args.model)
    try:  # check every data set, setting and predictions folder before any work
        jobs = [plan_job(spec, args, pipe, device) for spec in resolve_specs(args)]
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"apdepth evaluate: {e}") from None
    incomplete = []  # (name, result) of the data sets with failed, missing or unscored samples
    for job in jobs:
        result = run_job(job, args, device)
        if not result.ok:
            incomplete.append((job[0].name, result))
    return report_results(args.output, method, incomplete)


def plan_job(spec, args: argparse.Namespace, pipe, device) -> tuple:
    """(spec, dataset, protocol, predictor, source) of one data set: everything checked, nothing run yet."""
    from ...evaluation import PipelinePredictor, Protocol, SavedPredictions

    dataset = build_dataset(spec, args)
    overrides = {"processing_resolution": args.processing_res, "alignment_space": args.alignment_space,
                 "alignment_max_resolution": args.alignment_max_res,
                 "alignment_subsample": args.alignment_subsample, "nonfinite": args.nonfinite,
                 "edge_metrics": False if args.no_edge_metrics else None, **spec.protocol}
    protocol = Protocol.for_dataset(dataset, **overrides)
    if spec.predictions is not None or args.predictions is not None:
        folder = predictions_folder(args.predictions, spec)
        predictor = SavedPredictions(folder, device=device)
        source = {"predictions": str(Path(folder).resolve())}
    else:
        predictor = PipelinePredictor(pipe, protocol.processing_resolution, protocol.resample)
        source = {"model": args.model, "prior": args.prior, "dtype": args.dtype}
    return spec, dataset, protocol, predictor, source


def run_job(job: tuple, args: argparse.Namespace, device):
    """Evaluate one data set (resuming what OUTDIR/<name> already holds); prints its table."""
    from ...evaluation import ResumeMismatchError, evaluate_dataset
    from ...evaluation.report import dataset_table

    spec, dataset, protocol, predictor, source = job
    logger.info("%s: %d samples from %s (processing resolution %s)", spec.name, len(dataset), spec.data,
                protocol.processing_resolution or "native")
    try:
        result = evaluate_dataset(
            dataset, predictor, args.output / spec.name, protocol, source=source, device=device,
            batch_size=args.batch_size, workers=args.workers, save_predictions=args.save_predictions,
            limit=args.limit, overwrite=args.overwrite,
        )
    except ResumeMismatchError as e:
        raise SystemExit(f"apdepth evaluate: {e}") from None
    print(dataset_table(result.summary), file=sys.stderr)
    return result


def report_results(output: Path, method: str, incomplete: list) -> int:
    """OUTDIR/results.md and Table 1 on stderr, then what was incomplete or left out; the exit status."""
    from ...evaluation import table1, write_combined_report

    summaries = write_combined_report(output, method=method)
    print(table1(summaries, method=method), file=sys.stderr)
    print(f"apdepth evaluate: results in {output}/results.md", file=sys.stderr)
    for name, result in incomplete:
        s = result.summary
        print(f"  {name}: INCOMPLETE ({len(s['failed'])} failed, {s['not_evaluated']} not evaluated, "
              f"{len(s['skipped_missing_files'])} missing from the data, {len(s['without_valid_gt'])} without "
              "valid ground truth)", file=sys.stderr)
        for item in s["failed"]:
            print(f"    FAILED {item['rgb_path']}: {item['error']}", file=sys.stderr)
        for path in s["without_valid_gt"]:
            print(f"    NO VALID GROUND TRUTH {path}: not in the means", file=sys.stderr)
    for name, summary in summaries.items():
        nonfinite = summary.get("nonfinite_predictions") or {}
        if nonfinite.get("pixels"):
            print(f"  {name}: {nonfinite['pixels']} valid pixels in {nonfinite['samples']} samples had NaN or "
                  "infinite predictions and were left out (--nonfinite reject fails such samples)", file=sys.stderr)
    return 1 if incomplete else 0
