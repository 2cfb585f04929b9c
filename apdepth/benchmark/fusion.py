"""GroupNorm + SiLU + residual fusion and weight prepacking, measured on one SD2 VAE decoder resnet.

The VAE's resnet blocks are ``GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3``, plus the
residual add and a divide by ``output_scale_factor`` (1.0 in SD2). In eager mode each of those elementwise steps
is a separate pass over the activation; inductor fuses them into few loops around the convolutions, and with
freezing it also prepacks the convolution weights for oneDNN once instead of reordering them on every call.
This module times one such block (random weights, the full-size decoder's highest-resolution block by default)
compiled, and compiled with freezing, each interleaved with eager so that a shared machine's load falls on both;
the eager profile splits its time into convolutions and everything else::

    python -m apdepth.benchmark.fusion --res 640x480 --dtype bf16 --repeats 5
    python -m apdepth.benchmark.fusion --res 320x240 --dtype fp32 --block 2

``--block`` picks the decoder up-block (3: full resolution, 128 channels; 2: half resolution, 256 channels).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..compilation import with_inductor_freezing
from ..devices import DTYPES
from .allocation import parse_size
from .timing import emit_json_line

__all__ = ["decoder_resnet", "eager_profile", "main", "measure_fusion"]

# Decoder up-block -> (channels, downsampling of the input size) in the SD2 VAE (block_out_channels 128..512).
_BLOCKS = {0: (512, 8), 1: (512, 4), 2: (256, 2), 3: (128, 1)}


def decoder_resnet(block: int = 3, dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, int, int]:
    """The SD2 VAE decoder's ``up_blocks[block].resnets[1]`` with random weights: (module, channels, scale)."""
    from diffusers import AutoencoderKL

    from ..diffusion.architectures import SD2_VAE

    channels, scale = _BLOCKS[block]
    torch.manual_seed(0)
    resnet = AutoencoderKL(**SD2_VAE).decoder.up_blocks[block].resnets[1]  # in = out channels: a plain block
    return resnet.to(dtype=dtype).eval().requires_grad_(False), channels, scale


def eager_profile(module: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Self CPU time of one eager call, split into convolutions and the rest (ms)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        module(x, None)
    conv = other = 0.0
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1000.0
        if "conv" in event.key or "mkldnn" in event.key:
            conv += ms
        else:
            other += ms
    return {"conv_ms": conv, "other_ms": other, "other_share": other / max(conv + other, 1e-9)}


def measure_fusion(res: tuple[int, int] = (480, 640), dtype: str = "bf16", block: int = 3, repeats: int = 5,
                   channels_last: bool = True) -> dict:
    """One decoder resnet at the block's share of ``res`` (H, W): ``torch.compile`` and ``torch.compile`` with
    freezing, each timed against eager in alternating rounds (eager, variant, eager, ...) right after it is
    compiled. The two variants compile the same function, which dynamo caches by its code: each is compiled
    after a reset and timed before the next, so neither runs the other's code. Returns the medians (ms), each
    variant's speed-up over its own eager rounds, its first call (s) and its max difference from eager, and the
    eager profile."""
    torch_dtype = DTYPES[dtype]
    module, channels, scale = decoder_resnet(block, torch_dtype)
    h, w = res[0] // scale, res[1] // scale
    x = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(1)).to(torch_dtype)  # [1, C, h, w]
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    medians, speedup, first_s, max_abs = {}, {}, {}, {}
    with torch.no_grad():
        reference = module(x, None)
        torch.compile(lambda t: t + 1)(torch.zeros(1))  # inductor's start-up, not counted below
        for name, freezing in (("compiled", False), ("frozen", True)):
            torch._dynamo.reset()
            fn = torch.compile(lambda t, m=module: m(t, None))
            fn = with_inductor_freezing(fn) if freezing else fn
            start = time.perf_counter()
            out = fn(x)
            first_s[name] = time.perf_counter() - start
            max_abs[name] = float((out.float() - reference.float()).abs().max())
            times = {"eager": [], name: []}
            for _ in range(repeats):
                for key, call in (("eager", lambda: module(x, None)), (name, lambda f=fn: f(x))):
                    start = time.perf_counter()
                    call()
                    times[key].append((time.perf_counter() - start) * 1000.0)
            medians[f"eager (beside {name})"] = statistics.median(times["eager"])
            medians[name] = statistics.median(times[name])
            speedup[name] = medians[f"eager (beside {name})"] / medians[name]
        torch._dynamo.reset()
    return {"block": block, "channels": channels, "input": f"{w}x{h}", "dtype": dtype, "channels_last": channels_last,
            "threads": torch.get_num_threads(), "median_ms": medians, "speedup": speedup, "first_call_s": first_s,
            "max_abs": max_abs, "eager_profile": eager_profile(module, x), "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=parse_size, default=(480, 640),
                        help="WxH of the image whose decoding is timed (default 640x480)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--block", type=int, choices=sorted(_BLOCKS), default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--contiguous", action="store_true", help="contiguous layout instead of channels_last")
    parser.add_argument("--json", help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    result = measure_fusion(args.res, args.dtype, args.block, args.repeats, channels_last=not args.contiguous)
    emit_json_line(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
