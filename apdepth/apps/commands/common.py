"""What every command shares: device and dtype flags, option checks, and loading the pipeline. Which model and
which device a command gets is decided in :mod:`apdepth.hub` (shared with :func:`apdepth.depth_pipeline`);
this module only turns flags into its arguments and its errors into :class:`UsageError`.

Nothing here imports torch, diffusers or transformers at module level: the command line parses and
checks its options (``check`` functions, :class:`UsageError`) before any heavy import.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from ... import hub
from ...hub import DEFAULT_MODEL, EMBEDDED

logger = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16", "bf16", "auto")
# Upper bound of --processing-res (and --tta-res) unless --max-processing-res raises it: 4096 px on the long
# edge already needs tens of GB on a GPU; a typo such as 100000 would try to allocate ~90 GB.
MAX_PROCESSING_RES = 4096
# Depth Anything V2 sizes and their aliases (apdepth.priors.variants.ALIASES; a test keeps the two equal).
PRIOR_SIZES = ("s", "vits", "small", "b", "vitb", "base", "l", "vitl", "large", "g", "vitg", "giant")
RESAMPLE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")  # = apdepth.pipeline.RESAMPLE_MODES


class UsageError(Exception):
    """A bad option or path, found before any model loads: the command line prints it after the usage line
    and exits with status 2."""


class _Explicit(argparse.Action):
    """Store the value and remember that it was given (``--fast`` fills only what the user left unset)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if values is None else values)
        namespace.explicit = {*getattr(namespace, "explicit", ()), self.dest}


class ModelLoadError(Exception):
    """A model or prior that cannot be loaded: one line naming it and the reason, exit status 2 (the
    traceback only with -v)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help=f"ApDepth checkpoint: hub id, local folder, or '{EMBEDDED}' (the small demo model inside "
                        f"the package). Default: {DEFAULT_MODEL} if it is complete in the local cache, else "
                        f"'{EMBEDDED}'")
    g.add_argument("--prior", default=None,
                   help="prior override: small|base|large|giant, a transformers hub id or folder, "
                        "or an original depth_anything_v2_vit*.pth")
    g.add_argument("--dtype", choices=DTYPES, default="fp32", action=_Explicit,
                   help="weights and compute dtype (default: fp32). auto: the fastest faithful one here, bf16 on "
                        "CUDA GPUs and on CPUs with AMX/AVX-512-BF16 (about 4x faster there), else fp32")
    g.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default="auto", action=_Explicit,
                   help="UNet and VAE weight layout (same results): auto = channels_last on CPUs, where it is "
                        "faster, contiguous on GPUs")
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    g.add_argument("--offline", action="store_true", help="use only locally cached files (no network)")
    g.add_argument("--vae-tiling", action="store_true",
                   help="large inputs in less memory: decode in overlapping tiles, encode one image per VAE call "
                        "(close to, not equal to, whole decoding)")
    g.add_argument("--low-memory", action="store_true",
                   help="CUDA: keep only the running model on the GPU (model CPU offload), for small cards")
    g.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE", action=_Explicit,
                   help="torch.compile (MODE: default, reduce-overhead = with CUDA graphs, max-autotune); pays off "
                        "over many same-size inputs: each new size compiles again (compiled code is cached in "
                        "~/.cache/apdepth/inductor unless TORCHINDUCTOR_CACHE_DIR is set)")
    g.add_argument("--compile-scope", choices=("modules", "pipeline"), default="modules", action=_Explicit,
                   help="what --compile compiles: the UNet and the VAE each on its own (modules, the default) or "
                        "prior, encodes, UNet and decode as one region (pipeline: one CUDA graph with "
                        "reduce-overhead)")
    g.add_argument("--compile-freezing", action="store_true",
                   help="with --compile: the weights become constants of the compiled code (inductor freezing; on "
                        "CPUs each convolution's weight is prepacked for oneDNN once instead of at every call); frozen "
                        "graphs are not kept in the compile cache, so every run compiles again")
    g.add_argument("--max-processing-res", type=int, default=MAX_PROCESSING_RES, metavar="N",
                   help=f"refuse processing resolutions above N pixels (default: {MAX_PROCESSING_RES}; a guard "
                        "against typos that would exhaust memory)")


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fast", action="store_true",
                        help="the documented speed set (printed when applied): --dtype auto unless a dtype is "
                             "named, channels_last on CPUs, SDPA attention, on CUDA the RGB encode beside the prior "
                             "and the whole pipeline compiled as one CUDA graph (reduce-overhead) with a persistent "
                             "compile cache. Everything but the dtype gives the fp32 output within float tolerance; "
                             "bf16 moves the depth by ~1e-3 on average (docs/benchmarks/README.md)")


# ---------------------------------------------------------------------------- option checks (no heavy imports)


def split_list(values: str | list[str] | None) -> list[str]:
    """``"a,b c"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]``: commas and spaces both separate."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v for value in values for v in re.split(r"[,\s]+", value) if v]


def check_choices(values: list[str], allowed: tuple[str, ...], flag: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        what = f"unknown {', '.join(map(repr, bad))}" if bad else "nothing given"
        raise UsageError(f"{flag}: {what}; choose among {', '.join(allowed)} (separated by commas or spaces)")
    return values


def check_processing_res(value: int | None, limit: int, flag: str = "--processing-res") -> None:
    """``None`` (the checkpoint's default), ``0`` (native size) or ``1..limit``."""
    if value is None:
        return
    if value < 0:
        raise UsageError(f"{flag} must be >= 0 (0 = native size), got {value}")
    if value > limit:
        raise UsageError(f"{flag} {value} is above the limit of {limit} pixels (the memory this needs grows with "
                         f"its square); pass --max-processing-res {value} to allow it")


def check_colormap(name: str) -> None:
    import matplotlib  # ~0.3 s, paid only when a colour map is asked for

    if name not in matplotlib.colormaps:
        raise UsageError(f"--colormap: unknown matplotlib colour map {name!r} (e.g. Spectral, viridis, "
                         "magma, gray; reversed ones end in _r)")


def _looks_local(spec: str) -> bool:
    """A path rather than a hub id (``owner/name``)."""
    return (os.path.exists(spec) or spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1
            or os.sep != "/" and os.sep in spec or spec.endswith(os.sep))


def check_model_spec(spec: str | None, flag: str = "--model") -> None:
    """A local --model must be a pipeline folder (model_index.json); hub ids are checked when loaded."""
    if spec is None or spec == EMBEDDED or not _looks_local(spec):
        return
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(f"{flag} {spec}: no such folder (give a checkpoint folder, a hub id owner/name, or "
                         f"'{EMBEDDED}')")
    if not path.is_dir():
        raise UsageError(f"{flag} {spec}: a file, not a checkpoint folder (the folder holding model_index.json)")
    if not (path / "model_index.json").is_file():
        contents = "empty" if not any(path.iterdir()) else "no model_index.json in it"
        raise UsageError(f"{flag} {spec}: not an ApDepth checkpoint folder ({contents}; expected model_index.json "
                         "with unet/, vae/, scheduler/, text_encoder/, tokenizer/ beside it)")


def check_prior_spec(spec: str | None) -> None:
    """--prior: a size name, an existing folder or .pth/.pt file, an owner/name hub id, or owner/name/file.pth."""
    if spec is None or spec.lower() in PRIOR_SIZES:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise UsageError(f"--prior {spec}: no config.json in this folder; not a Depth Anything V2 checkpoint")
        if path.is_file() and path.suffix not in (".pth", ".pt"):
            raise UsageError(f"--prior {spec}: a file but not an original .pth/.pt checkpoint")
        return
    if spec.endswith((".pth", ".pt")) and (spec.count("/") >= 2 and not os.path.isabs(spec)):
        return  # owner/repo/file.pth on the hub
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not spec.endswith((".pth", ".pt")):
        return  # a hub id
    if _looks_local(spec) or spec.endswith((".pth", ".pt")):
        raise UsageError(f"--prior {spec}: no such file or folder")
    raise UsageError(f"--prior {spec}: not a size ({', '.join(('small', 'base', 'large', 'giant'))}), an existing "
                     "folder or .pth file, or a hub id (owner/name)")


def check_model_arguments(args: argparse.Namespace) -> None:
    """Everything of the model group that can be checked without loading anything."""
    check_model_spec(args.model)
    check_prior_spec(args.prior)
    if args.max_processing_res < 1:
        raise UsageError(f"--max-processing-res must be >= 1, got {args.max_processing_res}")
    if getattr(args, "processing_res", None) is not None:
        check_processing_res(args.processing_res, args.max_processing_res)
    if args.device is not None and not re.fullmatch(r"(cpu|cuda|mps|xpu|npu|hpu)(:\d+)?", args.device):
        raise UsageError(f"--device {args.device!r}: expected cpu, cuda, cuda:N, mps (or xpu/npu/hpu[:N])")
    if getattr(args, "low_memory", False) and args.device is not None and not args.device.startswith("cuda"):
        raise UsageError(f"--low-memory offloads models from a CUDA GPU; --device is {args.device}")
    from ...compilation import MODES

    if args.compile is not None and args.compile not in MODES:
        raise UsageError(f"--compile {args.compile!r}: choose among {', '.join(MODES)}")


def check_output_folder(outdir: Path, subfolders=()) -> None:
    """Make sure ``outdir`` (and each of ``subfolders``, paths under it) can be created and written to, before
    any work: creates ``outdir`` and writes and removes a probe file in it and in every subfolder that
    already exists. Raises :class:`UsageError` naming the folder and the reason."""
    import tempfile

    def probe(folder: Path) -> None:
        try:
            fd, name = tempfile.mkstemp(prefix=".apdepth-write-test.", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError as e:
            raise UsageError(f"cannot write to the output folder {folder} ({e.strerror or e})") from None

    for parent in (outdir, *outdir.parents):  # -o under a file: name the file
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"output folder {outdir}: {parent} is a file, not a folder")
        if parent.exists():
            break
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder {outdir} ({e.strerror or e})") from None
    probe(outdir)
    for folder in sorted(set(subfolders)):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise UsageError(f"cannot write under {folder}: {existing} is a file, not a folder")
        probe(existing)


# ---------------------------------------------------------------------------- which model (apdepth.hub)


def resolve_model(args: argparse.Namespace) -> str:
    """What ``--model`` names (:func:`apdepth.hub.resolve_model`): sets ``args.model`` to the choice (the
    released checkpoint or ``embedded`` when none was given) and returns the source to load."""
    args.model, source = hub.resolve_model(args.model)
    return source


def distributed_state(device: str | None = None):
    """accelerate's process state when launched with several processes (accelerate launch / torchrun),
    else ``None``. Processes share CPUs (gloo) when ``device`` is ``cpu`` or there is no CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def resolve_device(name: str | None):
    """:func:`apdepth.hub.resolve_device`, a bad ``--device`` being a :class:`UsageError`."""
    try:
        return hub.resolve_device(name)
    except ValueError as e:
        raise UsageError(f"--device {name!r}: {e.__cause__ or e}") from None


def parse_dtype(name: str, device=None):
    """``fp32``/``fp16``/``bf16``, or ``auto``: :func:`apdepth.devices.auto_dtype` for ``device``."""
    import torch

    from ...devices import DTYPES, auto_dtype

    if name == "auto":
        return auto_dtype(torch.device(device or "cpu"))
    return DTYPES[name]


def quiet_loading_bars() -> None:
    """Weight-loading bars add nothing on the command line (hub downloads keep their own bars). Called by the
    commands that load models, after their option checks: it imports diffusers and transformers."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(args: argparse.Namespace, device=None):
    """Load the ApDepth pipeline the model flags describe, on its device and dtype.

    ``device`` (e.g. this process's GPU under accelerate) is used when ``--device`` is not given. A model
    or prior that cannot be loaded raises :class:`ModelLoadError` naming it and the reason. ``--fast``
    (:func:`apdepth.compilation.apply_fast_preset`) fills what the user left unset and says what it set.
    """
    from ...pipeline import ApDepthPipeline

    quiet_loading_bars()
    device = resolve_device(args.device) if args.device or device is None else device
    fast, explicit = getattr(args, "fast", False), getattr(args, "explicit", set())
    dtype_name = "auto" if fast and "dtype" not in explicit else args.dtype
    dtype = parse_dtype(dtype_name, device)
    cpu_fp16 = _warn_if_slow_on_cpu(dtype_name, dtype, device)
    model = resolve_model(args)
    try:
        pipe = ApDepthPipeline.from_pretrained(model, prior=args.prior, dtype=dtype, local_files_only=args.offline)
    except Exception as e:  # noqa: BLE001 - any failure to load is reported in one line (the traceback with -v)
        raise ModelLoadError(load_failure_message(args, model, e)) from e
    pipe.set_progress_bar_config(disable=True)
    if getattr(args, "vae_tiling", False):
        pipe.enable_vae_tiling()
    from ...devices import prefers_channels_last

    memory_format = getattr(args, "memory_format", "auto")
    pipe.set_channels_last(prefers_channels_last(device) if memory_format == "auto" else memory_format == "channels_last")
    low_memory = getattr(args, "low_memory", False)
    if fast:
        _apply_fast(pipe, args, device, explicit, low_memory)
    elif getattr(args, "compile", None):
        pipe.compile_models(args.compile, scope=getattr(args, "compile_scope", "modules"),
                            freezing=getattr(args, "compile_freezing", False))
    if low_memory:
        if device.type != "cuda":
            raise SystemExit(f"--low-memory offloads models from a CUDA GPU; the device here is {device}.")
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    # diffusers warns at every fp16 module moved to the CPU ("cannot run": it does); said once above
    return pipe.to(device, silence_dtype_warnings=cpu_fp16)


def _apply_fast(pipe, args: argparse.Namespace, device, explicit: set, low_memory: bool) -> None:
    """``--fast`` on a loaded pipeline: the preset, a named --compile / --compile-scope / --memory-format
    winning over its choices; logs what was set."""
    from ...compilation import apply_fast_preset

    no_compile = low_memory or getattr(args, "vae_tiling", False)  # hooks and tiled VAE calls: not one region
    mode = None if no_compile else args.compile if "compile" in explicit else "auto"
    scope = args.compile_scope if "compile_scope" in explicit else "pipeline"
    memory_format = args.memory_format if "memory_format" in explicit else "auto"
    preset = apply_fast_preset(pipe, device, compile_mode=mode, scope=scope, memory_format=memory_format)
    if no_compile:
        preset.kept.append("no torch.compile with --low-memory / --vae-tiling")
    logger.info("%s", preset.describe())


def _warn_if_slow_on_cpu(name: str, dtype, device) -> bool:
    """Say in one line when the dtype runs slowly on this CPU; returns whether it is fp16 on the CPU."""
    cpu_fp16 = device.type == "cpu" and dtype == parse_dtype("fp16")
    if cpu_fp16:
        logger.warning("--dtype fp16 on the CPU: it runs, but slowly (few CPU kernels for fp16); fp32 is faster "
                       "here, and bf16 too on CPUs with AMX/AVX-512-BF16 (--dtype auto picks).")
    if device.type == "cpu" and name == "bf16":
        from ...devices import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            logger.warning("This CPU has no native bf16 (AMX or AVX-512 BF16): bf16 runs emulated, several times "
                           "slower than fp32. --dtype auto picks the fast one.")
    return cpu_fp16


def load_failure_message(args: argparse.Namespace, model: str, error: BaseException) -> str:
    """One line: which model (and prior) failed to load, and why (the library's message, first line)."""
    reason = " ".join(str(error).split()) or type(error).__name__
    if len(reason) > 400:
        reason = reason[:400] + " ..."
    what = f"the model {args.model}" + (f" ({model})" if model != args.model else "")
    if args.prior is not None:
        what += f" with --prior {args.prior}"
    return f"cannot load {what}: {type(error).__name__}: {reason}"
