"""The whole-pipeline compile and the ``--fast`` preset measured in one process: the first call (compilation,
cold or from the compile cache), the steady time against fp32 eager timed interleaved (eager, fast, eager,
fast, ...) so that a shared machine's load falls on both alike, and the depth's difference from fp32 eager
(``docs/benchmarks/README.md``, "Whole-pipeline compile and --fast").

    python -m apdepth.benchmark.fast --model embedded --res 320x240 --variant compile --cache-dir DIR [--cold]
    python -m apdepth.benchmark.fast --model full --prior small --res 320x240 --variant fast --cache-dir DIR

Run it twice with the same ``--cache-dir`` (``--cold`` empties it first) to see the compile cache: the second
process's ``first_call_s`` is the warm one. ``--model full`` builds the full-size architectures with random
weights (:mod:`.architectures`): their timing is the released model's, their accuracy only indicative.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import time

import numpy as np
import torch
from PIL import Image

from .quantization import _pipeline, depth_difference
from .timing import emit_json_line

__all__ = ["VARIANTS", "main", "measure_fast"]

# compile: fp32, the whole pipeline compiled (inductor, MODE); fast: the --fast preset with its dtype (auto) and,
# with --mode, the whole-pipeline compile in MODE; modules: fp32, the UNet and VAE compiled each on its own
VARIANTS = ("compile", "fast", "modules")


def _call(pipe, image):
    with torch.no_grad():
        return pipe(image, processing_resolution=0, output_type="pt").prediction


def _counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {k: int(v) for k, v in counters["inductor"].items() if "cache" in k}


def _apply(pipe, variant: str, mode: str | None, dtype: str, freezing: bool = False) -> None:
    """Switch ``pipe`` (a copy of the fp32 eager reference) to ``variant``; ``freezing``: inductor freezing
    (weights as constants, prepacked for oneDNN on CPUs) for the compiled variants."""
    from ..compilation import apply_fast_preset
    from ..devices import DTYPES, auto_dtype

    if variant == "fast":
        target = auto_dtype(torch.device("cpu")) if dtype == "auto" else DTYPES[dtype]
        pipe.to(dtype=target)
        print(apply_fast_preset(pipe, "cpu", compile_mode=None if freezing else mode).describe(), flush=True)
        if freezing and mode is not None:
            pipe.compile_models(mode, scope="pipeline", freezing=True)
    else:
        pipe.compile_models(mode or "default", scope="modules" if variant == "modules" else "pipeline",
                            freezing=freezing)


def measure_fast(model: str = "embedded", prior: str = "small", res: tuple[int, int] = (240, 320),
                 variant: str = "compile", mode: str | None = "default", dtype: str = "auto",
                 repeats: int = 3, seed: int = 0, freezing: bool = False, baseline: str = "fp32") -> dict:
    """One process's measurement (see the module docstring). ``res``: (H, W). ``baseline``: what the variant is
    timed against, interleaved: ``"fp32"`` eager, or ``"same"``: eager in the variant's own dtype (what a
    compile of a bf16 pipeline gains over the same pipeline uncompiled). The depth difference is always
    against fp32 eager."""
    from ..compilation import compile_cache_dir

    torch.manual_seed(seed)  # the full-size random weights: the same in every process
    pipe = _pipeline(model, prior)
    h, w = res
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    reference = _call(pipe, image)  # fp32 eager, channels_last (the CPU default)
    pipe.set_channels_last(False)  # the same computation in another memory layout: the model's float-noise floor
    noise = depth_difference(_call(pipe, image), reference)
    pipe.set_channels_last(True)
    fast = copy.deepcopy(pipe)
    _apply(fast, variant, mode, dtype, freezing)
    base = pipe
    if baseline == "same" and fast.unet.dtype != pipe.unet.dtype:
        base = copy.deepcopy(pipe).to(dtype=fast.unet.dtype)
    start = time.perf_counter()
    out = _call(fast, image)
    first = time.perf_counter() - start
    result = {"model": model, "prior": prior if model == "full" else None, "res": f"{w}x{h}", "variant": variant,
              "mode": mode, "dtype": str(fast.unet.dtype).removeprefix("torch."), "first_call_s": first,
              "cache_dir": compile_cache_dir(), "cache_counters": _counters(), **depth_difference(out, reference),
              "layout_noise": noise, "seed": seed, "freezing": freezing}
    base_name = "eager_" + str(base.unet.dtype).removeprefix("torch.")
    times = {base_name: [], variant: []}
    for _ in range(repeats):  # interleaved: off, on, off, on, ...
        for on in (False, True):
            start = time.perf_counter()
            _call(fast if on else base, image)
            times[variant if on else base_name].append(time.perf_counter() - start)
    result["median_ms"] = {k: 1000 * statistics.median(v) for k, v in times.items()}
    result["threads"] = torch.get_num_threads()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("embedded", "full"), default="embedded")
    parser.add_argument("--prior", default="small", help="full-size prior: small|base|large|giant")
    parser.add_argument("--res", default="320x240", help="WxH of the random test image (native size)")
    parser.add_argument("--variant", choices=VARIANTS, default="compile")
    parser.add_argument("--mode", default="default", help="torch.compile mode; 'none': no compile (--variant fast)")
    parser.add_argument("--dtype", default="auto", help="--variant fast: its dtype (auto, fp32, bf16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="torch seed before building the (random) models")
    parser.add_argument("--cache-dir", default=None, help="inductor's cache folder (TORCHINDUCTOR_CACHE_DIR)")
    parser.add_argument("--cold", action="store_true", help="empty --cache-dir first")
    parser.add_argument("--freezing", action="store_true",
                        help="inductor freezing for the compiled variants (weights prepacked for oneDNN on CPUs)")
    parser.add_argument("--baseline", choices=("fp32", "same"), default="fp32",
                        help="time against fp32 eager (default) or eager in the variant's own dtype")
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    if args.cache_dir:
        if args.cold:
            shutil.rmtree(args.cache_dir, ignore_errors=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(args.cache_dir)
    w, h = (int(v) for v in args.res.lower().split("x"))
    result = measure_fast(args.model, args.prior, (h, w), args.variant,
                          None if args.mode == "none" else args.mode, args.dtype, args.repeats, args.seed,
                          args.freezing, args.baseline)
    result["cold"] = args.cold
    emit_json_line(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
