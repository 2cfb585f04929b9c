"""Two-stage ApDepth training (paper Sec. 3.2-3.4): one loop (:func:`train`), two small stages.

- :mod:`.config`: dataclass configs with the paper's values, YAML deltas, ``key=value`` overrides
- :mod:`.stage1` / :mod:`.stage2`: the losses of each stage
- :mod:`.inputs`: frozen encoders run once per batch; the trainable module (UNet + adapter)
- :mod:`.loop`: accelerate, accumulation, optimizer, EMA, logs, validation, checkpoints, export
- :mod:`.checkpoint`: atomic safetensors checkpoints and exact resumption
- :mod:`.cache`: the latent cache pre-pass
- :mod:`.schedule`: the learning-rate schedule (warm-up, exponential or cosine decay)
"""

from .config import STAGE_STEPS, TrainConfig, build_config
from .loop import train, train_from_files
from .schedule import LRSchedule

__all__ = ["LRSchedule", "STAGE_STEPS", "TrainConfig", "build_config", "train", "train_from_files"]
