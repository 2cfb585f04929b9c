"""The ``apdepth`` command line: one subcommand per module in ``apdepth.apps.commands``.

Each command module provides ``add_arguments(parser)``, optionally ``check(args)`` and ``run(args) -> int``
(the exit status). ``add_arguments`` and ``check`` import nothing heavy (no torch, diffusers or
transformers), so ``--help`` and every option error answer at once; ``check`` raises
:class:`~apdepth.apps.commands.common.UsageError` for anything it can find without a model. Exit statuses:
0 done, 1 some inputs failed, 2 usage error or a model that cannot be loaded, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import allocator

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("apdepth.apps.commands.predict", "predict depth maps for images, folders or lists of paths"),
    "train": ("apdepth.apps.commands.train", "train stage 1 (feature alignment) or stage 2 (depth) from a config"),
    "cache": ("apdepth.apps.commands.cache", "build the latent cache of a training config (frozen encoders' latents)"),
    "bench": ("apdepth.apps.commands.bench", "measure speed and memory on full-size architectures (no download)"),
    "evaluate": ("apdepth.apps.commands.evaluate", "zero-shot benchmark (Table 1): NYUv2, KITTI, ETH3D, ScanNet, DIODE"),
    "evaluate-whdr": ("apdepth.apps.commands.whdr", "relative depth on real photographs: WHDR on labelled point pairs"),
    "video": ("apdepth.apps.commands.video", "temporally stable depth for a video or a folder of frames"),
    "serve": ("apdepth.apps.commands.serve", "start the local web demo (needs apdepth[demo])"),
    "demo-model": ("apdepth.apps.commands.demo_model", "make the embedded demo model (synthetic data, all training "
                   "stages, evaluation, model card)"),
    "export": ("apdepth.apps.commands.export", "export a checkpoint to ONNX (onnxruntime, OpenVINO, TensorRT)"),
    "synth": ("apdepth.apps.commands.synth", "generate procedural RGB-D scenes in the training / evaluation layouts"),
}

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="apdepth", description="ApDepth: single-step diffusion monocular depth estimation."
    )
    parser.add_argument("--version", action="version", version=f"apdepth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks of errors)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        allocator.add_argument(cmd)
        cmd.set_defaults(_module=module, _parser=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .commands.common import ModelLoadError, UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # jemalloc/tcmalloc re-execute the real command line (argv None) with LD_PRELOAD; never a library call
    allocator.apply(args.allocator, getattr(args, "device", None), sys.argv[1:] if argv is None else None)
    name = f"{parser.prog} {args.command}"
    try:
        check = getattr(args._module, "check", None)
        if check is not None:
            check(args)
        return int(args._module.run(args) or 0)
    except UsageError as e:
        args._parser.print_usage(sys.stderr)
        print(f"{name}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ModelLoadError as e:
        if args.verbose:
            import traceback

            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(f"{name}: error: {e}" + ("" if args.verbose else " (-v shows the traceback)"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"\n{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
