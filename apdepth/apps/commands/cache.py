"""Build the latent cache of a training run: the frozen encoders' latents of every sample, both flips.

    apdepth cache --config configs/stage1.yaml data.cache_dir=cache/latents
    apdepth train --config configs/stage1.yaml data.cache_dir=cache/latents   # reads it

The RGB, prior and ground-truth latents (VAE and Depth Anything V2 prior, the same for both stages) go
to data.cache_dir; a run with the same model, prior and data then reads them instead of encoding every
step. Give the run's own config (and overrides): the cache records a fingerprint of what it was built
for, and a run that differs refuses it. An interrupted pre-pass resumes; several processes
(`accelerate launch -m apdepth cache ...`) split the samples.
"""

from __future__ import annotations

import argparse
import logging

from .common import UsageError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. data.cache_dir=cache/latents data.cache_dtype=bf16")
    parser.add_argument("--config", "-c", action="append", default=[], metavar="YAML",
                        help="the training run's config file, or a packaged preset by name: stage1, stage2, ... "
                             "(repeatable; later files win)")


def check(args: argparse.Namespace) -> None:
    if not args.config:
        raise UsageError("give --config: the training run's config (the cache is built for its model and data)")


def run(args: argparse.Namespace) -> int:
    from ...training import cache_latents_from_files
    from ...training.config import ConfigError
    from .common import quiet_loading_bars

    quiet_loading_bars()
    try:
        out = cache_latents_from_files(args.config, args.overrides)
    except ConfigError as e:
        logger.error("%s", e)
        return 2
    logger.info("Done: %s", out)
    return 0
