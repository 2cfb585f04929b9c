"""Predict depth for images, folders (searched recursively) and text files listing image paths.

Outputs mirror the input folders under OUTDIR: <name>_depth.npy (float32 in [0, 1], near small),
<name>_depth.png (16-bit, depth * 65535), <name>_depth_color.png (colour map) and, on request,
<name>_depth.exr / <name>_depth.tif (float32 EXR / TIFF: --formats exr,tiff32), <name>_points.ply
(coloured point cloud), <name>_depth_metric.npy (with --sparse-depth; also as .exr/.tif with those
formats, and as millimetre 16-bit PNG <name>_depth_metric_mm.png with png16mm) and <name>_depth_std.npy
(with --tta). Unreadable files are reported by name and skipped; the exit
status is non-zero if any input failed.

Several processes (`accelerate launch -m apdepth predict ...` or torchrun) split the inputs between
them, one GPU each; the report covers all of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import predict_extras
from .common import add_model_arguments
from .export import add_backend_arguments, load_backend_pipeline

logger = logging.getLogger(__name__)

FORMATS = ("npy", "png16", "color", "ply", "exr", "tiff32", "png16mm")
SUFFIXES = {"npy": "_depth.npy", "png16": "_depth.png", "color": "_depth_color.png", "ply": "_points.ply",
            "exr": "_depth.exr", "tiff32": "_depth.tif"}  # png16mm (metric, --sparse-depth): predict_extras
LIST_EXTENSIONS = (".txt", ".lst", ".list")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders (recursive) or .txt files listing image paths")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    parser.add_argument("--formats", default="npy,png16,color",
                        help=f"comma-separated outputs among {','.join(FORMATS)} (default: npy,png16,color)")
    parser.add_argument("--colormap", default="Spectral", help="matplotlib colour map for 'color' (default: Spectral)")
    parser.add_argument("--processing-res", type=int, default=None,
                        help="long edge used for inference; 0 = native size (default: the checkpoint's)")
    parser.add_argument("--no-match-input-res", action="store_true",
                        help="keep outputs at the processing resolution instead of the input size")
    parser.add_argument("--resample", default="bilinear", help="resize interpolation (default: bilinear)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--skip-existing", action="store_true", help="skip inputs whose outputs all exist")
    predict_extras.add_arguments(parser)
    add_model_arguments(parser)
    add_backend_arguments(parser)


@dataclass
class WorkItem:
    source: Path
    stem: str  # output path without suffix, relative to OUTDIR


@dataclass
class Report:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        logger.error("%s", reason)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--formats: unknown {bad or text!r}; choose among {', '.join(FORMATS)}")
    return formats


def collect_inputs(inputs: list[str], report: Report) -> list[WorkItem]:
    """Expand files, folders and list files into work items with unique output stems."""
    from ..io import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                logger.warning("%s: no images (%s) in this folder", path, ", ".join(IMAGE_EXTENSIONS))
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            base = path.parent
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                entry = Path(line.split()[0])
                entry = entry if entry.is_absolute() else base / entry
                try:
                    rel = entry.relative_to(base)
                except ValueError:
                    rel = Path(entry.name)
                found.append((entry, rel))
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            report.fail(str(path), f"{path}: no such file or folder")

    items: list[WorkItem] = []
    used: set[str] = set()
    for source, rel in found:
        stem = str(rel.with_suffix(""))
        if stem in used:  # a.jpg and a.png in one folder: keep both, name the second by its extension
            stem = f"{stem}_{rel.suffix.lstrip('.').lower()}"
        if stem in used:
            report.fail(str(source), f"{source}: another input already writes {stem}*")
            continue
        used.add(stem)
        items.append(WorkItem(source, stem))
    return items


def output_paths(outdir: Path, item: WorkItem, formats: list[str],
                 extras: predict_extras.Extras | None = None) -> dict[str, Path]:
    paths = {fmt: outdir / (item.stem + SUFFIXES[fmt]) for fmt in formats if fmt in SUFFIXES}
    return {**paths, **extras.paths(outdir, item.stem)} if extras is not None else paths


def write_outputs(paths: dict[str, Path], depth, colored) -> None:
    from ..depth_io import save_float_depth
    from ..image_utils import depth_to_uint16
    from ..io import save_image, save_npy

    for fmt, path in paths.items():
        if fmt == "npy":
            save_npy(path, depth.astype("float32"))
        elif fmt == "png16":
            save_image(path, depth_to_uint16(depth))
        elif fmt == "color":
            save_image(path, colored)
        elif fmt in ("exr", "tiff32"):
            save_float_depth(fmt, path, depth, "affine-invariant depth in [0, 1], near small (apdepth)")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..io import ImageReadError, read_image
    from .common import distributed_state, load_pipeline

    formats = parse_formats(args.formats)
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be >= 1")
    state = distributed_state(args.device)
    is_main = state is None or state.is_main_process
    report = Report()
    items = collect_inputs(args.inputs, report if is_main else Report())  # input errors reported once
    extras = predict_extras.Extras.from_args(args, formats, len(items))
    todo = []
    for item in items:
        paths = output_paths(args.output, item, formats, extras)
        if args.skip_existing and all(p.is_file() for p in paths.values()):
            report.skipped += is_main  # every process sees every input: count skips once
        else:
            todo.append((item, paths))

    if state is not None:  # this process's share; the input order is the same in every process
        total = len(todo)
        with state.split_between_processes(todo) as share:
            todo = list(share)
        logger.info("process %d of %d: %d of %d images", state.process_index, state.num_processes, len(todo), total)

    if todo:
        pipe = load_backend_pipeline(args)  # None: torch
        if pipe is None:
            pipe = load_pipeline(args, device=state.device if state is not None else None)
        colormap = args.colormap if "color" in formats else None
        call = dict(processing_resolution=args.processing_res, match_input_resolution=not args.no_match_input_res,
                    resample=args.resample, colormap=colormap, output_type="np")

        def read(entry):
            try:
                return read_image(entry[0].source)
            except ImageReadError as e:
                return e

        bar = tqdm(total=len(todo), desc="predict", unit="img", disable=None if is_main else True)
        with ThreadPoolExecutor(max_workers=2) as pool:  # decode the next images while the model runs
            images_iter = pool.map(read, todo)
            batch = []
            for entry, image in zip(todo, images_iter):
                if isinstance(image, ImageReadError):
                    report.fail(str(entry[0].source), str(image))
                    bar.update(1)
                    continue
                batch.append((entry, image))
                if len(batch) == args.batch_size:
                    _predict_batch(pipe, batch, call, report, extras)
                    bar.update(len(batch))
                    batch = []
            if batch:
                _predict_batch(pipe, batch, call, report, extras)
                bar.update(len(batch))
        bar.close()

    if state is not None:
        report = merge_reports(state, report)
        # An orderly end for every process: left to the interpreter's exit, a process whose share was empty
        # could tear its process group down while the other still used it (seen once as SIGABRT under load).
        state.wait_for_everyone()
        state.destroy_process_group()
        if not is_main:
            return 1 if report.failed else 0
    print(f"apdepth predict: {report.done} done, {report.skipped} skipped, {len(report.failed)} failed "
          f"-> {args.output}", file=sys.stderr)
    for _, reason in report.failed:
        print(f"  FAILED {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def merge_reports(state, report: Report) -> Report:
    """Every process's report combined (all processes receive the total)."""
    from accelerate.utils import gather_object

    merged = Report()
    for part in gather_object([report]):
        merged.done += part.done
        merged.skipped += part.skipped
        merged.failed.extend(part.failed)
    return merged


def _predict_batch(pipe, batch, call: dict, report: Report, extras: predict_extras.Extras) -> None:
    """Run one batch; if it fails, retry its images one by one so one bad image fails alone."""
    try:
        results = extras.predict(pipe, [image for _, image in batch], call)
    except Exception as e:  # noqa: BLE001 - isolated below, then reported per file
        if len(batch) == 1:
            (item, _), _ = batch[0]
            report.fail(str(item.source), f"{item.source}: prediction failed ({type(e).__name__}: {e})")
            return
        for single in batch:
            _predict_batch(pipe, [single], call, report, extras)
        return
    for ((item, paths), image), result in zip(batch, results):
        try:
            write_outputs(paths, result["depth"], result["colored"])
            problems = extras.write(item.source, item.stem, paths, image, result)
        except OSError as e:
            report.fail(str(item.source), f"{item.source}: cannot write outputs ({e})")
            continue
        for problem in problems:
            report.fail(str(item.source), problem)
        if not problems:
            report.done += 1
