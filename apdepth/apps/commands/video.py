"""Predict temporally stable depth for a video file or a folder of frames.

Each frame's affine-invariant depth is aligned to the previous frame (or a running reference) on
corresponding pixels (--motion: same pixel for a static camera, optical flow for a moving one, or auto)
with a robust scale-and-shift fit, and the whole video is normalised once. Writes OUTDIR/depth.mp4
(colourised), OUTDIR/frames/<frame>.png (16-bit), optionally side_by_side.mp4 and depth.npy, and
OUTDIR/video.json with flicker and drift with and without stabilisation (and, with --gt, the error
against ground-truth depth). Needs PyAV and OpenCV: pip install 'apdepth[video]'.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .common import (
    UsageError,
    add_model_arguments,
    check_choices,
    check_colormap,
    check_model_arguments,
    split_list,
)

logger = logging.getLogger(__name__)

FORMATS = ("video", "sbs", "png16", "npy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="video file (mp4, mov, mkv, ...) or folder of frames")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    parser.add_argument("--formats", nargs="+", default=["video,png16"], metavar="FORMAT",
                        help=f"outputs among {', '.join(FORMATS)}, separated by commas or spaces; sbs = input and "
                             "depth side by side (default: video,png16)")
    parser.add_argument("--colormap", default="Spectral", help="matplotlib colour map (default: Spectral)")
    parser.add_argument("--processing-res", type=int, default=None,
                        help="long edge used for inference; 0 = native size (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default: 4)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame (default: 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of a frame folder (default 24) or override for a video")
    g = parser.add_argument_group("stabilisation")
    g.add_argument("--no-stabilize", action="store_true",
                   help="independent per-frame maps (only normalised once per video)")
    g.add_argument("--reference", choices=("previous", "running"), default="previous",
                   help="align to the previous frame or a running average (default: previous)")
    g.add_argument("--static-threshold", type=float, default=0.02,
                   help="grey-level change (0-1) below which a pixel counts as static (default: 0.02)")
    g.add_argument("--motion", choices=("auto", "static", "flow"), default="auto",
                   help="pixel correspondences between frames: static = same pixel (a camera on a tripod; "
                        "fastest), flow = optical flow (a moving camera), auto = flow when a cheap test sees "
                        "the image move (default: auto)")
    g.add_argument("--no-expansion", action="store_true",
                   help="under a camera move along the optical axis, do not take the depth change it causes from "
                        "the flow's expansion (then auto fits such frames on same-pixel matches, as before)")
    g.add_argument("--depth-zero", type=float, default=0.0,
                   help="the first frame's depth value at distance zero, about which the expansion's depth ratios "
                        "are taken (default: 0, depth proportional to distance)")
    g.add_argument("--min-gain", type=float, default=0.05,
                   help="a frame takes a new fit only when it lowers the median disagreement with the previous "
                        "frame by this fraction; otherwise the previous fit is kept (default: 0.05; 0 refits "
                        "every frame)")
    parser.add_argument("--gt", type=Path, default=None, metavar="DEPTH",
                        help="ground-truth depth of every source frame, a float [N, H, W] .npy or a clip folder "
                             "from `apdepth synth clip` (its depth.npy): video.json then reports the AbsRel of the "
                             "per-frame and of the stabilised depth after one affine fit per video")
    add_model_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """Options checked before the model loads (raises UsageError)."""
    args.formats = list(dict.fromkeys(check_choices(split_list(args.formats), FORMATS, "--formats")))
    if args.batch_size < 1 or args.stride < 1:
        raise UsageError("--batch-size and --stride must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.colormap != "Spectral":
        check_colormap(args.colormap)
    check_model_arguments(args)


def run(args: argparse.Namespace) -> int:
    from ...postprocessing.video.stabilize import DepthStabilizer, process_video
    from .common import load_pipeline

    formats = args.formats if isinstance(args.formats, list) else split_list(args.formats)
    if not args.input.exists():
        print(f"apdepth video: {args.input}: no such video file or frame folder", file=sys.stderr)
        return 1
    try:
        ground_truth = _read_ground_truth(args.gt) if args.gt is not None else None
        stabilizer = DepthStabilizer(reference=args.reference, static_threshold=args.static_threshold,
                                     enabled=not args.no_stabilize, motion=args.motion,
                                     expansion=not args.no_expansion, depth_zero=args.depth_zero,
                                     min_gain=args.min_gain)
    except (ValueError, OSError, ImportError) as e:
        print(f"apdepth video: FAILED {e}", file=sys.stderr)
        return 1
    pipe = load_pipeline(args)
    try:
        result = process_video(pipe, args.input, args.output, formats=formats, colormap=args.colormap,
                               processing_resolution=args.processing_res, batch_size=args.batch_size,
                               stabilizer=stabilizer, stride=args.stride, max_frames=args.max_frames, fps=args.fps,
                               progress=True, ground_truth=ground_truth)
    except (ValueError, OSError, ImportError) as e:
        print(f"apdepth video: FAILED {e}", file=sys.stderr)
        return 1
    print(f"apdepth video: {result.summary()} -> {args.output}", file=sys.stderr)
    print(f"  flicker (mean |frame-to-frame change| of matched pixels / depth range): per-frame "
          f"{result.flicker_raw:.4f}, stabilised {result.flicker_stabilized:.4f}; drift from frame 0: per-frame "
          f"{result.drift_raw:.4f}, stabilised {result.drift_stabilized:.4f} (correspondences: {result.motion})",
          file=sys.stderr)
    return 0


def _read_ground_truth(path: Path):
    import numpy as np

    file = path / "depth.npy" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--gt {path}: no such .npy file (or clip folder with depth.npy)")
    depth = np.load(file, allow_pickle=False)
    if depth.ndim != 3:
        raise ValueError(f"--gt {file}: need float depth [frames, height, width], got shape {depth.shape}")
    return depth
