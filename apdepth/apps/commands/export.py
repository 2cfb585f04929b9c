"""Export an ApDepth checkpoint to ONNX (its four networks; the pipeline's pre- and post-processing stays in
Python), then check the export against the torch pipeline with onnxruntime.

    apdepth export --model embedded -o exported/ --height 480 --width 640
    apdepth export --model embedded -o exported-dyn/ --height 480 --width 640 --dynamic
    apdepth predict photo.jpg -o out/ --backend onnxruntime --onnx exported-dyn/

--height/--width is the processing size: the size the pipeline runs at after its resize (the long edge is
--processing-res). A fixed-size export runs only at that size; --dynamic frees batch, height and width.
TensorRT: build engines from the .onnx files with trtexec (docs/features.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--height", type=int, required=True, help="processing height (after the pipeline's resize)")
    parser.add_argument("--width", type=int, required=True, help="processing width")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch, height and width (the given size is the tracing example)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch of a fixed-size export (default 1)")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                        help="exported weights and compute (default fp32; fp16 is meant for GPU runtimes)")
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx path (default torchscript: several times faster to export)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the onnxruntime check against the torch pipeline")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="embedded",
                   help="ApDepth checkpoint: hub id, local folder or 'embedded' (default: the embedded demo model)")
    g.add_argument("--prior", default=None, help="prior override (as for apdepth predict)")
    g.add_argument("--offline", action="store_true", help="use only locally cached files (no network)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ...export import compare_backends, export_onnx, load_exported_pipeline
    from ...io import save_json
    from ...pipeline import ApDepthPipeline
    from .common import resolve_model

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    pipe = ApDepthPipeline.from_pretrained(resolve_model(args), prior=args.prior, dtype=dtype,
                                           local_files_only=args.offline)
    pipe.set_progress_bar_config(disable=True)
    manifest = export_onnx(pipe, args.output, args.height, args.width, dynamic=args.dynamic,
                           batch_size=args.batch_size, exporter=args.exporter, opset=args.opset)
    if not args.no_check:
        try:
            exported = load_exported_pipeline(args.output, backend="onnxruntime")
            check = {"backend": "onnxruntime", **compare_backends(pipe, exported, args.height, args.width)}
        except Exception as e:  # noqa: BLE001 - e.g. fp16 kernels missing in onnxruntime's CPU build
            check = {"backend": "onnxruntime", "error": f"{type(e).__name__}: {e}"}
            logger.warning("onnxruntime could not run the export here (%s); it is written but unchecked.", e)
        manifest["check"] = check
        save_json(Path(args.output) / "apdepth_onnx.json", manifest)
        if "error" not in check:
            logger.info("check at %dx%d: max |depth difference| %.2e, mean %.2e (depth in [0, 1])",
                        args.height, args.width, check["max_abs_diff"], check["mean_abs_diff"])
    print(f"apdepth export: {', '.join(manifest['files'].values())}"
          f"{' + torch prior' if manifest['torch_networks'] else ''} -> {args.output}")
    return 0


# ---------------------------------------------------------------------------------- apdepth predict --backend


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--onnx`` for commands that run a pipeline (``apdepth predict``)."""
    g = parser.add_argument_group("runtime")
    g.add_argument("--backend", choices=("torch", "onnxruntime", "openvino"), default="torch",
                   help="run the networks in torch (default) or, from an `apdepth export` folder (--onnx), in "
                        "onnxruntime or OpenVINO; pre- and post-processing are the same Python code")
    g.add_argument("--onnx", type=Path, default=None, metavar="DIR", help="the `apdepth export` folder (--backend)")
    g.add_argument("--threads", type=int, default=None,
                   help="onnxruntime / OpenVINO intra-op threads (default: the runtime's choice)")


def load_backend_pipeline(args: argparse.Namespace):
    """The pipeline ``--backend`` asks for, or ``None`` for torch (the caller loads it as usual)."""
    from .common import UsageError

    backend = getattr(args, "backend", "torch")
    if backend == "torch":
        if getattr(args, "onnx", None) is not None:
            raise UsageError("--onnx needs --backend onnxruntime or openvino")
        return None
    if args.onnx is None:
        raise UsageError(f"--backend {backend} runs an exported model: pass --onnx DIR (made by `apdepth export`)")
    clashes = [flag for flag, on in (("--vae-tiling", getattr(args, "vae_tiling", False)),
                                     ("--low-memory", getattr(args, "low_memory", False)),
                                     ("--compile", getattr(args, "compile", None)),
                                     ("--model", getattr(args, "model", None)),
                                     ("--prior", getattr(args, "prior", None))) if on]
    if clashes:
        raise UsageError(f"{', '.join(clashes)}: torch options; --backend {backend} runs the export in {args.onnx}")
    if getattr(args, "dtype", "fp32") != "fp32":
        logger.warning("--dtype is ignored with --backend %s: the export's dtype is used.", backend)
    from ...export import load_exported_pipeline

    options = {"threads": args.threads} if args.threads else {}
    try:
        return load_exported_pipeline(args.onnx, backend=backend, **options)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise UsageError(f"--onnx {args.onnx}: {e}") from e
