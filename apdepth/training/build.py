"""Turn a :class:`~.config.TrainConfig` into data, model and stage, failing fast on bad paths.

Everything here runs before the first step: a missing data set, a wrong path, or a checkpoint that
does not fit the config stops the run within seconds with a message naming the config key.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..data import get_dataset
from ..data.training import TrainingView
from ..modules import DINOv2Encoder, build_adapter, load_external_encoder
from ..pipeline import ApDepthPipeline
from .config import ConfigError, TrainConfig, config_differences
from .stage1 import Stage1
from .stage2 import Stage2

logger = logging.getLogger(__name__)

# Keys a resumed run may change: bookkeeping, speed and memory settings, and the run length.
RESUMABLE_KEYS = (
    "run.checkpoint_every", "run.keep_checkpoints", "run.log_every", "run.output_dir", "run.mixed_precision",
    "data.num_workers", "data.cache_dir", "data.cache_dtype", "optim.max_steps", "model.local_files_only",
    "model.gradient_checkpointing", "optim.fused",
)


def _looks_local(spec: str) -> bool:
    """A path rather than a hub id ``owner/name``."""
    if os.path.exists(spec) or spec.startswith((".", "/", "~")) or "\\" in spec:
        return True
    return len(spec.split("/")) != 2


def check_paths(cfg: TrainConfig, need_validation: bool = True) -> None:
    """Raise :class:`ConfigError` naming the config key of every missing input."""
    problems = []
    for name in cfg.active_sources():
        source = getattr(cfg.data, name)
        if not source.root or not os.path.exists(source.root):
            problems.append(f"data.{name}.root: {source.root!r} does not exist")
        if (source.split or name != "folder") and not os.path.isfile(source.split):  # folder: may discover
            problems.append(f"data.{name}.split: {source.split!r} is not a file")
        elif not source.split and cfg.data.cache_dir:
            problems.append(f"data.{name}.split: the latent cache needs a split list (apdepth.data.folder.write_split)")
    base = cfg.model.base
    if _looks_local(base) or cfg.model.local_files_only:
        if os.path.isdir(base):
            if not (Path(base) / "unet" / "config.json").is_file() or not (Path(base) / "vae").is_dir():
                problems.append(f"model.base: {base} has no unet/config.json or vae/: not a Stable Diffusion "
                                "(or ApDepth) folder")
        elif _looks_local(base):
            problems.append(f"model.base: folder {base!r} does not exist")
    prior = cfg.model.prior
    if prior.endswith((".pth", ".pt")) and _looks_local(prior) and not os.path.isfile(prior):
        problems.append(f"model.prior: {prior!r} does not exist")
    if cfg.stage == 1 and cfg.stage1.encoder_source and _looks_local(cfg.stage1.encoder_source) \
            and not os.path.isdir(cfg.stage1.encoder_source):
        problems.append(f"stage1.encoder_source: folder {cfg.stage1.encoder_source!r} does not exist")
    v = cfg.validation
    if need_validation and v.every > 0:
        if not v.root or not os.path.exists(v.root):
            problems.append(f"validation.root: {v.root!r} does not exist")
        if not v.split or not os.path.isfile(v.split):
            problems.append(f"validation.split: {v.split!r} is not a file")
    if problems:
        raise ConfigError("The config names inputs that are not there:\n  " + "\n  ".join(problems))


def check_resume(cfg: TrainConfig, saved_config: dict, trainer_state: dict, folder) -> None:
    """The checkpoint must come from the same stage and an equivalent config."""
    if trainer_state.get("stage") != cfg.stage:
        raise ConfigError(f"{folder}: a stage-{trainer_state.get('stage')} checkpoint cannot resume a stage-"
                         f"{cfg.stage} run")
    diff = [k for k in config_differences(saved_config, cfg.to_dict())
            if k not in RESUMABLE_KEYS and not k.startswith("validation.")]
    if diff:
        raise ConfigError(f"{folder}: the checkpoint was trained with other settings ({', '.join(diff)}); resume with "
                         "the same config, or start a new run in another run.output_dir")
    if trainer_state.get("step", 0) >= cfg.max_steps:
        logger.warning("%s is at step %d, not before max_steps=%d: nothing left to train", folder,
                       trainer_state.get("step"), cfg.max_steps)


def build_datasets(cfg: TrainConfig) -> tuple[list[str], list[float], TrainingView]:
    """The active training sets (config order), their shares and the training view over them."""
    names, probs, datasets = [], [], []
    for name, prob in cfg.active_sources().items():
        source = getattr(cfg.data, name)
        try:
            datasets.append(get_dataset(name, source.root, source.split, missing=cfg.data.missing))
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.{name}: {e}") from e
        names.append(name)
        probs.append(prob)
        logger.info("Training set %s: %d samples, share %.3f", name, len(datasets[-1]), prob)
    view = TrainingView(datasets, quantiles=tuple(cfg.data.quantiles), min_valid_pixels=cfg.data.min_valid_pixels)
    return names, probs, view


def _base_prior(base: str) -> dict | None:
    index = Path(base) / "model_index.json"
    if index.is_file():
        with open(index) as f:
            return json.load(f)
    return None


def build_pipeline(cfg: TrainConfig) -> ApDepthPipeline:
    """The model to train: SD2 (``conv_in`` widened) or a stage-1 output, with the configured prior; the VAE,
    text encoder and prior frozen."""
    m = cfg.model
    use_prior = m.prior.lower() != "none"
    saved = _base_prior(m.base)
    if saved is not None and saved.get("_class_name") == ApDepthPipeline.__name__:
        if saved.get("use_prior", True) != use_prior:
            logger.warning("%s was trained %s a prior but this run uses %s", m.base,
                           "with" if saved.get("use_prior", True) else "without", m.prior)
        elif use_prior and saved.get("prior_name") not in (None, m.prior):
            logger.warning("%s was trained with prior %s; this run uses %s", m.base, saved.get("prior_name"), m.prior)
    try:
        pipe = ApDepthPipeline.from_stable_diffusion(
            m.base, prior=m.prior if use_prior else None, prior_preprocessing=m.prior_preprocessing,
            local_files_only=m.local_files_only,
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot build the model from model.base={m.base!r}, model.prior={m.prior!r}: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    for frozen in (pipe.vae, pipe.text_encoder, pipe.prior):  # only the UNet (and stage 1's adapter) train
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    return pipe


def build_stage(cfg: TrainConfig, pipe: ApDepthPipeline) -> Stage1 | Stage2:
    if cfg.stage == 2:
        return Stage2(cfg.stage2, pipe.vae)
    s1 = cfg.stage1
    encoder = adapter = None
    if s1.encoder == "prior":
        encoder = DINOv2Encoder.from_backbone(pipe.prior.model.backbone, s1.encoder_resolution)
    elif s1.encoder != "none":
        try:
            encoder = load_external_encoder(s1.encoder, s1.encoder_source, s1.encoder_resolution,
                                            local_files_only=cfg.model.local_files_only)
        except (OSError, ValueError) as e:
            raise ConfigError(f"stage1.encoder={s1.encoder!r}: {e}") from e
    if encoder is not None:
        torch.manual_seed(cfg.run.seed)  # the adapter's initial weights
        adapter = build_adapter(s1.adapter, pipe.unet.config.block_out_channels[-1], encoder.out_channels,
                                s1.adapter_hidden, s1.adapter_groups)
    return Stage1(s1, encoder, adapter)
