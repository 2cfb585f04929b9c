"""int8 quantisation of the Linear layers (:mod:`apdepth.quantization`, both modes) measured: its effect on
the depth against fp32 eager, the weights' memory, and its speed on and off, timed interleaved (off, on,
off, on, ...) so that a shared machine's load falls on both alike (``docs/benchmarks/README.md``).

    python -m apdepth.benchmark.quantization --model embedded --res 320x240 --repeats 5 [--dtype bf16]
    python -m apdepth.benchmark.quantization --model full --prior small --res 320x240 --repeats 2

``--model full`` builds the full-size architectures with random weights (:mod:`.architectures`): their
timing is the released model's, their accuracy only indicative (random weights are not a trained model's).
The bench's fast-path rows (:meth:`.runner.Benchmark.fast_paths`) use :class:`SwappableWeights` too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..quantization import DEVICES, EXTRA, FP8_CAPABILITY, is_quantized, quantize_pipeline, torchao_available
from .report import Row

__all__ = ["SwappableWeights", "depth_difference", "int8_rows", "main", "measure_quantization"]

INT8_OFF = "int8 Linear off (float weights)"
INT8_ON = {"int8-weight": "int8 weight-only Linear (UNet + VAE)",
           "int8-dynamic": "int8 dynamic Linear (UNet + VAE)"}
FP8_ON = "fp8 dynamic Linear (UNet + VAE)"  # CUDA, compute capability >= 8.9 only


def _modes(device: torch.device) -> dict[str, str]:
    """The quantisation modes the bench times on ``device``: int8 everywhere torchao runs, fp8 on CUDA GPUs of
    compute capability 8.9 or later."""
    modes = dict(INT8_ON)
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= FP8_CAPABILITY:
        modes["fp8-dynamic"] = FP8_ON
    return modes


class SwappableWeights:
    """Quantise ``components`` of ``pipe`` once, keeping the float Linear weights, so that the two can be
    swapped in and out (``with weights.use(True): ...``); ``use(False)`` and :meth:`restore` give back the
    exact original Parameters. Memory: the float weights plus their int8 copies."""

    def __init__(self, pipe, components=("unet", "vae"), mode: str = "int8-weight"):
        self.pipe, self.components, self.mode = pipe, tuple(components), mode
        linears = [m for c in self.components for m in getattr(pipe, c).modules() if isinstance(m, nn.Linear)]
        self.float_weights = {m: m.weight for m in linears}
        self.counts = quantize_pipeline(pipe, self.components, mode=mode)
        self.int8_weights = {m: m.weight for m in linears if is_quantized(m.weight)}
        self._set(self.float_weights)

    def _set(self, weights: dict) -> None:
        for module, weight in weights.items():
            module.weight = weight
            if weights is self.float_weights and "extra_repr" in module.__dict__:
                del module.extra_repr  # torchao's note on the quantised weight

    @contextlib.contextmanager
    def use(self, on: bool):
        if on:
            self._set(self.int8_weights)
        try:
            yield
        finally:
            self._set(self.float_weights)

    def restore(self) -> None:
        self._set(self.float_weights)


def depth_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max and mean absolute difference of two [0, 1] depth maps."""
    d = (a.float() - b.float()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean())}


def int8_rows(bench, dtype: str) -> None:
    """The bench's fast-path rows: end to end at batch 1 with the UNet's and VAE's float Linear weights, then
    with int8 weights (``int8-weight``), with int8 weights and activations (``int8-dynamic``) and, on CUDA
    GPUs of compute capability >= 8.9, float8 weights and activations (``fp8-dynamic``), one after the
    other; each "on" row carries the depth's difference from the "off" output (``max_abs``, ``mean_abs``).
    Without torchao, or on another device, one row says why."""
    h, w = bench.cfg.resolution
    why = (f"skipped: torchao is not installed ({EXTRA})" if not torchao_available()
           else f"skipped: torchao int8 runs on {' and '.join(DEVICES)}" if bench.device.type not in DEVICES
           else None)
    if why:
        bench.add(Row("fast path", INT8_ON["int8-weight"], dtype, f"{w}x{h}", 1, None, note=why))
        return
    images = [bench.image]
    with torch.no_grad():
        reference = bench.call(images, output_type="pt").prediction
    bench.record("fast path", INT8_OFF, dtype, 1, lambda: bench.call(images))
    for mode, setting in _modes(bench.device).items():
        weights = SwappableWeights(bench.pipe, ("unet", "vae"), mode)
        try:
            with weights.use(True), torch.no_grad():
                diff = depth_difference(bench.call(images, output_type="pt").prediction, reference)
                bench.record("fast path", setting, dtype, 1, lambda: bench.call(images),
                             note=f"depth vs off: max {diff['max_abs']:.1e}, mean {diff['mean_abs']:.1e}", **diff)
        finally:
            weights.restore()


def _pipeline(model: str, prior: str):
    """fp32 on the CPU, in the command line's default memory format there (channels_last)."""
    import diffusers
    import transformers

    from ..devices import prefers_channels_last
    from .architectures import apdepth_pipeline, full_size_components

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if model == "full":
        pipe = apdepth_pipeline(full_size_components(prior=prior))
    else:
        from ..embedded import embedded_model_path
        from ..pipeline import ApDepthPipeline

        pipe = ApDepthPipeline.from_pretrained(embedded_model_path())
        pipe.set_progress_bar_config(disable=True)
    pipe.set_channels_last(prefers_channels_last(torch.device("cpu")))
    return pipe


def _weights_mb(modules) -> float:
    """Megabytes of the modules' parameters as stored (int8 data plus scales for quantised weights)."""
    total = 0
    for module in modules:
        for p in module.parameters():
            total += (p.qdata.numel() + p.scale.numel() * p.scale.element_size() if is_quantized(p)
                      else p.numel() * p.element_size())
    return total / 2**20


def _interleaved(weights: SwappableWeights, fns: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each ``fns`` entry off and on (``{"<name>_off_ms": ...}``), the calls alternating
    off, on, off, on so that a shared machine's load falls on both alike."""
    times = {(name, on): [] for name in fns for on in (False, True)}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            for on in (False, True):
                with weights.use(on), torch.no_grad():
                    start = time.perf_counter()
                    fn()
                    if i >= warmup:
                        times[(name, on)].append((time.perf_counter() - start) * 1000)
    return {f"{name}_{'on' if on else 'off'}_ms": statistics.median(t) for (name, on), t in times.items()}


def measure_quantization(pipe, image: Image.Image, settings: dict[str, tuple[str, tuple[str, ...]]],
                         repeats: int = 3, warmup: int = 1, fp32_depth: torch.Tensor | None = None,
                         timed: tuple[str, ...] = ("e2e", "unet")) -> list[dict]:
    """Per setting (a name -> (mode, components)): the depth's difference from the unquantised pipeline
    (``max_abs``, ``mean_abs``) and from fp32 eager (``*_fp32``: ``fp32_depth`` when the pipeline runs in
    another dtype), the weights' memory, and the median time on and off of the whole pipeline and of the
    UNet step alone (``timed``), timed interleaved. The pipeline is left with its float weights."""
    def call():
        with torch.no_grad():
            return pipe(image, processing_resolution=0, output_type="pt").prediction  # [1, 1, H, W]

    reference = call()
    fp32_depth = reference if fp32_depth is None else fp32_depth
    rgb = torch.rand(1, 3, image.height, image.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        rgb = rgb.to(pipe.unet.dtype)
        condition = pipe.encode_condition(rgb, pipe.run_prior(rgb))  # [1, 8, H/8, W/8]
    fns = {k: f for k, f in (("e2e", call), ("unet", lambda: pipe.predict_latent(condition))) if k in timed}
    unquantised = {f"{k}_fp32": v for k, v in depth_difference(reference, fp32_depth).items()}
    results = [{"setting": "none", "mode": None, "components": [], "max_abs": 0.0, "mean_abs": 0.0, **unquantised}]
    for name, (mode, components) in settings.items():
        modules = [getattr(pipe, c) for c in components]
        float_mb = _weights_mb(modules)
        weights = SwappableWeights(pipe, components, mode)
        with weights.use(True):
            depth = call()
            int8_mb = _weights_mb(modules)
        versus_fp32 = {f"{k}_fp32": v for k, v in depth_difference(depth, fp32_depth).items()}
        times = _interleaved(weights, fns, repeats, warmup)
        weights.restore()
        results.append({"setting": name, "mode": mode, "components": list(components), "layers": weights.counts,
                        **depth_difference(depth, reference), **versus_fp32, **times,
                        "weights_mb": [round(float_mb, 1), round(int8_mb, 1)], "repeats": repeats})
    return results


def _print(results: list[dict], args, h: int, w: int) -> None:
    print(f"{args.model} model, {args.dtype}, {w}x{h}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"|d|: depth difference from fp32 eager; ms: median of {args.repeats}, off and on interleaved")
    print(f"{'quantised':<27} {'max |d|':>9} {'mean |d|':>9} {'e2e off':>8} {'e2e on':>8} {'UNet off':>8} "
          f"{'UNet on':>8}  weights MB")
    for r in results:
        row = f"{r['setting']:<27} {r['max_abs_fp32']:9.2e} {r['mean_abs_fp32']:9.2e}"
        if "weights_mb" in r:
            fp_mb, q_mb = r["weights_mb"]
            for key in ("e2e_off_ms", "e2e_on_ms", "unet_off_ms", "unet_on_ms"):
                row += f" {r[key]:8.0f}" if key in r else f" {'-':>8}"
            row += f"  {fp_mb:.1f} -> {q_mb:.1f}"
        print(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apdepth.benchmark.quantization",
                                     description="int8 quantisation of the Linear layers: depth difference and speed")
    parser.add_argument("--model", choices=("embedded", "full"), default="embedded")
    parser.add_argument("--prior", default="small", help="--model full: the DA2 size (default: small)")
    parser.add_argument("--res", default="320x240", metavar="WxH", help="the random input image's size (default: 320x240)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="weights and compute (default: fp32)")
    parser.add_argument("--modes", default="int8-weight,int8-dynamic", help="apdepth.quantization modes, comma-separated")
    parser.add_argument("--time", default="e2e,unet", help="what to time: e2e, unet or both (default: both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not torchao_available():
        parser.error('torchao is not installed: pip install "apdepth[quant]"')
    w, h = (int(v) for v in args.res.lower().split("x"))
    torch.manual_seed(0)
    pipe = _pipeline(args.model, args.prior)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    fp32_depth = None
    if args.dtype != "fp32":
        from ..devices import DTYPES

        with torch.no_grad():
            fp32_depth = pipe(image, processing_resolution=0, output_type="pt").prediction
        pipe.to(dtype=DTYPES[args.dtype])
    settings = {f"{mode}: {label}": (mode, components) for mode in args.modes.split(",")
                for label, components in (("UNet + VAE", ("unet", "vae")), ("+ prior", ("unet", "vae", "prior")))}
    results = measure_quantization(pipe, image, settings, args.repeats, args.warmup, fp32_depth,
                                   timed=tuple(args.time.split(",")))
    _print(results, args, h, w)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "resolution": [h, w], "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
