"""Predict depth for images, folders (searched recursively) and text files listing image paths.

Outputs mirror the input folders under OUTDIR: <name>_depth.npy (float32 in [0, 1], near small),
<name>_depth.png (16-bit, depth * 65535), <name>_depth_color.png (colour map) and, on request,
<name>_depth.exr / <name>_depth.tif (float32 EXR / TIFF: --formats exr,tiff32), <name>_points.ply
(coloured point cloud), <name>_depth_metric.npy (with --sparse-depth; also as .exr/.tif with those
formats, and as millimetre 16-bit PNG <name>_depth_metric_mm.png with png16mm) and <name>_depth_std.npy
(with --tta). Unreadable files are reported by name and skipped. Folders never
yield apdepth's own outputs (OUTDIR, and any folder an earlier run wrote, are left out). Options and
output folders are checked before the model loads. Ctrl-C stops after the current image and prints the
summary; --skip-existing finishes the run later.

Exit status: 0 all done, 1 some inputs failed, 2 usage error (bad option, nothing to do, output not
writable, model not loadable), 130 interrupted.

Several processes (`accelerate launch -m apdepth predict ...` or torchrun) split the inputs between
them, one GPU each; the report covers all of them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import predict_extras
from .common import (
    RESAMPLE_MODES,
    UsageError,
    add_fast_argument,
    add_model_arguments,
    check_choices,
    check_colormap,
    check_model_arguments,
    split_list,
)
from .export import add_backend_arguments, load_backend_pipeline
from .predict_extras import ExtraOptions, ImageResult
from .predict_inputs import LIST_EXTENSIONS, OUTPUT_MARKER, Report, WorkItem, check_outputs, collect_inputs

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "LIST_EXTENSIONS", "OUTPUT_MARKER", "SUFFIXES", "WRITERS", "PredictOptions", "Report",
           "WorkItem", "collect_inputs", "parse_formats", "run"]

FORMATS = ("npy", "png16", "color", "ply", "exr", "tiff32", "png16mm")
DEFAULT_FORMATS = "npy,png16,color"
SUFFIXES = {"npy": "_depth.npy", "png16": "_depth.png", "color": "_depth_color.png", "ply": "_points.ply",
            "exr": "_depth.exr", "tiff32": "_depth.tif"}  # png16mm (metric, --sparse-depth): predict_extras
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders (recursive; apdepth's own output folders are left out) or "
                             ".txt files listing image paths, one per line")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    parser.add_argument("--formats", nargs="+", default=[DEFAULT_FORMATS], metavar="FORMAT",
                        help=f"outputs among {', '.join(FORMATS)}, separated by commas or spaces "
                             f"(default: {DEFAULT_FORMATS})")
    parser.add_argument("--colormap", default="Spectral", help="matplotlib colour map for 'color' (default: Spectral)")
    parser.add_argument("--processing-res", type=int, default=None,
                        help="long edge used for inference; 0 = native size (default: the checkpoint's; at most "
                             "--max-processing-res)")
    parser.add_argument("--no-match-input-res", action="store_true",
                        help="keep outputs at the processing resolution instead of the input size "
                             "(release semantics: rounded down to multiples of 8, as the VAE returns them)")
    parser.add_argument("--resample", default="bilinear",
                        help=f"resize interpolation: {', '.join(RESAMPLE_MODES)} (default: bilinear)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--skip-existing", action="store_true", help="skip inputs whose outputs all exist")
    parser.add_argument("--quantize", choices=("int8", "int8-dynamic", "fp8"), default=None,
                        help="int8 / fp8 Linear layers in the UNet and VAE (torchao: pip install \"apdepth[quant]\"): "
                             "int8 = weights only (less memory, not faster), int8-dynamic = weights and "
                             "activations (faster fp32 Linear layers on CPUs); the depth moves by under 1e-2 on the "
                             "embedded model (docs/benchmarks/README.md). fp8 = float8 weights and activations "
                             "(CUDA GPUs of compute capability >= 8.9 only: Ada, Hopper; best with bf16 and --fast)")
    predict_extras.add_arguments(parser)
    add_model_arguments(parser)
    add_fast_argument(parser)
    add_backend_arguments(parser)


@dataclass(frozen=True)
class PredictOptions:
    """``apdepth predict``'s options, checked: built once from the command line (:meth:`from_args`). The
    model flags stay in the argparse namespace, for :func:`~.common.load_pipeline`."""

    inputs: tuple[str, ...]
    outdir: Path
    formats: tuple[str, ...]
    colormap: str | None  # None: no 'color' output
    processing_res: int | None
    match_input_res: bool
    resample: str
    batch_size: int
    skip_existing: bool
    extras: ExtraOptions
    quantize: str | None = None  # --quantize: an apdepth.quantization mode, None: float weights

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PredictOptions:
        """Every option that can be checked without the model or the inputs (raises UsageError)."""
        tokens = split_list(args.formats)
        strays = [t for t in tokens if t not in FORMATS and Path(t).exists()]
        if strays:
            raise UsageError(f"--formats: {', '.join(strays)} is an input, not a format: put the INPUTs before "
                             "--formats (or end the list of formats with --)")
        if not args.inputs:
            raise UsageError("give at least one INPUT: an image file, a folder or a .txt list of image paths")
        formats = parse_formats(tokens)
        if "color" in formats and args.colormap != "Spectral":
            check_colormap(args.colormap)
        if args.resample not in RESAMPLE_MODES:
            raise UsageError(f"--resample {args.resample!r}: choose among {', '.join(RESAMPLE_MODES)}")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.output.exists() and not args.output.is_dir():
            raise UsageError(f"-o {args.output}: a file, not a folder")
        check_model_arguments(args)
        _check_quantize(args)
        return cls(tuple(args.inputs), args.output, tuple(formats), args.colormap if "color" in formats else None,
                   args.processing_res, not args.no_match_input_res, args.resample, args.batch_size,
                   args.skip_existing, ExtraOptions.from_args(args, formats), getattr(args, "quantize", None))

    def pipeline_call(self) -> dict:
        """Keyword arguments of every pipeline call."""
        return dict(processing_resolution=self.processing_res, match_input_resolution=self.match_input_res,
                    resample=self.resample, colormap=self.colormap, output_type="np")

    def output_paths(self, item: WorkItem) -> dict[str, Path]:
        """Output key (a format, or an extra such as ``metric``) -> file, for one input."""
        paths = {fmt: self.outdir / (item.stem + SUFFIXES[fmt]) for fmt in self.formats if fmt in SUFFIXES}
        return {**paths, **self.extras.paths(self.outdir, item.stem)}


def _check_quantize(args: argparse.Namespace) -> None:
    """--quantize: torchao installed, the torch backend, no model offload (checked without importing torch);
    --fast: the torch backend."""
    if getattr(args, "fast", False) and getattr(args, "backend", "torch") != "torch":
        raise UsageError(f"--fast sets up the torch pipeline; --backend {args.backend} runs an export")
    if getattr(args, "quantize", None) is None:
        return
    from ...quantization import EXTRA, torchao_available

    if getattr(args, "backend", "torch") != "torch":
        raise UsageError(f"--quantize quantises the torch model; --backend {args.backend} runs an export")
    if getattr(args, "low_memory", False):
        raise UsageError("--quantize and --low-memory cannot be combined (offloading moves the weights each call)")
    if args.quantize == "fp8" and args.device is not None and not args.device.startswith("cuda"):
        raise UsageError(f"--quantize fp8 needs a CUDA GPU of compute capability >= 8.9 (torchao float8: Ada, "
                         f"Hopper); --device is {args.device}")
    if not torchao_available():
        raise UsageError(f"--quantize {args.quantize} needs the optional library torchao: {EXTRA}")


def check(args: argparse.Namespace) -> None:
    """Every option that can be checked without the model or the inputs (raises UsageError); ``run`` uses
    the options built here."""
    args.predict_options = PredictOptions.from_args(args)


def run(args: argparse.Namespace) -> int:
    """The road: options -> inputs and their outputs -> pipeline -> per image the depth-map writers, then the
    post-steps asked for (metric alignment, TTA std, point cloud) -> the summary."""
    from .common import distributed_state

    options = getattr(args, "predict_options", None) or PredictOptions.from_args(args)
    state = distributed_state(args.device)  # None unless launched as several processes
    report = Report()
    todo = plan(options, report, state)  # [(item, paths)]: this process's share, outputs checked writable
    interrupted = False
    if todo:
        pipe = _load_pipeline(args, state, options.quantize)
        steps = [write_depth_maps, *predict_extras.post_steps(options.extras)]
        predict = partial(predict_extras.predictor(options.extras), pipe, call=options.pipeline_call())
        interrupted = predict_all(todo, partial(_predict_batch, predict, steps), options.batch_size, report,
                                  show_progress=state is None or state.is_main_process)
    return summarize(options, state, report, interrupted)


# ---------------------------------------------------------------------------- the road's stages


def plan(options: PredictOptions, report: Report, state) -> list[tuple[WorkItem, dict[str, Path]]]:
    """Inputs -> (item, output paths) still to do, this process's share; the outputs are checked writable
    before the model loads (a read-only or misplaced OUTDIR fails now)."""
    from ...io import clean_stale_temp_files

    is_main = state is None or state.is_main_process
    items = collect_inputs(list(options.inputs), report if is_main else Report(),  # input errors reported once
                           options.outdir, output_image_suffixes())
    if not items:
        reasons = [reason for _, reason in report.failed]
        raise UsageError(f"nothing to do: no images found in {', '.join(options.inputs)}"
                         + (f" ({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})" if reasons else ""))
    options.extras.check_inputs(len(items))
    todo = []
    for item in items:
        paths = options.output_paths(item)
        if options.skip_existing and all(p.is_file() for p in paths.values()):
            report.skipped += is_main  # every process sees every input: count skips once
        else:
            todo.append((item, paths))
    check_outputs(options.outdir, todo)
    if is_main:
        clean_stale_temp_files(options.outdir)
    if state is None:
        return todo
    with state.split_between_processes(todo) as share:  # the input order is the same in every process
        mine = list(share)
    logger.info("process %d of %d: %d of %d images", state.process_index, state.num_processes, len(mine), len(todo))
    return mine


def _load_pipeline(args: argparse.Namespace, state, quantize: str | None = None):
    """The exported model --backend names, else the torch pipeline (on this process's GPU under accelerate),
    its Linear layers in int8 with --quantize."""
    from . import common

    pipe = load_backend_pipeline(args)  # None: torch
    if pipe is None:
        pipe = common.load_pipeline(args, device=state.device if state is not None else None)
        if quantize:
            from ...quantization import quantize_pipeline

            try:
                counts = quantize_pipeline(pipe, mode=quantize)
            except (ValueError, ImportError) as e:
                raise UsageError(f"--quantize {quantize}: {e}") from e
            logger.info("--quantize %s: %s Linear layers %s", quantize, quantize.split("-")[0], counts)
    return pipe


def predict_all(todo: list, predict_batch, batch_size: int, report: Report, show_progress: bool = True) -> bool:
    """Read the images (the next ones decoded while the model runs) and hand them to ``predict_batch`` in
    batches. Ctrl-C stops at the next image boundary (a second one at once). Returns whether interrupted,
    the count not processed then in ``report``."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=None if show_progress else True)
    settled = 0  # images done or failed

    def settle(count: int) -> None:
        nonlocal settled
        settled += count
        bar.update(count)

    pool = ThreadPoolExecutor(max_workers=2)
    stop = StopOnSignal()
    try:
        with stop:
            images = prefetch(pool, _read, todo, ahead=batch_size + 2)
            for batch in _batches(todo, images, batch_size, report, settle, stop):
                predict_batch(batch, report)
                settle(len(batch))
    except KeyboardInterrupt:  # a second Ctrl-C: the current image is abandoned (its partial files removed)
        stop.requested = True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    report.not_processed = len(todo) - settled if stop.requested else 0
    return stop.requested


def _read(entry):
    """The image of one (item, paths) entry, or the ImageReadError saying why not."""
    from ...io import ImageReadError, read_image

    try:
        return read_image(entry[0].source)
    except ImageReadError as e:
        return e


def _batches(todo: list, images, batch_size: int, report: Report, settle, stop: StopOnSignal):
    """Batches of ((item, paths), image); an unreadable image is reported (and settled) here, what reading
    lost (alpha, bit depth) said once per kind. Ends early when a stop is requested."""
    from ...io import ImageReadError, conversion_notes

    noted: set[str] = set()
    batch = []
    for entry, image in zip(todo, images):
        if stop.requested:
            return
        if isinstance(image, ImageReadError):
            report.fail(str(entry[0].source), str(image))
            settle(1)
            continue
        for note in conversion_notes(image):
            if note not in noted:
                noted.add(note)
                logger.info("%s: %s (said once: other inputs like it are not named)", entry[0].source, note)
        batch.append((entry, image))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not stop.requested:
        yield batch


def _predict_batch(predict, steps: list, batch: list, report: Report) -> None:
    """Run one batch, then per image the writers and post-steps; if the batch fails, retry its images one by
    one so one bad image fails alone."""
    try:
        results = predict([image for _, image in batch])
    except Exception as e:  # noqa: BLE001 - isolated below, then reported per file
        if len(batch) == 1:
            (item, _), _ = batch[0]
            report.fail(str(item.source), f"{item.source}: prediction failed ({type(e).__name__}: {e})")
            return
        for single in batch:
            _predict_batch(predict, steps, [single], report)
        return
    for ((item, paths), image), result in zip(batch, results):
        image_result = ImageResult(item.source, item.stem, paths, image, **result)
        try:
            problems = [problem for step in steps for problem in step(image_result)]
        except OSError as e:
            report.fail(str(item.source), f"{item.source}: cannot write outputs ({e})")
            continue
        for problem in problems:
            report.fail(str(item.source), problem)
        if not problems:
            report.done += 1


def summarize(options: PredictOptions, state, report: Report, interrupted: bool) -> int:
    """Gather the processes' reports, print the summary; the exit status."""
    if state is not None and not interrupted:
        report = merge_reports(state, report)
        # An orderly end for every process: left to the interpreter's exit, a process whose share was empty
        # could tear its process group down while the other still used it (seen once as SIGABRT under load).
        state.wait_for_everyone()
        state.destroy_process_group()
        if not state.is_main_process:
            return 1 if report.failed else 0
    tail = f", {report.not_processed} not processed (interrupted)" if interrupted else ""
    print(f"apdepth predict: {report.done} done, {report.skipped} skipped, {len(report.failed)} failed{tail} "
          f"-> {options.outdir}", file=sys.stderr)
    for _, reason in report.failed:
        print(f"  FAILED {reason}", file=sys.stderr)
    if interrupted:
        print("  re-run the same command with --skip-existing to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if report.failed else 0


# ---------------------------------------------------------------------------- formats and writers


def parse_formats(text: str | list[str]) -> list[str]:
    """``"npy,png16"``, ``"npy png16"`` or ``["npy", "png16"]`` -> the formats, checked, in order, once each."""
    formats = check_choices(split_list(text), FORMATS, "--formats")
    return list(dict.fromkeys(formats))


def output_image_suffixes() -> tuple[str, ...]:
    """Name endings of the image files apdepth writes (never read back as inputs from its output folders)."""
    from ...io import IMAGE_EXTENSIONS

    return tuple(s for s in SUFFIXES.values() if s.lower().endswith(IMAGE_EXTENSIONS))


def _write_npy(path: Path, depth, colored) -> None:
    from ...io import save_npy

    save_npy(path, depth.astype("float32"))


def _write_png16(path: Path, depth, colored) -> None:
    from ...image_utils import depth_to_uint16
    from ...io import save_image

    save_image(path, depth_to_uint16(depth))


def _write_color(path: Path, depth, colored) -> None:
    from ...io import save_image

    save_image(path, colored)


# format -> writer(path, depth [H, W] float in [0, 1], coloured PIL image or None). A new depth-map format is a
# FORMATS entry, a SUFFIXES entry and a writer here (ply and the extras are written by predict_extras).
def _write_float(fmt: str, path: Path, depth, colored) -> None:
    from ...depth_io import save_float_depth

    save_float_depth(fmt, path, depth, "affine-invariant depth in [0, 1], near small (apdepth)")


WRITERS = {"npy": _write_npy, "png16": _write_png16, "color": _write_color,
           "exr": partial(_write_float, "exr"), "tiff32": partial(_write_float, "tiff32")}


def write_depth_maps(result: ImageResult) -> list[str]:
    """The first step for every image: each depth-map format asked for (ply and the extras: post-steps)."""
    for fmt, path in result.paths.items():
        if fmt in WRITERS:
            WRITERS[fmt](path, result.depth, result.colored)
    return []


# ---------------------------------------------------------------------------- running


class StopOnSignal:
    """Ctrl-C (SIGINT) during the run: the first asks to stop at the next image boundary, a second stops at
    once (KeyboardInterrupt). Active only in the main thread; restores the previous handler on exit."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\napdepth predict: Ctrl-C: stopping after the current image (press again to stop at once)",
              file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def prefetch(pool, fn, items: list, ahead: int):
    """``map(fn, items)`` computed in ``pool``, at most ``ahead`` items in advance (bounded memory; stopping
    early leaves nothing running but what was already started)."""
    pending = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


def merge_reports(state, report: Report) -> Report:
    """Every process's report combined (all processes receive the total)."""
    from accelerate.utils import gather_object

    merged = Report()
    for part in gather_object([report]):
        merged.done += part.done
        merged.skipped += part.skipped
        merged.failed.extend(part.failed)
    return merged
