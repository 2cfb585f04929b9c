"""Time the video stabiliser alone (no model) per frame on a clip folder, for each --motion.

The cost of motion compensation: run it on a static-camera clip (``apdepth synth clip --motion static``)
and on a moving one. Per-frame "predictions" are the clip's exact depth with random per-frame affine
drifts, so the model's time is left out. Works on older checkouts too (no --motion there: "static").

    apdepth synth clip -o clips -n 16 --size 480x640 --motion static,pan
    python scripts/video_stabilizer_bench.py clips/static clips/pan
    python scripts/video_stabilizer_bench.py clips/forward --motion auto flow --expansion on off
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="+", help="clip folders from `apdepth synth clip`")
    parser.add_argument("--motion", nargs="+", default=["static", "auto", "flow"])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default: 3)")
    parser.add_argument("--expansion", nargs="+", default=["on"], choices=["on", "off"],
                        help="DepthStabilizer(expansion=...) settings (checkouts without it: ignored)")
    args = parser.parse_args(argv)

    from apdepth.io import read_image
    from apdepth.postprocessing.video.stabilize import DepthStabilizer

    params = inspect.signature(DepthStabilizer).parameters
    has_motion, has_expansion = "motion" in params, "expansion" in params
    settings = args.expansion if has_expansion else ["n/a"]
    for folder in args.clips:
        frames = [np.asarray(read_image(p).convert("RGB")) for p in sorted((Path(folder) / "rgb").glob("*.png"))]
        depth = np.load(f"{folder}/depth.npy")
        rng = np.random.default_rng(0)
        preds = [(d * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2)).astype(np.float32) for d in depth]
        for motion, expansion in itertools.product(
                args.motion if has_motion else ["static (this checkout has no --motion)"], settings):
            kwargs = {"motion": motion} if has_motion else {}
            if has_expansion:
                kwargs["expansion"] = expansion == "on"
            best = best_cpu = np.inf
            for _ in range(args.repeats):
                stab = DepthStabilizer(**kwargs)
                start, start_cpu = time.perf_counter(), time.process_time()
                for p, f in zip(preds, frames):
                    stab(p, f)
                best = min(best, time.perf_counter() - start)
                best_cpu = min(best_cpu, time.process_time() - start_cpu)
            kinds = sorted({getattr(f, "motion", "static") for f in stab.frames[1:]})
            print(f"{folder}: {len(frames)} frames {frames[0].shape[0]}x{frames[0].shape[1]}, motion {motion}, "
                  f"expansion {expansion}: "
                  f"{best / len(frames) * 1000:.1f} ms/frame wall, {best_cpu / len(frames) * 1000:.1f} ms CPU "
                  f"(correspondences used: {', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
