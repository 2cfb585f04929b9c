"""Generate procedural RGB-D scenes with exact depth, in the real data sets' layouts.

KIND is hypersim (indoor training set: folder of 480x640 PNGs, uint16 mm), vkitti (street training
set: 375x1242 JPEG + uint16 cm, sky 65535), nyu (held-out indoor archive nyu_labeled_extracted.tar),
kitti (held-out street archive kitti_eigen_split_test.tar, sparse LiDAR-like ground truth) or all
(the demo data set: OUT/hypersim, OUT/vkitti, OUT/nyuv2, OUT/kitti with their split lists), or
clip (video clips with exact depth per frame: OUT/<motion>/ for each --motion among static, pan,
forward, object; layout in apdepth/synth/clip.py and docs/features.md).
Output is identical for a given --seed whatever --workers is.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

KIND_CHOICES = ("hypersim", "vkitti", "nyu", "kitti", "all", "clip")
CLIP_SIZE = (192, 256)
# `all`: images per data set (training sets and held-out archives of the demo data set)
ALL_COUNTS = {"hypersim": 2000, "vkitti": 400, "nyu": 100, "kitti": 100}


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like HEIGHTxWIDTH (e.g. 480x640), got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"--size must be at least 16x16, got {text!r}")
    return h, w


def parse_counts(text: str) -> dict[str, int]:
    counts = dict(ALL_COUNTS)
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if name not in ALL_COUNTS or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"--counts takes name=N pairs with names among {', '.join(ALL_COUNTS)} and N >= 1, got {item!r}")
        counts[name] = int(value)
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KIND_CHOICES, help="which data set to write")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="DIR",
                        help="the data set folder (for 'all': the parent of the four data set folders)")
    parser.add_argument("-n", "--num", type=int, default=None,
                        help="number of images (default for one kind: 100; 'all' uses --counts)")
    parser.add_argument("--counts", type=parse_counts, default=dict(ALL_COUNTS),
                        help="images per data set for 'all', e.g. hypersim=200,vkitti=40,nyu=20,kitti=20 "
                             f"(default: {','.join(f'{k}={v}' for k, v in ALL_COUNTS.items())})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="image size HEIGHTxWIDTH (default: the data set's native size; the KITTI-style "
                             "readers need at least 352x1216, NYU's Eigen crop 471x601)")
    parser.add_argument("--frames-per-scene", type=int, default=None,
                        help="views per room / frames per street (default: per data set; vkitti: per street "
                             "over all variants)")
    parser.add_argument("--profile", action="store_true",
                        help="print CPU seconds per image (scene building, rendering, encoding)")
    g = parser.add_argument_group("clip (video clips with exact depth per frame; -n = frames per clip, default 10)")
    g.add_argument("--motion", default="static,pan,forward,object",
                   help="comma-separated camera paths among static, pan, forward, object; one clip each in "
                        "OUT/<motion>/ (default: all four)")
    g.add_argument("--pan-deg", type=float, default=1.5, help="pan: degrees turned per frame (default: 1.5)")
    g.add_argument("--step", type=float, default=0.08, help="forward: metres moved per frame (default: 0.08)")
    g.add_argument("--mp4", action="store_true", help="also write OUT/<motion>/rgb.mp4 (needs PyAV)")


def run(args: argparse.Namespace) -> int:
    from ...synth.datasets import FOLDER_NAME, KINDS, generate

    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if args.num is not None and args.num < 1:
        raise SystemExit("-n/--num must be >= 1")
    if args.kind == "clip":
        return _run_clips(args)
    if args.kind == "all":
        jobs = [(kind, args.output / FOLDER_NAME[kind], args.num or args.counts[kind]) for kind in KINDS]
    else:
        jobs = [(args.kind, args.output, args.num or 100)]
    for kind, folder, num in jobs:
        info = generate(kind, folder, num, seed=args.seed, workers=args.workers, size=args.size,
                        frames_per_scene=args.frames_per_scene)
        print(f"apdepth synth {kind}: {info['images']} images in {info['scenes']} scenes -> {info['root']} "
              f"(split list {info['split']}; {info['wall_seconds']:.1f} s)", file=sys.stderr)
        if args.profile:
            per = info["cpu_seconds_per_image"]
            parts = ", ".join(f"{k} {v:.3f}" for k, v in per.items())
            print(f"  CPU seconds per {info['size'][0]}x{info['size'][1]} image: {sum(per.values()):.3f} "
                  f"({parts})", file=sys.stderr)
    return 0


def _run_clips(args: argparse.Namespace) -> int:
    import time

    from ...synth.clip import MOTIONS, render_clip, write_clip

    motions = [m.strip() for m in args.motion.split(",") if m.strip()]
    bad = [m for m in motions if m not in MOTIONS]
    if bad or not motions:
        raise SystemExit(f"--motion: unknown {bad or args.motion!r}; choose among {', '.join(MOTIONS)}")
    num = args.num or 10
    if num < 2:
        raise SystemExit("-n/--num must be >= 2 for clips (frames per clip)")
    size = args.size or CLIP_SIZE
    for motion in motions:
        start = time.perf_counter()
        try:
            clip = render_clip(motion, num, size, seed=args.seed, pan_deg=args.pan_deg, step_m=args.step)
            write_clip(clip, args.output / motion, mp4=args.mp4)
        except (ValueError, ImportError) as e:
            print(f"apdepth synth clip: FAILED {motion}: {e}", file=sys.stderr)
            return 1
        print(f"apdepth synth clip {motion}: {num} frames {size[0]}x{size[1]} -> {args.output / motion} "
              f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0
