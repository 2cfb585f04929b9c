"""Two-stage ApDepth training (paper Sec. 3.2-3.4): one loop (:func:`train`), two stages behind one interface.

- :mod:`.config`: dataclass configs with the paper's values, YAML deltas, ``key=value`` overrides
- :mod:`.stage`: :class:`TrainingStage`, what a stage declares (modules, inputs, losses, phases, logs, export)
- :mod:`.stage1` / :mod:`.stage2`: the two stages
- :mod:`.inputs`: frozen encoders run once per batch; the trainable module (UNet + adapter)
- :mod:`.loop`: accelerate, accumulation, optimizer, EMA, logs, validation, checkpoints, export
- :mod:`.checkpoint`: atomic safetensors checkpoints and exact resumption
- :mod:`.cache`: the latent cache and its own entry point, :func:`cache_latents` (``apdepth cache``)
- :mod:`.schedule`: the learning-rate schedule (warm-up, exponential or cosine decay)
"""

from .cache import cache_latents, cache_latents_from_files
from .config import STAGE_STEPS, TrainConfig, build_config
from .loop import train, train_from_files
from .schedule import LRSchedule
from .stage import TrainingStage

__all__ = ["LRSchedule", "STAGE_STEPS", "TrainConfig", "TrainingStage", "build_config", "cache_latents",
           "cache_latents_from_files", "train", "train_from_files"]
