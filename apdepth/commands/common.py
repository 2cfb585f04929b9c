"""What every command shares: device and dtype flags, and loading the pipeline."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16", "bf16", "auto")
DEFAULT_MODEL = "developy/ApDepth"
EMBEDDED = "embedded"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help=f"ApDepth checkpoint: hub id, local folder, or '{EMBEDDED}' (the small demo model inside "
                        f"the package). Default: {DEFAULT_MODEL} if it is in the local cache, else '{EMBEDDED}'")
    g.add_argument("--prior", default=None,
                   help="prior override: small|base|large|giant, a transformers hub id or folder, "
                        "or an original depth_anything_v2_vit*.pth")
    g.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="weights and compute dtype (default: fp32). auto: the fastest faithful one here, bf16 on "
                        "CUDA GPUs and on CPUs with AMX/AVX-512-BF16 (about 4x faster there), else fp32")
    g.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default="auto",
                   help="UNet and VAE weight layout (same results): auto = channels_last on CPUs, where it is "
                        "faster, contiguous on GPUs")
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    g.add_argument("--offline", action="store_true", help="use only locally cached files (no network)")
    g.add_argument("--vae-tiling", action="store_true",
                   help="large inputs in less memory: decode in overlapping tiles, encode one image per VAE call "
                        "(close to, not equal to, whole decoding)")
    g.add_argument("--low-memory", action="store_true",
                   help="CUDA: keep only the running model on the GPU (model CPU offload), for small cards")
    g.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the UNet and VAE (MODE: default, reduce-overhead = with CUDA graphs, "
                        "max-autotune); pays off over many same-size inputs: each new size compiles again")


def distributed_state(device: str | None = None):
    """accelerate's process state when launched with several processes (accelerate launch / torchrun),
    else ``None``. Processes share CPUs (gloo) when ``device`` is ``cpu`` or there is no CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def resolve_device(name: str | None):
    import torch

    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def parse_dtype(name: str, device=None):
    """``fp32``/``fp16``/``bf16``, or ``auto``: :func:`apdepth.devices.auto_dtype` for ``device``."""
    import torch

    if name == "auto":
        from ..devices import auto_dtype

        return auto_dtype(torch.device(device or "cpu"))
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def released_checkpoint_cached(repo_id: str = DEFAULT_MODEL) -> bool:
    """Whether the hub checkpoint ``repo_id`` is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def resolve_model(args: argparse.Namespace) -> str:
    """What ``--model`` names: ``embedded`` -> the packaged demo model; no ``--model`` -> the released
    checkpoint when cached, else the embedded model (said in one line). Sets ``args.model`` to the choice."""
    from ..demo_model import embedded_model_path

    if args.model is None:
        if released_checkpoint_cached():
            args.model = DEFAULT_MODEL
        else:
            args.model = EMBEDDED
            logger.info("No --model given and %s is not cached: using the embedded demo model (small, trained "
                        "only on synthetic scenes; for real images pass --model %s).", DEFAULT_MODEL, DEFAULT_MODEL)
    if args.model == EMBEDDED:
        return str(embedded_model_path())
    return args.model


def load_pipeline(args: argparse.Namespace, device=None):
    """Load the ApDepth pipeline the model flags describe, on its device and dtype.

    ``device`` (e.g. this process's GPU under accelerate) is used when ``--device`` is not given.
    """
    from ..pipeline import ApDepthPipeline

    device = resolve_device(args.device) if args.device or device is None else device
    dtype = parse_dtype(args.dtype, device)
    if device.type == "cpu" and args.dtype == "fp16":
        logger.warning("fp16 on the CPU is slow and poorly supported; bf16 or fp32 are better choices there.")
    if device.type == "cpu" and args.dtype == "bf16":
        from ..devices import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            logger.warning("This CPU has no native bf16 (AMX or AVX-512 BF16): bf16 runs emulated, several times "
                           "slower than fp32. --dtype auto picks the fast one.")
    pipe = ApDepthPipeline.from_pretrained(
        resolve_model(args), prior=args.prior, dtype=dtype, local_files_only=args.offline
    )
    pipe.set_progress_bar_config(disable=True)
    if getattr(args, "vae_tiling", False):
        pipe.enable_vae_tiling()
    from ..devices import prefers_channels_last

    memory_format = getattr(args, "memory_format", "auto")
    pipe.set_channels_last(prefers_channels_last(device) if memory_format == "auto" else memory_format == "channels_last")
    if getattr(args, "compile", None):
        pipe.compile_models(args.compile)
    if getattr(args, "low_memory", False):
        if device.type != "cuda":
            raise SystemExit(f"--low-memory offloads models from a CUDA GPU; the device here is {device}.")
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return pipe.to(device)
