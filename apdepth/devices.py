"""Dtypes by name and device-dependent speed defaults, each chosen by measurement (``apdepth bench``,
docs/benchmarks): which dtype ``--dtype auto`` picks, and where channels_last memory layout pays."""

from __future__ import annotations

import functools

import torch

# The dtype names of the command line, configs and benchmarks (``--dtype``, training's ``cache_dtype``, ...).
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The ``flags`` line of /proc/cpuinfo; empty where it cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (Intel AMX or AVX-512 BF16; read from /proc/cpuinfo).

    Without them torch emulates bf16 and it runs several times slower than fp32; with AMX it runs about
    four times faster (full-size ApDepth, 640x480, 2 cores of a Xeon with AMX: 6.9 s against 29.2 s).
    Not Linux: assumed absent.
    """
    flags = _cpu_flags(cpuinfo)
    return "amx_bf16" in flags or "avx512_bf16" in flags


# The CPU features that decide which kernels run: bf16 and int8 matrix units and vector extensions.
CPU_FEATURES = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "fma")


def cpu_backend_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """What the CPU kernels run on: torch's dispatch ISA (``torch.backends.cpu.get_cpu_capability()``, e.g.
    ``AVX512``), the relevant /proc/cpuinfo flags, whether bf16 is native, and the oneDNN build that runs
    the convolutions and matrix products (from ``torch.__config__.show()``)."""
    flags = set(_cpu_flags(cpuinfo))
    onednn = next((line.strip().lstrip("- ") for line in torch.__config__.show().splitlines()
                   if "MKL-DNN" in line or "oneDNN" in line), None)
    return {"isa": torch.backends.cpu.get_cpu_capability(), "cpu_flags": [f for f in CPU_FEATURES if f in flags],
            "native_bf16": "amx_bf16" in flags or "avx512_bf16" in flags,
            "onednn": onednn.split(" (Git")[0] if onednn and torch.backends.mkldnn.is_available() else None}


def auto_dtype(device: torch.device) -> torch.dtype:
    """The fastest dtype that keeps the depth faithful on ``device``: bf16 on CUDA GPUs that support it
    (fp16 on older ones) and on CPUs with native bf16; fp32 elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def prefers_channels_last(device: torch.device) -> bool:
    """channels_last for the UNet and VAE pays on CPUs and costs on CUDA GPUs. Measured end to end,
    640x480: 2 Xeon cores with AMX -18% (fp32) and -58% (bf16); 2 EPYC cores (AVX2) -13% (fp32); one
    H100 +14% (bf16, batch 1) and +22% (batch 8, with cuDNN autotuning)."""
    return device.type == "cpu"
