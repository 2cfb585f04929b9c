"""Turn a :class:`~.config.TrainConfig` into data, model, stage and accelerator, failing fast on bad paths.

Everything here runs before the first step: a missing data set, a wrong path, or a checkpoint that
does not fit the config stops the run within seconds with a message naming the config key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch

from ..data import get_dataset
from ..data.training import TrainingView
from ..modules import DINOv2Encoder, build_adapter, load_external_encoder
from ..pipeline import ApDepthPipeline
from .checkpoint import find_latest, read_trainer_state, resolve_checkpoint
from .config import ConfigError, FolderSourceConfig, LoraConfig, TrainConfig, config_differences
from .stage import TrainingStage
from .stage1 import Stage1
from .stage2 import Stage2

EMBEDDED = "embedded"  # model.init_from: the demo model inside the package

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


def _is_prior_size(encoder: str, spec: str) -> bool:
    """A Depth Anything V2 size name (``giant``, ``vitl`` ...) given to ``stage1.encoder=prior``."""
    from ..priors.variants import get_variant

    if encoder != "prior":
        return False
    try:
        get_variant(spec)
    except (KeyError, ValueError):
        return False
    return True


def check_paths(cfg: TrainConfig, need_validation: bool = True) -> None:
    """Raise :class:`ConfigError` naming the config key of every missing input (all of them at once)."""
    problems = [*_data_problems(cfg), *_model_problems(cfg), *_encoder_problems(cfg)]
    if need_validation:
        problems += _validation_problems(cfg)
    if problems:
        raise ConfigError("The config names inputs that are not there:\n  " + "\n  ".join(problems))


def _data_problems(cfg: TrainConfig) -> list[str]:
    """``data.<set>.root`` and ``data.<set>.split`` of every training set with a share."""
    problems = []
    for name in cfg.active_sources():
        source = getattr(cfg.data, name)
        if not source.root or not os.path.exists(source.root):
            problems.append(f"data.{name}.root: {source.root!r} does not exist")
        if name == "folder" and not source.split:  # every image under rgb/ (the latent cache needs a list)
            if cfg.data.cache_dir:
                problems.append("data.folder.split: the latent cache (data.cache_dir) needs a split list "
                                "(apdepth.data.folder.write_split)")
        elif not source.split or not os.path.isfile(source.split):
            problems.append(f"data.{name}.split: {source.split!r} is not a file")
    return problems


def _is_pipeline_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() and (path / "unet" / "config.json").is_file()


def _model_problems(cfg: TrainConfig) -> list[str]:
    """``model.init_from`` (or ``model.base``) and a ``.pth`` ``model.prior``; hub ids are checked on loading."""
    m = cfg.model
    problems = []
    local = m.local_files_only
    if m.init_from is not None:
        if m.init_from != EMBEDDED and (_looks_local(m.init_from) or local) and not _is_pipeline_folder(Path(m.init_from)):
            problems.append(f"model.init_from: {m.init_from!r} is not an ApDepth pipeline folder (model_index.json, "
                            "unet/)")
    elif os.path.isdir(m.base) and (_looks_local(m.base) or local):
        if not (Path(m.base) / "unet" / "config.json").is_file() or not (Path(m.base) / "vae").is_dir():
            problems.append(f"model.base: {m.base} has no unet/config.json or vae/: not a Stable Diffusion "
                            "(or ApDepth) folder")
    elif _looks_local(m.base):
        problems.append(f"model.base: folder {m.base!r} does not exist")
    if m.prior.endswith((".pth", ".pt")) and _looks_local(m.prior) and not os.path.isfile(m.prior):
        problems.append(f"model.prior: {m.prior!r} does not exist")
    return problems


def _encoder_problems(cfg: TrainConfig) -> list[str]:
    """Stage 1's ``stage1.encoder_source`` when it is a local file or folder."""
    source = cfg.stage1.encoder_source
    if cfg.stage != 1 or not source or not _looks_local(source) or _is_prior_size(cfg.stage1.encoder, source):
        return []
    if source.endswith((".pth", ".pt")) and cfg.stage1.encoder == "prior":
        return [] if os.path.isfile(source) else [f"stage1.encoder_source: {source!r} does not exist"]
    return [] if os.path.isdir(source) else [f"stage1.encoder_source: folder {source!r} does not exist"]


def _validation_problems(cfg: TrainConfig) -> list[str]:
    v = cfg.validation
    problems = []
    if v.every > 0:
        if not v.root or not os.path.exists(v.root):
            problems.append(f"validation.root: {v.root!r} does not exist")
        if not v.split or not os.path.isfile(v.split):
            problems.append(f"validation.split: {v.split!r} is not a file")
    return problems


# Keys added after checkpoints were first written, with the behaviour those checkpoints trained with.
ADDED_KEYS = {
    ("data", "low_valid"): "clear", ("data", "hypersim", "resize"): "native", ("data", "vkitti", "resize"): "native",
    ("stage1", "encoder_input"): "paper", ("stage2", "freq_mean"): "valid", ("optim", "warmup_from_zero"): False,
    ("model", "init_from"): None, ("lora",): dataclasses.asdict(LoraConfig()),
    ("data", "folder"): dataclasses.asdict(FolderSourceConfig()),
}


def _with_added_keys(saved: dict) -> dict:
    """A saved resolved config with the keys it predates filled in as the run behaved then."""
    import copy

    saved = copy.deepcopy(saved)
    for path, value in ADDED_KEYS.items():
        node = saved
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] not in node:
            node[path[-1]] = value
    return saved


def check_resume(cfg: TrainConfig, saved_config: dict, trainer_state: dict, folder) -> None:
    """The checkpoint must come from the same stage and an equivalent config."""
    if trainer_state.get("stage") != cfg.stage:
        raise ConfigError(f"{folder}: a stage-{trainer_state.get('stage')} checkpoint cannot resume a stage-"
                         f"{cfg.stage} run")
    diff = [k for k in config_differences(_with_added_keys(saved_config), cfg.to_dict())
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
        extra = {"resize": source.resize} if name == "hypersim" else {}
        if name == "folder":
            extra = {"resize": source.resize, "depth_scale": source.depth_scale, "depth_kind": source.depth_kind,
                     "min_depth": source.min_depth, "max_depth": source.max_depth}
        try:
            datasets.append(get_dataset(name, source.root, source.split, missing=cfg.data.missing, **extra))
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.{name}: {e}") from e
        names.append(name)
        probs.append(prob)
        logger.info("Training set %s: %d samples, share %.3f", name, len(datasets[-1]), prob)
    view = TrainingView(datasets, quantiles=tuple(cfg.data.quantiles), min_valid_pixels=cfg.data.min_valid_pixels,
                        low_valid=cfg.data.low_valid, seed=cfg.run.seed)
    return names, probs, view


def _base_prior(base: str) -> dict | None:
    index = Path(base) / "model_index.json"
    if index.is_file():
        with open(index) as f:
            return json.load(f)
    return None


def _pipeline_index(spec: str, local_files_only: bool) -> dict | None:
    """``model_index.json`` of a pipeline folder or hub id (None when it cannot be read)."""
    if os.path.isdir(spec):
        return _base_prior(spec)
    try:
        return dict(ApDepthPipeline.load_config(spec, local_files_only=local_files_only))
    except (OSError, ValueError) as e:
        logger.debug("model_index.json of %s not readable before loading (%s)", spec, e)
        return None


def init_pipeline(cfg: TrainConfig) -> ApDepthPipeline:
    """``model.init_from``: a saved ApDepth pipeline (folder, hub id, or ``embedded``) with its own prior; the
    prior from ``model.prior`` only where the checkpoint records none (the authors' release)."""
    m = cfg.model
    spec = m.init_from
    if spec == EMBEDDED:
        from ..embedded import embedded_model_path

        spec = str(embedded_model_path())
    index = _pipeline_index(spec, m.local_files_only)
    saved_prior = (index or {}).get("prior")
    records_prior = index is None or saved_prior not in (None, [None, None]) or index.get("prior_name") is not None
    prior = None if records_prior or not index.get("use_prior", True) else m.prior
    try:
        pipe = ApDepthPipeline.from_pretrained(spec, prior=prior, local_files_only=m.local_files_only,
                                               dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load model.init_from={m.init_from!r}: {e}") from e
    logger.info("Fine-tuning from %s (prior: %s, %s preprocessing); model.base is not used", m.init_from,
                pipe.config.prior_name if pipe.prior is not None else "none", pipe.config.prior_preprocessing)
    return pipe


def build_pipeline(cfg: TrainConfig) -> ApDepthPipeline:
    """The model to train: SD2 (``conv_in`` widened) or a stage-1 output, with the configured prior, or the
    pipeline of ``model.init_from``; the VAE, text encoder and prior frozen; LoRA adapters with ``lora.rank``."""
    m = cfg.model
    if m.init_from is not None:
        return _finish(cfg, init_pipeline(cfg))
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
    return _finish(cfg, pipe)


def _finish(cfg: TrainConfig, pipe: ApDepthPipeline) -> ApDepthPipeline:
    pipe.set_progress_bar_config(disable=True)
    for frozen in (pipe.vae, pipe.text_encoder, pipe.prior):  # only the UNet (and stage 1's adapter) train
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    if cfg.lora.rank > 0:
        from .lora import apply_lora

        apply_lora(pipe.unet, cfg.lora)
    return pipe


def prior_encoder(cfg: TrainConfig, pipe: ApDepthPipeline) -> DINOv2Encoder:
    """``stage1.encoder=prior``: the DINOv2 inside a Depth Anything V2 checkpoint, the release's encoder.

    ``stage1.encoder_source`` names that checkpoint (a DA2 ``.pth``, folder or size name; the release
    takes ``depth_anything_v2_vitg.pth``); without it the prior's own backbone is used. The log line
    names the backbone, and says so when it is not the release's ViT-G.
    """
    from ..priors import load_prior
    from ..priors.variants import variant_for_width

    s1 = cfg.stage1
    if s1.encoder_source and os.fspath(s1.encoder_source) == os.fspath(cfg.model.prior) and pipe.prior is not None:
        prior, origin = pipe.prior, f"the Depth Anything V2 checkpoint {s1.encoder_source} (the prior's own)"
    elif s1.encoder_source:
        try:
            prior = load_prior(s1.encoder_source, local_files_only=cfg.model.local_files_only)
        except (OSError, ValueError) as e:
            raise ConfigError(f"stage1.encoder_source={s1.encoder_source!r}: {e}") from e
        origin = f"the Depth Anything V2 checkpoint {s1.encoder_source}"
    else:
        prior, origin = pipe.prior, f"the prior model.prior={cfg.model.prior!r} (no stage1.encoder_source given)"
    backbone = prior.model.backbone
    width = int(backbone.config.hidden_size)
    try:
        size = variant_for_width(width).encoder
    except ValueError:
        size = f"a custom ViT of width {width}"
    encoder = DINOv2Encoder.from_backbone(backbone, s1.encoder_resolution, input_mode=s1.encoder_input)
    if size == "vitg":
        logger.info("Stage-1 external encoder: the DINOv2 ViT-G of %s (the release's encoder), %s input", origin,
                    s1.encoder_input)
    else:
        logger.info("Stage-1 external encoder: the DINOv2 %s of %s, %s input. The release aligns with ViT-G "
                    "(depth_anything_v2_vitg.pth, not public); this run falls back to %s. Give the ViT-G .pth as "
                    "stage1.encoder_source to use it.", size, origin, s1.encoder_input, size)
    return encoder


def _build_stage1(cfg: TrainConfig, pipe: ApDepthPipeline) -> Stage1:
    s1 = cfg.stage1
    encoder = adapter = None
    if s1.encoder == "prior":
        encoder = prior_encoder(cfg, pipe)
    elif s1.encoder != "none":
        try:
            encoder = load_external_encoder(s1.encoder, s1.encoder_source, s1.encoder_resolution,
                                            local_files_only=cfg.model.local_files_only,
                                            input_mode=s1.encoder_input)
        except (OSError, ValueError) as e:
            raise ConfigError(f"stage1.encoder={s1.encoder!r}: {e}") from e
    if encoder is not None:
        torch.manual_seed(cfg.run.seed)  # the adapter's initial weights
        adapter = build_adapter(s1.adapter, pipe.unet.config.block_out_channels[-1], encoder.out_channels,
                                s1.adapter_hidden, s1.adapter_groups)
    return Stage1(s1, encoder, adapter)


def _build_stage2(cfg: TrainConfig, pipe: ApDepthPipeline) -> Stage2:
    return Stage2(cfg.stage2, pipe.vae, pipe=pipe)


STAGES = {1: _build_stage1, 2: _build_stage2}  # cfg.stage -> the stage's builder


def build_stage(cfg: TrainConfig, pipe: ApDepthPipeline) -> TrainingStage:
    """The :class:`~.stage.TrainingStage` that ``cfg.stage`` names, with its own modules built."""
    return STAGES[cfg.stage](cfg, pipe)


# ---------------------------------------------------------------------------------------------- run start


def build_accelerator(cfg: TrainConfig):
    """accelerate's :class:`~accelerate.Accelerator` with ``run.mixed_precision`` (the launcher's flag loses);
    processes other than the main one log warnings only."""
    from accelerate import Accelerator

    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher_precision not in (None, cfg.run.mixed_precision):
        logger.warning("The launcher's mixed precision %r is ignored: the config's run.mixed_precision=%r applies "
                       "(set it in the config or as run.mixed_precision=...)", launcher_precision,
                       cfg.run.mixed_precision)
    accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision)
    if not accelerator.is_main_process:
        logging.getLogger("apdepth").setLevel(logging.WARNING)
    return accelerator


def place_frozen(pipe: ApDepthPipeline, device: torch.device) -> None:
    """The frozen encoders a step runs (VAE, prior) onto the training device; the text encoder stays on the
    CPU (only its cached empty-prompt embedding is used)."""
    pipe.vae.to(device)
    if pipe.prior is not None:
        pipe.prior.to(device)


def resume_checkpoint(cfg: TrainConfig, resume: str | os.PathLike | bool | None) -> Path | None:
    """The checkpoint to resume from (checked against ``cfg``), or ``None`` for a new run, which must not
    write over another run's checkpoints. ``resume``: a checkpoint or run folder, or ``True`` for the latest
    checkpoint in ``run.output_dir``."""
    output_dir = Path(cfg.run.output_dir)
    if not resume:
        if find_latest(output_dir) is not None:
            raise ConfigError(f"{output_dir} already holds checkpoints; resume with --resume, or choose another "
                              "run.output_dir")
        return None
    try:
        folder = resolve_checkpoint(output_dir if resume is True else resume)
    except FileNotFoundError as e:
        raise ConfigError(f"--resume: {e}") from None
    import yaml

    saved = yaml.safe_load((folder / "config.yaml").read_text())
    check_resume(cfg, saved, read_trainer_state(folder), folder)
    return folder
