"""Allocator rows: minor page faults, CPU time and wall time of a VAE encode under each CPU allocator
(glibc as is, glibc with retained memory, jemalloc and tcmalloc when installed), each in a fresh process
so the allocators are compared on equal terms. Run one measurement by hand with::

    python -m apdepth.benchmark.allocation --arch full --res 320x240 --dtype fp32 --repeats 3
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=retain:true,... python -m ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from ..allocator import active_allocator, find_library, preload_env, retain_glibc_memory


def fault_counts(fn, repeats: int = 3, warmup: int = 1) -> dict:
    """Per call of ``fn`` (medians over ``repeats`` after ``warmup``): wall ms, CPU ms (user + system, all
    threads of this process), system ms and minor page faults."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        samples.append({"wall_ms": wall * 1000, "cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime
                                                           - before.ru_stime) * 1000,
                        "sys_ms": (after.ru_stime - before.ru_stime) * 1000,
                        "minor_faults": after.ru_minflt - before.ru_minflt})
    return {k: sorted(s[k] for s in samples)[len(samples) // 2] for k in samples[0]} | {"n": repeats}


def vae_encode_pass(arch: str, height: int, width: int, dtype: str, repeats: int, warmup: int,
                    glibc_retain: bool = False) -> dict:
    """Build the VAE (random weights), then :func:`fault_counts` of one encode of a ``[1, 3, H, W]`` image."""
    import torch

    from ..devices import DTYPES
    from ..diffusion import encode_latent
    from ..diffusion.architectures import SD2_VAE, tiny_vae

    if glibc_retain and not retain_glibc_memory():
        raise RuntimeError("glibc mallopt is not available in this process")
    torch.manual_seed(0)
    if arch == "full":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(**SD2_VAE)
    else:
        vae = tiny_vae()
    torch_dtype = DTYPES[dtype]
    vae = vae.to(torch_dtype).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    rgb = (torch.rand(1, 3, height, width) * 2 - 1).to(torch_dtype)

    def run():
        with torch.no_grad():
            encode_latent(vae, rgb)

    return fault_counts(run, repeats, warmup) | {"allocator": "glibc-retain" if glibc_retain else active_allocator(),
                                                 "torch_threads": torch.get_num_threads()}


def allocator_variants() -> list[tuple[str, dict, list[str]]]:
    """``(name, extra environment, extra arguments)`` for each allocator this machine can run."""
    variants = [("glibc (default)", {}, []), ("glibc, retained (mallopt)", {}, ["--glibc-retain"])]
    for name in ("jemalloc", "tcmalloc"):
        if find_library(name):
            variants.append((f"{name}, retained", preload_env(name, environ={}), []))
    return variants


def measure_in_subprocess(env_extra: dict, args: list[str], timeout: float = 1800) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")} | env_extra
    out = subprocess.run([sys.executable, "-m", "apdepth.benchmark.allocation", *args], env=env, check=True,
                         capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def allocator_rows(bench, dtype: str) -> None:
    """One ``allocator`` row per available allocator: a VAE encode at the bench resolution (CPU only)."""
    from .report import Row
    from .timing import Timing

    cfg = bench.cfg
    h, w = cfg.resolution
    args = ["--arch", cfg.arch, "--res", f"{w}x{h}", "--dtype", dtype, "--repeats", str(min(cfg.repeats, 3)),
            "--warmup", str(min(cfg.warmup, 1))]
    baseline = None
    for name, env, extra in allocator_variants():
        try:
            m = measure_in_subprocess(env, args + extra)
        except (subprocess.SubprocessError, ValueError, OSError) as e:
            bench.add(Row("allocator", f"VAE encode: {name}", dtype, f"{w}x{h}", 1, None,
                          note=f"failed: {type(e).__name__}"))
            continue
        baseline = baseline or m
        ms = m["wall_ms"]
        note = (f"{m['minor_faults']} minor faults/pass, CPU {m['cpu_ms']:.0f} ms (sys {m['sys_ms']:.0f})"
                + (f", {m['cpu_ms'] / baseline['cpu_ms']:.2f}x glibc's CPU time" if m is not baseline else ""))
        bench.add(Row("allocator", f"VAE encode: {name}", dtype, f"{w}x{h}", 1, Timing(ms, ms, ms, ms, m["n"], 1),
                      note=note, extra=m))


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (W x H) -> (H, W), for ``--res``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=("full", "tiny"), default="full")
    p.add_argument("--res", type=parse_size, default=(240, 320), metavar="WxH")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--glibc-retain", action="store_true", help="mallopt: no mmap for large blocks, no trimming")
    a = p.parse_args(argv)
    print(json.dumps(vae_encode_pass(a.arch, *a.res, a.dtype, a.repeats, a.warmup, a.glibc_retain)))


if __name__ == "__main__":
    main()
