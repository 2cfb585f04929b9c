"""Make the embedded demo model: procedural data, a small VAE and prior, stages 1 and 2, evaluation, card.

    apdepth demo-model -o runs/demo --install

Each step is skipped when its output is already in OUTDIR, so an interrupted run continues where it
stopped (training resumes from its last checkpoint). See apdepth/embedded/recipe.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


# = apdepth.embedded.recipe.STEPS (that module imports torch; a test keeps the two equal)
STEPS = ("data", "base", "stage1", "stage2", "export", "evaluate", "card")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/demo"), metavar="DIR",
                        help="working folder: data, components, runs, evaluation, card (default: runs/demo)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="run only these steps")
    parser.add_argument("--install", action="store_true",
                        help="afterwards copy the model (fp16) and its card into the package (apdepth/embedded/"
                             "weights), where `apdepth predict` finds it")
    parser.add_argument("--configs", type=Path, default=None,
                        help="folder with stage1.yaml and stage2.yaml (default: the packaged demo presets)")
    parser.add_argument("--device", default="cpu", help="device for the component pre-training and evaluation")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default: 0)")
    parser.add_argument("--outdoor", type=float, default=None,
                        help="fraction of the training scenes that are open-air (default: 0.4, the shipped model's)")
    parser.add_argument("--closeup", type=float, default=None,
                        help="fraction that are close-ups of one subject before a backdrop (default: 0.3, the shipped "
                             "model's)")
    parser.add_argument("--stage2-degraded", type=float, default=None, metavar="F",
                        help="share of stage 2's training images replaced by photometrically degraded copies, so "
                             "the frozen prior's maps look as on photographs (default: 1, the shipped "
                             "model's)")
    parser.add_argument("--prior-focus-steps", type=int, default=None, metavar="N",
                        help="then train the prior N more steps on the open-air and close-up scenes only (default: "
                             "900, the shipped model's)")
    parser.add_argument("--prior-width", type=int, default=None, metavar="W",
                        help="the prior's ViT width, among 96, 128, 144, 160, 192 (default: 96, the shipped "
                             "model's; 144 takes 1.8x the prior's training time)")
    parser.add_argument("--stage2-steps", type=int, default=None, metavar="N",
                        help="length of stage 2 in steps, its final FFT phase kept at the preset's length (default: "
                             "the preset's 3000)")
    parser.add_argument("--stage2-restart-steps", type=int, default=None, metavar="N",
                        help="then a warm restart: N more stage-2 steps from its weights, the learning rate warmed "
                             "up again (default: 400, the shipped model's; 0: none)")
    parser.add_argument("--smoke", action="store_true", help="a few images and steps: checks the recipe runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the steps and their outputs, check the training configs resolve, and exit")


def run(args: argparse.Namespace) -> int:
    from ...embedded.recipe import Recipe, RecipeConfig, install
    from .common import quiet_loading_bars

    quiet_loading_bars()
    cfg = RecipeConfig.smoke() if args.smoke else RecipeConfig()
    cfg.seed = args.seed
    for name in ("outdoor", "closeup", "stage2_degraded", "prior_focus_steps", "prior_width", "stage2_steps",
                 "stage2_restart_steps"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    try:
        recipe = Recipe(args.output, cfg, configs=args.configs, device=args.device)
    except (ValueError, FileNotFoundError) as e:  # settings that contradict each other, a missing preset
        logger.error("%s", e)
        return 2
    try:
        if args.dry_run:
            from ...training.config import ConfigError

            try:
                print("\n".join(recipe.plan(args.steps)))
            except ConfigError as e:
                logger.error("%s", e)
                return 2
            return 0
        recipe.run(args.steps)
    except FileNotFoundError as e:
        logger.error("%s", e)
        return 2
    if args.install:
        install(args.output)
    logger.info("Done: %s", args.output / "MODEL_CARD.md")
    return 0
