"""Measure how far each non-release inference behaviour moves the depth, on real image sizes.

For every case (input size, processing resolution) the pipeline runs once with the defaults of a
``prior_preprocessing="compat"`` checkpoint (the authors' release's algorithm) and once per option that
selects the paper-geometric / speed behaviour instead; the table lists max and mean |difference| of the
[0, 1] depth at the input size. Used for docs/fidelity.md ("Inference and prior").

    python scripts/fidelity_inference.py                 # the embedded demo model, fp32, CPU
    python scripts/fidelity_inference.py --model developy/ApDepth --cases 480x640@0
"""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np
import torch
from PIL import Image

from apdepth import ApDepthPipeline
from apdepth.synth.datasets import render_scene

DEFAULT_CASES = ["480x640@0", "1008x1512@756", "481x643@0", "427x640@0", "352x1216@0"]


@contextlib.contextmanager
def option(pipe: ApDepthPipeline, name: str):
    """Within: the pipeline with one behaviour switched away from the release's (call kwargs returned)."""
    kwargs: dict = {}
    saved = pipe.fuse_encode, pipe.prior.position_embedding
    if name in ("size", "all"):
        kwargs["size_mode"] = "pad"
    if name in ("resize", "all"):
        kwargs["resize_mode"] = "float"
    if name in ("prior", "all"):
        pipe.prior.set_position_embedding("transformers")
    if name in ("vae", "all"):
        pipe.fuse_encode = True
    try:
        yield kwargs
    finally:
        pipe.fuse_encode = saved[0]
        pipe.prior.set_position_embedding(saved[1])


OPTIONS = {
    "size": "size_mode='pad'",
    "resize": "resize_mode='float'",
    "prior": "prior position_embedding='transformers'",
    "vae": "fuse_encode=True",
    "all": "all four (apdepth before release semantics)",
}


def photo(height: int, width: int, seed: int) -> Image.Image:
    """A rendered indoor scene (the package's procedural Hypersim-like renderer) at ``height`` x ``width``."""
    rel, data = render_scene("hypersim", seed=seed, scene=0, frames=[0], size=(height, width)).files[0]
    assert "rgb" in rel
    return Image.open(io.BytesIO(data)).convert("RGB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded demo model)")
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="HxW@processing_resolution")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    if args.model is None:
        from apdepth.embedded import embedded_model_path

        args.model = str(embedded_model_path())
    torch.set_grad_enabled(False)
    pipe = ApDepthPipeline.from_pretrained(args.model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if pipe.config.prior_preprocessing != "compat" or pipe.inference_modes() != ("release", "uint8"):
        raise SystemExit(f"{args.model} does not run the release's algorithm by default; nothing to compare with")

    print(f"model: {args.model}; fp32, CPU; depth in [0, 1] at the input size; max / mean |option - release|")
    print("| case | processing size | option | max abs diff | mean abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for case in args.cases:
        size, res = case.split("@")
        height, width = (int(v) for v in size.split("x"))
        res = int(res)
        img = photo(height, width, args.seed)
        release = pipe(img, processing_resolution=res).depth[0]
        f = min(res / width, res / height) if res else 1.0
        proc = f"{int(height * f)}x{int(width * f)}"
        for name in args.options:
            with option(pipe, name) as kwargs:
                other = pipe(img, processing_resolution=res, **kwargs).depth[0]
            diff = np.abs(other - release)
            print(f"| {height}x{width} @ {res} | {proc} | {OPTIONS[name]} | {diff.max():.2e} | {diff.mean():.2e} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
