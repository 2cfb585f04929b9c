"""``torch.compile`` for the pipeline: the modes and scopes it takes, the persistent compile cache, and the
``--fast`` preset (the documented set of speed settings a user gets by asking for speed).

The compile cache: inductor keeps its compiled artefacts (FX graph cache, AOTAutograd cache, generated C++ /
Triton kernels, autotuning results) in one folder, by default under the system's temporary folder, which is
emptied at reboot and on many machines by cleaners. :func:`enable_compile_cache` points it at a per-user
folder (``$APDEPTH_CACHE_DIR/inductor``, else ``$XDG_CACHE_HOME/apdepth/inductor``, else
``~/.cache/apdepth/inductor``) unless the user already chose one (``TORCHINDUCTOR_CACHE_DIR``), so that
compiling is paid once per machine, model architecture, input size, dtype and device: inductor's own cache
keys hold the graph (the architecture and the input shapes), dtypes, device, and the torch version; the
weights are inputs of the compiled graph, not part of the key, so a fine-tuned checkpoint of the same
architecture reuses the artefacts. Later processes still trace the Python code (dynamo) but skip
inductor's lowering and the kernel compilation.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["CUDA_GRAPH_MODES", "MODES", "SCOPES", "FastPreset", "apply_fast_preset", "compile_cache_dir",
           "default_compile_cache_dir", "enable_compile_cache", "with_inductor_freezing", "fast_compile_mode"]

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # these capture CUDA graphs on CUDA devices
# "modules": the UNet and the VAE's encoder and decoder, each its own compiled region (the prior and the glue
# between them stay eager); "pipeline": prior, padding, both VAE encodes, the UNet step, the decode and the
# clamp as one region (one CUDA graph under reduce-overhead).
SCOPES = ("modules", "pipeline")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def default_compile_cache_dir() -> Path:
    """The per-user folder for inductor's artefacts: ``$APDEPTH_CACHE_DIR/inductor``, else
    ``$XDG_CACHE_HOME/apdepth/inductor``, else ``~/.cache/apdepth/inductor``."""
    if os.environ.get("APDEPTH_CACHE_DIR"):
        return Path(os.environ["APDEPTH_CACHE_DIR"]).expanduser() / "inductor"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "apdepth" / "inductor"


def compile_cache_dir() -> str | None:
    """The folder inductor caches in now (``TORCHINDUCTOR_CACHE_DIR``), or ``None`` when not set yet (inductor
    would then use its default under the temporary folder)."""
    return os.environ.get(CACHE_ENV)


def enable_compile_cache(directory: str | os.PathLike | None = None) -> str:
    """Keep inductor's compiled artefacts across processes in ``directory`` (default
    :func:`default_compile_cache_dir`). A folder the user set (``TORCHINDUCTOR_CACHE_DIR``) is kept and
    returned unchanged unless ``directory`` is given. Inductor's FX graph and AOTAutograd caches are on by
    default; their settings (``TORCHINDUCTOR_FX_GRAPH_CACHE``, ...) stay the user's. Returns the folder."""
    current = os.environ.get(CACHE_ENV)
    if directory is None and current:
        return current
    path = Path(directory).expanduser() if directory is not None else default_compile_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: inductor's default folder still works within the machine's uptime
        logger.warning("compile cache: cannot create %s (%s); inductor keeps its default folder", path, e)
        return current or ""
    os.environ[CACHE_ENV] = str(path)
    if current and current != str(path):
        _clear_inductor_path_caches()
    return str(path)


def _clear_inductor_path_caches() -> None:
    """Inductor memoises some paths under its cache folder; forget them after the folder changed."""
    import sys

    utils = sys.modules.get("torch._inductor.utils")
    if utils is not None and hasattr(utils, "clear_caches"):
        utils.clear_caches()


def with_inductor_freezing(fn):
    """``fn`` (a ``torch.compile`` result) called with inductor's ``freezing`` on: the weights become constants
    of the compiled graph (folded, and on CPUs prepacked for oneDNN). Inductor reads the setting from its
    global config when it compiles, at the first call of each new input size, so it is patched around every
    call; ``torch.compile(options={"freezing": True})`` leaves it off (checked with torch 2.13)."""
    import functools

    import torch._inductor.config as inductor_config

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with inductor_config.patch(freezing=True):
            return fn(*args, **kwargs)

    return call


def fast_compile_mode(device_type: str) -> str | None:
    """The whole-pipeline compile mode ``--fast`` uses on a device type: ``reduce-overhead`` (one CUDA graph,
    no launch overhead at batch 1) on CUDA. ``None`` elsewhere: on CPUs, measured at 320x240 on 2 Zen 4
    cores (docs/benchmarks/README.md, "Whole-pipeline compile"), the compiled region is 4-16% faster per image
    on the embedded model and not measurably faster on the full-size one, while its first call takes 16-34 s
    from a warm cache and 4-6 minutes cold: no gain within one command-line run."""
    return "reduce-overhead" if device_type == "cuda" else None


@dataclass
class FastPreset:
    """What :func:`apply_fast_preset` turned on (``settings``) and what it left as it was, and why (``kept``)."""

    settings: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = "--fast: " + ", ".join(self.settings)
        return text + (f" (unchanged: {'; '.join(self.kept)})" if self.kept else "")


def apply_fast_preset(pipe, device, compile_mode: str | None = "auto", scope: str = "pipeline", cache: bool = True,
                      memory_format: str = "auto") -> FastPreset:
    """The ``--fast`` set on a loaded pipeline (its dtype is chosen at loading: ``--fast`` means
    ``--dtype auto`` unless a dtype is named): channels_last where it pays (``memory_format="auto"``: CPUs),
    SDPA attention in the UNet and the VAE, the RGB encode beside the prior on a second CUDA stream, the
    whole pipeline compiled as one region (``compile_mode="auto"``: :func:`fast_compile_mode`; ``None``: not
    compiled) with the persistent compile cache. Each of these gives the eager output within float
    tolerance (the dtype aside); returns what was set, for the caller to print."""
    import torch

    from .devices import prefers_channels_last

    device = torch.device(device)
    preset = FastPreset()
    dtype = str(pipe.unet.dtype).removeprefix("torch.")
    preset.settings.append(f"dtype {dtype}" + ("" if dtype == "float32" else " (not fp32: the depth moves beyond float "
                                                                            "tolerance, ~1e-3 mean; --dtype fp32 keeps it)"))
    channels_last = prefers_channels_last(device) if memory_format == "auto" else memory_format == "channels_last"
    pipe.set_channels_last(channels_last)
    preset.settings.append("channels_last" if channels_last else "contiguous layout")
    preset.settings.append(_ensure_sdpa(pipe))
    if device.type == "cuda":
        pipe.overlap_prior = True
        preset.settings.append("RGB encode beside the prior (second CUDA stream)")
    mode = fast_compile_mode(device.type) if compile_mode == "auto" else compile_mode
    if mode is not None:
        pipe.compile_models(mode, scope=scope, cache=cache)
        preset.settings.append(f"torch.compile ({mode}, {'whole pipeline' if scope == 'pipeline' else scope})")
        if cache:
            preset.settings.append(f"compile cache {compile_cache_dir()}")
    elif compile_mode == "auto":
        preset.kept.append(f"no torch.compile on {device.type} (measured: it does not pay here)")
    return preset


def _ensure_sdpa(pipe) -> str:
    """SDPA attention (diffusers' ``AttnProcessor2_0``, its default) in the UNet and the VAE wherever the classic
    processor was set; custom processors are left alone."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    changed = 0
    for module in (pipe.unet, pipe.vae):
        processors = module.attn_processors
        if processors and all(type(p) is AttnProcessor for p in processors.values()):
            module.set_attn_processor(AttnProcessor2_0())
            changed += 1
    return "SDPA attention" + ("" if changed else " (already set)")
