"""Train ApDepth: stage 1 (feature alignment) or stage 2 (depth), from a YAML config and overrides.

    apdepth train --config configs/stage1.yaml
    apdepth train --config configs/stage2.yaml model.base=runs/stage1/final run.output_dir=runs/stage2
    apdepth train --config configs/stage2.yaml --resume            # latest checkpoint of run.output_dir
    apdepth train --resume runs/stage2/checkpoints/step_0005000    # that checkpoint, its own config

The latent cache (data.cache_dir) is built by its own command, `apdepth cache --config ...`;
`--build-cache` here does the same and exits without training.

Configs hold only what differs from the defaults in apdepth/training/config.py; KEY=VALUE overrides
(dotted keys, YAML values) go on top. Several GPUs or nodes: start it with
`accelerate launch [--num_processes N ...] -m apdepth train ...`.
"""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. stage2.freq_strength=1.0 run.output_dir=runs/x")
    parser.add_argument("--config", "-c", action="append", default=[], metavar="YAML",
                        help="config file, or a packaged preset by name: stage1, stage2, stage2_release, "
                             "ablation/lambda_1.0, ... (repeatable; later files win)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="resume: a checkpoint or run folder; alone, the latest checkpoint of run.output_dir")
    parser.add_argument("--build-cache", action="store_true",
                        help="fill data.cache_dir with the latent cache and exit, without training (the same as "
                             "`apdepth cache`)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    from ...training import build_config, train_from_files
    from ...training.config import ConfigError
    from .common import quiet_loading_bars

    quiet_loading_bars()

    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.append(args.resume)  # `--resume key=value`: a bare --resume followed by an override
        args.resume = True
    if not args.config and not args.resume:
        logger.error("apdepth train: give --config (or --resume CHECKPOINT)")
        return 2
    try:
        if args.print_config:
            print(build_config(args.config, args.overrides).to_yaml(), end="")
            return 0
        out = train_from_files(args.config, args.overrides, resume=args.resume, build_cache=args.build_cache)
    except ConfigError as e:
        logger.error("%s", e)
        return 2
    logger.info("Done: %s", out)
    return 0
