"""Measure ApDepth's speed and memory on full-size architectures with random weights (no download):
per-stage times, end-to-end latency, throughput against batch size, fast paths on and off, and
Marigold-style multi-step baselines on the same UNet and VAE. Prints a table and writes JSON."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    """'640x480' (W x H) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return h, w


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'320x240,640x480' -> ((240, 320), (480, 640)); 'none' -> ()."""
    return () if text == "none" else tuple(_size(v) for v in text.split(",") if v)


SCALING_RESOLUTIONS = "320x240,640x480,1280x960,2048x1536"
SCALING_BATCH_SIZES = "1,2,4,8"


def _marigold(text: str) -> tuple[tuple[int, int], ...]:
    if text == "none":
        return ()
    try:
        return tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEPSxENSEMBLE,... such as 1x1,4x1,50x10, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: the best available)")
    parser.add_argument("--arch", choices=("full", "tiny"), default="full",
                        help="full-size SD2 + DA2 (default) or the test suite's tiny models (a dry run)")
    parser.add_argument("--prior", default=None, help="DA2 size: small, base, large, giant "
                        "(default: large on GPU, small on CPU)")
    parser.add_argument("--other-priors", default="", metavar="SIZE,...",
                        help="also time the prior stage and end to end with these DA2 sizes, e.g. large on a CPU "
                             "whose default is small (first dtype only)")
    parser.add_argument("--dtypes", default=None, help="comma list of fp32,bf16,fp16 "
                        "(default: fp32,bf16,fp16 on GPU; fp32,bf16 on CPU)")
    parser.add_argument("--res", type=_size, default=(480, 640), metavar="WxH", help="input size (default 640x480)")
    parser.add_argument("--batch-sizes", type=_ints, default=None, help="default: 1,2,4,8 on GPU; 1,2 on CPU")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default: 20 GPU, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 3 GPU, 1 CPU)")
    parser.add_argument("--no-fast-paths", action="store_true", help="skip the fast-path on/off comparisons")
    parser.add_argument("--large-res", type=_size, default=(1536, 2048), metavar="WxH",
                        help="input size for the VAE tiling comparison (default 2048x1536)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="also time torch.compile in MODE (default 'default'; 'reduce-overhead' adds CUDA "
                             "graphs): the UNet and VAE, the whole pipeline as one region, and the --fast preset "
                             "against fp32 eager; compilation takes minutes")
    parser.add_argument("--marigold", type=_marigold, default=((1, 1), (4, 1), (50, 10)),
                        help="baselines as STEPSxENSEMBLE list, or 'none' (default 1x1,4x1,50x10)")
    parser.add_argument("--marigold-full", action="store_true",
                        help="run Marigold 50x10 on CPU too instead of extrapolating it (about an hour)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    parser.add_argument("--train-batch", type=int, default=None, help="training micro-batch (default: 32 GPU, 1 CPU)")
    parser.add_argument("--train-res", type=_size, default=None, metavar="WxH",
                        help="training crop (default: 640x480 GPU, 320x240 CPU)")
    parser.add_argument("--release-res", type=int, default=768, metavar="PIXELS",
                        help="also time end to end at this long edge (the release's default processing "
                             "resolution, 768); 0: skip")
    parser.add_argument("--no-components", action="store_true",
                        help="skip the bare diffusers components rows (end to end vs components)")
    parser.add_argument("--scale-res", type=_sizes, default=None, metavar="WxH,...",
                        help=f"time end to end at each size (batch 1), e.g. {SCALING_RESOLUTIONS}; default none")
    parser.add_argument("--scale-batches", type=_ints, default=None, metavar="B,...",
                        help=f"time end to end at each batch size (at --res), e.g. {SCALING_BATCH_SIZES}; default none")
    parser.add_argument("--scaling", action="store_true",
                        help=f"shorthand for --scale-res {SCALING_RESOLUTIONS} --scale-batches {SCALING_BATCH_SIZES}")
    parser.add_argument("--flop-res", type=_sizes, default=None, metavar="WxH,...",
                        help=f"count FLOPs per stage at these sizes (default {SCALING_RESOLUTIONS}; 'none' skips)")
    parser.add_argument("--allocators", action="store_true",
                        help="CPU: time a VAE encode and count its page faults under each installed allocator "
                             "(glibc, glibc retained, jemalloc, tcmalloc), each in a fresh process")
    parser.add_argument("-o", "--output", type=Path, default=Path("bench.json"), help="JSON report (default bench.json)")
    parser.add_argument("--markdown", type=Path, default=None, metavar="PATH",
                        help="also write the report as the README's Markdown table; with --from, no benchmark runs")
    parser.add_argument("--startup", action="store_true",
                        help="only time the command line's start-up (fresh processes: import apdepth, --help, a "
                             "usage error) and exit")
    parser.add_argument("--from", dest="from_report", type=Path, default=None, metavar="JSON",
                        help="render an existing JSON report (table, goals, --markdown) instead of measuring")


STARTUP_CASES = {
    "python -c pass": ["-c", "pass"],
    "import apdepth": ["-c", "import apdepth"],
    "apdepth --help": ["-m", "apdepth", "--help"],
    "apdepth predict --help": ["-m", "apdepth", "predict", "--help"],
    "apdepth predict (usage error)": ["-m", "apdepth", "predict", "x.jpg", "-o", "out", "--formats", "bogus"],
}


def startup_times(repeats: int = 5) -> dict[str, float]:
    """Median wall time in seconds of each start-up case, each in a fresh interpreter."""
    import statistics
    import subprocess
    import sys
    import time

    times = {}
    for name, argv in STARTUP_CASES.items():
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, *argv], capture_output=True, timeout=300)
            runs.append(time.perf_counter() - start)
        times[name] = statistics.median(runs)
    return times


def run(args: argparse.Namespace) -> int:
    if args.startup:
        return print_startup_times(args.repeats or 5)
    if args.from_report is not None:
        return render_report(args.from_report, args.markdown)
    import torch

    from ...benchmark import Benchmark
    from ...io import save_json
    from .common import resolve_device

    config = bench_config(args, resolve_device(args.device))
    bad = [d for d in config.dtypes if d not in ("fp32", "bf16", "fp16")]
    if bad:
        raise SystemExit(f"--dtypes: unknown {bad}; choose among fp32, bf16, fp16")
    from ...priors import VARIANTS

    bad = [p for p in config.other_priors if p not in VARIANTS]
    if bad:
        raise SystemExit(f"--other-priors: unknown {bad}; choose among {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    # The report is saved after every row, so an interrupted run (out of time, a crash) keeps what it measured.
    bench = Benchmark(config, on_row=lambda b: save_json(args.output, b.report()))
    rows = bench.run()
    report = bench.report()
    save_json(args.output, report)
    print_report(config, rows, report, args.markdown)
    print(f"\nJSON report: {args.output}")
    return 0


def print_startup_times(repeats: int) -> int:
    """--startup: the command line's start-up times, then exit 0."""
    import os

    for name, seconds in startup_times(repeats).items():
        print(f"start-up: {name:<32} {seconds * 1000:7.0f} ms  (median of {repeats}, {os.cpu_count()} CPUs)")
    return 0


def render_report(path: Path, markdown: Path | None) -> int:
    """--from: an earlier JSON report as the Markdown table (printed, and written to ``markdown``), its goals
    judged by the current rules."""
    import json

    from ...benchmark.report import judge_report, markdown_table
    from ...io import atomic_open

    try:
        report = json.loads(path.read_text())
        report["goals"] = judge_report(report)  # by the current rules
        text = markdown_table(report)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a readable apdepth bench report ({e})") from None
    if markdown is not None:
        with atomic_open(markdown, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def bench_config(args: argparse.Namespace, device):
    """The BenchConfig the flags describe; what a flag leaves open depends on whether ``device`` is a GPU."""
    from ...benchmark import BenchConfig

    gpu = device.type == "cuda"
    return BenchConfig(
        device=str(device),
        arch=args.arch,
        prior=args.prior or ("large" if gpu else "small"),
        dtypes=tuple(args.dtypes.split(",")) if args.dtypes else (("fp32", "bf16", "fp16") if gpu else ("fp32", "bf16")),
        resolution=args.res,
        batch_sizes=args.batch_sizes or ((1, 2, 4, 8) if gpu else (1, 2)),
        repeats=args.repeats or (20 if gpu else 3),
        warmup=args.warmup if args.warmup is not None else (3 if gpu else 1),
        fast_paths=not args.no_fast_paths,
        large_resolution=args.large_res,
        compile=args.compile,
        marigold=args.marigold,
        train=not args.no_train,
        train_batch=args.train_batch or (32 if gpu else 1),
        train_resolution=args.train_res or ((480, 640) if gpu else (240, 320)),
        marigold_full=args.marigold_full,
        release_resolution=args.release_res,
        components=not args.no_components,
        scale_resolutions=args.scale_res or (_sizes(SCALING_RESOLUTIONS) if args.scaling else ()),
        scale_batches=args.scale_batches or (_ints(SCALING_BATCH_SIZES) if args.scaling else ()),
        flop_resolutions=args.flop_res if args.flop_res is not None else _sizes(SCALING_RESOLUTIONS),
        allocators=args.allocators,
        other_priors=tuple(v for v in args.other_priors.split(",") if v),
    )


def print_report(config, rows: list, report: dict, markdown: Path | None) -> None:
    """The table, the goals and the FLOP counts on stdout; the Markdown table to ``markdown`` when given."""
    import torch

    from ...benchmark import format_goals, format_table, markdown_table
    from ...benchmark.report import backend_line
    from ...benchmark.scaling import describe_superlinear, flop_table
    from ...io import atomic_open

    hw = report["hardware"]
    print(f"\napdepth bench on {hw.get('gpu') or hw['cpu']} ({hw['cpu_count']} CPUs, torch {torch.__version__}; "
          f"{backend_line(hw)}), {config.arch} architectures, prior DA2-{config.prior}")
    print(format_table(rows))
    if report["goals"]:
        print("\n" + format_goals(report["goals"]))
    if report["flops"]:
        print("\nCounted FLOPs (meta device, batch 1):\n" + flop_table(report["flops"]))
        print("\n".join(f"faster than the pixel count: {line}" for line in describe_superlinear(report["flops"])))
    if markdown is not None:
        with atomic_open(markdown, "w") as f:
            f.write(markdown_table(report) + "\n")
