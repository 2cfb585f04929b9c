"""Training configuration: dataclasses with the paper's values as defaults (docs/reference.md sections 2-4).

A run is described by :class:`TrainConfig`. YAML files (the presets ship in ``apdepth/configs/`` and are
named without folder or suffix: ``stage2``, ``ablation/lambda_1.0``) hold only what differs from these
defaults, ``key=value`` overrides from the command line go on top (``stage2.freq_strength=1.0``,
``data.mix={hypersim: 1.0}``), and the resolved config (only the sections the run's stage reads) is
written next to every checkpoint. Unknown keys and ill-typed values are errors that name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..modules.adapter import ADAPTER_KINDS
from ..modules.encoders import ENCODER_KINDS

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the presets, shipped as package data
STAGE_STEPS = {1: 20_000, 2: 21_000}  # paper Sec. 4.1
TRAIN_SETS = ("hypersim", "vkitti", "folder")  # folder: your own RGB-D (apdepth.data.folder)
MIXED_PRECISION = ("no", "fp16", "bf16")
CONDITION_ORDERS = ("prior_rgb", "rgb_prior")
FREQ_SPACES = ("pixel", "latent")
FREQ_MEANS = ("valid", "batch")
ENCODER_INPUTS = ("paper", "release")
LOW_VALID = ("clear", "redraw")
CACHE_DTYPES = ("fp32", "fp16", "bf16")


class ConfigError(ValueError):
    """A config, path or checkpoint problem found before training starts (the CLI prints it and exits 2)."""


@dataclass
class ModelConfig:
    """Where the model starts and what it is conditioned on."""

    base: str = "stabilityai/stable-diffusion-2"  # SD2 (hub id or folder), or a stage-1 output folder
    # Fine-tuning: a saved ApDepth pipeline to start from (folder, hub id, or "embedded": the packaged demo
    # model) instead of model.base; its prior and prior preprocessing come with it (model.prior only fills in
    # for a checkpoint that records none, as the authors' release).
    init_from: str | None = None
    # Depth Anything V2 prior: small|base|large|giant, hub id, folder, .pth, or "none" (Table 2 "base").
    # The paper uses ViT-G (depth_anything_v2_vitg.pth, never released); ViT-L is the largest public one.
    prior: str = "large"
    prior_preprocessing: str = "compat"  # compat (the release) | normalized
    gradient_checkpointing: bool = False
    local_files_only: bool = False  # load models only from the local cache / folders


@dataclass
class DataSourceConfig:
    root: str = ""  # data folder or .tar
    split: str = ""  # split list
    # Hypersim only: "marigold" (768x1024 frames -> 480x640 as Marigold's loader), "native", or "HxW"
    resize: str = "native"


@dataclass
class FolderSourceConfig(DataSourceConfig):
    """Your own RGB-D folder (apdepth.data.folder): split "" uses every image under rgb/; resize native|HxW."""

    depth_scale: float | None = None  # integer files (16-bit PNG ...): depth = value x depth_scale (required for them)
    depth_kind: str = "depth"  # depth | disparity (proportional to 1/depth; 0 = invalid)
    min_depth: float = 0.0  # valid range after conversion (exclusive); null max_depth: no upper bound
    max_depth: float | None = None


@dataclass
class DataConfig:
    hypersim: DataSourceConfig = field(default_factory=lambda: DataSourceConfig(
        "data/hypersim/train", "data_split/hypersim/filename_list_train_filtered.txt", "marigold"))
    vkitti: DataSourceConfig = field(default_factory=lambda: DataSourceConfig(
        "data/vkitti/vkitti.tar", "data_split/vkitti/vkitti_train.txt"))
    folder: FolderSourceConfig = field(default_factory=FolderSourceConfig)
    mix: dict = field(default_factory=lambda: {"hypersim": 0.9, "vkitti": 0.1})  # per micro-batch
    batch_size: int = 2  # micro-batch per process; accumulation makes up optim.effective_batch
    num_workers: int = 4
    flip_prob: float = 0.5
    quantiles: list = field(default_factory=lambda: [0.02, 0.98])
    min_valid_pixels: int = 10
    low_valid: str = "clear"  # samples under min_valid_pixels: clear (mask emptied) | redraw (the release)
    missing: str = "error"  # split entries whose files are missing: error | skip
    cache_dir: str | None = None  # latent cache (`apdepth cache -c CONFIG` fills it)
    cache_dtype: str = "fp32"


@dataclass
class Stage1Config:
    """Feature alignment (paper Sec. 3.3). Release compat: ``latent_mse_weight=1``, ``condition_order=rgb_prior``,
    ``encoder=prior``."""

    encoder: str = "dinov2"  # dinov2 | prior (the DINOv2 inside the DA2 prior) | openclip | sam | none
    encoder_source: str | None = None  # hub id or folder; None: the kind's default
    encoder_resolution: int = 0  # input long edge; 0: the encoder's default
    # DINOv2 input: paper ([0,1] RGB, ImageNet norm, native size) | release ([-1,1] RGB, ImageNet norm, 0.875x)
    encoder_input: str = "paper"
    adapter: str = "conv"  # conv (Eq. 7-9) | mlp (Table 3)
    adapter_hidden: int | None = None  # None: the encoder's width
    adapter_groups: int = 32
    align_weight: float = 1.0
    latent_mse_weight: float = 0.0
    condition_order: str = "prior_rgb"


@dataclass
class Stage2Config:
    """Depth (paper Sec. 3.4). Release compat: ``freq_space=latent, freq_strength=1, freq_p=1, freq_weight=0.5``."""

    phase1_steps: int = 20_000  # optimizer steps 1..phase1_steps: latent MSE + pixel L1; afterwards FFT only
    latent_mse_weight: float = 1.0
    pixel_l1_weight: float = 1.0
    freq_space: str = "pixel"
    freq_strength: float = 0.6  # lambda of the radial high-pass weight (Eq. 17, Table 4)
    freq_p: int = 1
    freq_weight: float = 1.0  # lambda_freq (Eq. 13)
    freq_eps: float = 1e-8
    freq_mean: str = "valid"  # valid: samples without a valid cell left out of the mean | batch: the release
    # Phase 1's pixel L1 on a random crop of the predicted latent, "HxW" in pixels (multiples of 8), decoded
    # alone: the VAE decode (most of a step's cost) shrinks with the crop's area. null: the whole image (exact).
    l1_crop: str | None = None
    # Not in the paper (0 = the paper): each sample's prior map, with this probability, goes through a random
    # order-keeping degradation (monotone remap, blur, lower resolution) before it is encoded, so that the UNet
    # follows the prior's ordering on the coarse maps a prior gives outside its training domain (prior_degrade.py).
    prior_degrade: float = 0.0

    def l1_crop_size(self) -> tuple[int, int] | None:
        """``l1_crop`` as ``(H, W)`` in pixels, or ``None``; a malformed value raises :class:`ConfigError`."""
        if self.l1_crop is None:
            return None
        try:
            h, w = (int(v) for v in str(self.l1_crop).lower().split("x"))
        except ValueError:
            raise ConfigError(f"stage2.l1_crop must be 'HxW' in pixels such as 240x320, or null; "
                              f"got {self.l1_crop!r}") from None
        if h <= 0 or w <= 0 or h % 8 or w % 8:
            raise ConfigError(f"stage2.l1_crop {self.l1_crop!r}: height and width must be positive multiples of 8 "
                              "(the crop is taken from the latent, 1/8 of the image)")
        return h, w


@dataclass
class OptimConfig:
    lr: float = 3e-5
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    effective_batch: int = 32  # = batch_size x processes x accumulation
    max_steps: int | None = None  # None: 20,000 (stage 1) / 21,000 (stage 2)
    warmup_steps: int = 100
    warmup_from_zero: bool = False  # True: step n of the warm-up uses n / warmup_steps (the release: starts at 0)
    decay_steps: int = 25_000  # exponential decay to final_ratio x lr over this many steps after warm-up
    final_ratio: float = 0.01
    max_grad_norm: float | None = None
    ema: bool = False
    ema_decay: float = 0.999
    fused: bool = False  # torch's fused Adam kernel (same update, one kernel; CUDA and CPU)


@dataclass
class RunConfig:
    output_dir: str | None = None
    seed: int = 2024
    mixed_precision: str = "no"  # no | fp16 | bf16
    checkpoint_every: int = 250
    keep_checkpoints: int = 2  # most recent checkpoints kept (0: all)
    log_every: int = 10


@dataclass
class ValidationConfig:
    every: int = 0  # optimizer steps between validations; 0: off
    dataset: str = "nyu"
    root: str = ""
    split: str = ""
    max_samples: int = 16
    processing_resolution: int | None = None  # None: the data set's protocol default
    log_images: int = 4


@dataclass
class LoraConfig:
    """LoRA on the UNet (through peft; stage 2): only the low-rank adapters train, merged into the UNet on export."""

    rank: int = 0  # 0: off (every UNet weight trains)
    alpha: float | None = None  # scaling alpha / rank; null: alpha = rank
    dropout: float = 0.0
    # module name suffixes (peft's target_modules): attention projections and ResNet convolutions
    target_modules: list = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"])


@dataclass
class TrainConfig:
    stage: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    @property
    def max_steps(self) -> int:
        return self.optim.max_steps if self.optim.max_steps is not None else STAGE_STEPS[self.stage]

    @property
    def stage_config(self) -> Stage1Config | Stage2Config:
        return self.stage1 if self.stage == 1 else self.stage2

    def active_sources(self) -> dict[str, float]:
        """Training sets with a positive share, in :data:`TRAIN_SETS` order."""
        return {name: float(self.data.mix[name]) for name in TRAIN_SETS if self.data.mix.get(name, 0) > 0}

    def to_dict(self) -> dict:
        """The resolved config: every section the stage reads (the other stage's section left out)."""
        out = dataclasses.asdict(self)
        out.pop("stage2" if self.stage == 1 else "stage1")
        out["optim"]["max_steps"] = self.max_steps
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------- building


def _type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(tp) -> tuple[set[type], bool]:
    """Accepted Python types of an annotation, and whether None is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        kinds: set[type] = set()
        for a in args:
            if a is not type(None):
                kinds |= _allowed(a)[0]
        return kinds, type(None) in args
    if origin is not None:
        return {origin}, False
    return {tp}, False


def _coerce(value: Any, tp, key: str) -> Any:
    kinds, nullable = _allowed(tp)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"config key {key!r} cannot be null")
    if float in kinds and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if int in kinds and isinstance(value, float) and value.is_integer() and float not in kinds:
        return int(value)
    if list in kinds and isinstance(value, tuple):
        return list(value)
    if not any(isinstance(value, k) and not (k is int and isinstance(value, bool)) for k in kinds):
        names = " or ".join(sorted(k.__name__ for k in kinds)) + (" or null" if nullable else "")
        raise ConfigError(f"config key {key!r} must be {names}, got {value!r} ({type(value).__name__})")
    return value


def _update(obj, values: dict, prefix: str = "") -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {values!r}")
    hints = _type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = prefix + str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; allowed here: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], parsed value)``; the value is read as YAML (numbers, null, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e})") from e
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def packaged_config_names() -> list[str]:
    """Names of the presets shipped with apdepth (``stage1``, ``ablation/lambda_1.0``, ``demo/stage2``, ...)."""
    return sorted(p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix() for p in PACKAGED_CONFIGS.rglob("*.yaml"))


def resolve_config(name: str | os.PathLike) -> Path:
    """A config file: an existing path, else a packaged preset by name (``stage2``, ``ablation/lambda_1.0``).

    A path as the documentation writes it (``configs/stage2.yaml``, from a clone) also finds the packaged
    preset when no such file is in the working directory, so the commands work from an installed wheel.
    """
    path = Path(name)
    if path.is_file():
        return path
    key = path.as_posix().removesuffix(".yaml").removesuffix(".yml")
    for candidate in (key, key.removeprefix("configs/"), key.removeprefix("apdepth/configs/")):
        packaged = PACKAGED_CONFIGS / f"{candidate}.yaml"
        if candidate and not Path(candidate).is_absolute() and packaged.is_file():
            return packaged
    raise ConfigError(f"config {name} is neither a file nor a packaged preset; presets: "
                      f"{', '.join(packaged_config_names())}")


def load_yaml(path: str | os.PathLike) -> dict:
    path = resolve_config(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return data


def build_config(files: list[str | os.PathLike] | str | os.PathLike | None = None,
                 overrides: list[str] | None = None, base: dict | None = None) -> TrainConfig:
    """Defaults <- ``base`` (e.g. a checkpoint's resolved config) <- YAML ``files`` in order <- ``overrides``."""
    cfg = TrainConfig()
    layers: list[tuple[str, dict]] = []
    if base is not None:
        layers.append(("base config", base))
    if files is not None:
        for f in [files] if isinstance(files, (str, os.PathLike)) else files:
            layers.append((str(f), load_yaml(f)))
    for text in overrides or []:
        layers.append((f"override {text!r}", _nest(*parse_override(text))))
    for source, values in layers:
        try:
            _update(cfg, copy.deepcopy(values))
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    validate(cfg)
    unread = "stage2" if cfg.stage == 1 else "stage1"
    for source, values in layers:
        if source != "base config" and unread in values:
            raise ConfigError(f"{source} sets {unread}.* but a stage-{cfg.stage} run does not read it; leave it out "
                              "of this stage's command")
    return cfg


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {key!r} must be one of {tuple(allowed)}, got {value!r}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config key {key!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Value checks that need no file system (paths are checked when the run starts), section by section;
    the first problem raises :class:`ConfigError` naming its key."""
    _choice("stage", cfg.stage, (1, 2))
    _choice("model.prior_preprocessing", cfg.model.prior_preprocessing, ("compat", "normalized"))
    _validate_data(cfg)
    _validate_stage1(cfg)
    _validate_stage2(cfg.stage2)
    if cfg.stage2.prior_degrade > 0 and cfg.model.prior.lower() == "none":
        raise ConfigError("stage2.prior_degrade degrades the prior's maps; model.prior is 'none'")
    _validate_optim(cfg.optim)
    _validate_run(cfg.run, cfg.validation)
    _validate_lora(cfg)
    if cfg.model.init_from is not None and not str(cfg.model.init_from).strip():
        raise ConfigError("model.init_from is empty; give a folder, hub id or 'embedded' (or null for model.base)")


def _validate_data(cfg: TrainConfig) -> None:
    d = cfg.data
    _validate_mix(cfg)
    _positive("data.batch_size", d.batch_size)
    _positive("data.num_workers", d.num_workers, allow_zero=True)
    _positive("data.min_valid_pixels", d.min_valid_pixels, allow_zero=True)
    if not 0 <= d.flip_prob <= 1:
        raise ConfigError(f"data.flip_prob must be in [0, 1], got {d.flip_prob}")
    if len(d.quantiles) != 2 or not 0 <= d.quantiles[0] < d.quantiles[1] <= 1:
        raise ConfigError(f"data.quantiles must be [low, high] with 0 <= low < high <= 1, got {d.quantiles}")
    _choice("data.missing", d.missing, ("error", "skip"))
    _choice("data.low_valid", d.low_valid, LOW_VALID)
    for name in TRAIN_SETS:
        _validate_resize(name, getattr(d, name).resize)
    _validate_folder(d.folder)
    _choice("data.cache_dtype", d.cache_dtype, CACHE_DTYPES)


def _validate_mix(cfg: TrainConfig) -> None:
    mix = cfg.data.mix
    unknown = set(mix) - set(TRAIN_SETS)
    if unknown:
        raise ConfigError(f"data.mix names unknown training sets {sorted(unknown)}; allowed: {TRAIN_SETS}")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in mix.values()):
        raise ConfigError(f"data.mix values must be numbers >= 0, got {mix}")
    if not cfg.active_sources():
        raise ConfigError(f"data.mix gives no training set a positive share: {mix}")


def _validate_resize(name: str, spec: str) -> None:
    from ..data.hypersim import parse_resize

    if name == "vkitti" and spec != "native":
        raise ConfigError(f"data.{name}.resize must be 'native' (only Hypersim and folder frames are resized), "
                          f"got {spec!r}")
    if name == "folder" and spec == "marigold":
        raise ConfigError("data.folder.resize must be 'native' or 'HxW' (e.g. '480x640'), got 'marigold'")
    try:
        parse_resize(spec)
    except ValueError as e:
        raise ConfigError(f"data.{name}.resize: {e}") from None


def _validate_folder(f: FolderSourceConfig) -> None:
    _choice("data.folder.depth_kind", f.depth_kind, ("depth", "disparity"))
    if f.depth_scale is not None:
        _positive("data.folder.depth_scale", f.depth_scale)
    _positive("data.folder.min_depth", f.min_depth, allow_zero=True)
    if f.max_depth is not None and f.max_depth <= f.min_depth:
        raise ConfigError(f"data.folder.max_depth must be > data.folder.min_depth, got {f.max_depth} <= {f.min_depth}")


def _validate_stage1(cfg: TrainConfig) -> None:
    """``stage1.*`` values always; whether they make a stage 1 only in a stage-1 run."""
    s1 = cfg.stage1
    _choice("stage1.encoder", s1.encoder, ENCODER_KINDS)
    _choice("stage1.adapter", s1.adapter, ADAPTER_KINDS)
    _choice("stage1.condition_order", s1.condition_order, CONDITION_ORDERS)
    _choice("stage1.encoder_input", s1.encoder_input, ENCODER_INPUTS)
    if cfg.stage == 1 and s1.encoder_input == "release":
        if s1.encoder not in ("dinov2", "prior"):
            raise ConfigError(f"stage1.encoder_input=release is the release's DINOv2 input; stage1.encoder="
                              f"{s1.encoder!r} is not a DINOv2")
        if s1.encoder_resolution:
            raise ConfigError("stage1.encoder_input=release fixes the DINOv2 input at 0.875x the image; leave "
                              "stage1.encoder_resolution at 0")
    _positive("stage1.encoder_resolution", s1.encoder_resolution, allow_zero=True)
    _positive("stage1.align_weight", s1.align_weight, allow_zero=True)
    _positive("stage1.latent_mse_weight", s1.latent_mse_weight, allow_zero=True)
    if cfg.stage == 1:
        _validate_stage1_losses(cfg)


def _validate_stage1_losses(cfg: TrainConfig) -> None:
    s1 = cfg.stage1
    if s1.encoder == "none" and s1.latent_mse_weight == 0:
        raise ConfigError("stage1.encoder=none leaves stage 1 without a loss. Table 5's 'w/o Ext.' baseline "
                          "skips stage 1: train stage 2 from SD2 (-c ablation/encoder_none).")
    if s1.encoder != "none" and s1.align_weight == 0:
        raise ConfigError("stage1.align_weight is 0 with an external encoder: the adapter would get no gradient; "
                          "use stage1.encoder=none instead")
    if s1.encoder == "prior" and cfg.model.prior.lower() == "none":
        raise ConfigError("stage1.encoder=prior needs a prior (model.prior is 'none')")


def _validate_stage2(s2: Stage2Config) -> None:
    _choice("stage2.freq_space", s2.freq_space, FREQ_SPACES)
    _choice("stage2.freq_p", s2.freq_p, (1, 2))
    _choice("stage2.freq_mean", s2.freq_mean, FREQ_MEANS)
    _positive("stage2.phase1_steps", s2.phase1_steps, allow_zero=True)
    for key in ("latent_mse_weight", "pixel_l1_weight", "freq_strength", "freq_weight"):
        _positive(f"stage2.{key}", getattr(s2, key), allow_zero=True)
    s2.l1_crop_size()
    if not 0 <= s2.prior_degrade <= 1:
        raise ConfigError(f"stage2.prior_degrade is a probability in [0, 1]; got {s2.prior_degrade!r}")


def _validate_optim(o: OptimConfig) -> None:
    _positive("optim.lr", o.lr)
    _positive("optim.effective_batch", o.effective_batch)
    if o.max_steps is not None:
        _positive("optim.max_steps", o.max_steps)
    _positive("optim.warmup_steps", o.warmup_steps, allow_zero=True)
    _positive("optim.decay_steps", o.decay_steps)
    if not 0 < o.final_ratio <= 1:
        raise ConfigError(f"optim.final_ratio must be in (0, 1], got {o.final_ratio}")
    if len(o.betas) != 2:
        raise ConfigError(f"optim.betas must be [beta1, beta2], got {o.betas}")
    if not 0 < o.ema_decay < 1:
        raise ConfigError(f"optim.ema_decay must be in (0, 1), got {o.ema_decay}")


def _validate_run(r: RunConfig, v: ValidationConfig) -> None:
    _choice("run.mixed_precision", r.mixed_precision, MIXED_PRECISION)
    _positive("run.checkpoint_every", r.checkpoint_every)
    _positive("run.keep_checkpoints", r.keep_checkpoints, allow_zero=True)
    _positive("run.log_every", r.log_every)
    _positive("validation.every", v.every, allow_zero=True)
    _positive("validation.max_samples", v.max_samples)


def _validate_lora(cfg: TrainConfig) -> None:
    lo = cfg.lora
    _positive("lora.rank", lo.rank, allow_zero=True)
    _positive("lora.dropout", lo.dropout, allow_zero=True)
    if lo.alpha is not None:
        _positive("lora.alpha", lo.alpha)
    if lo.rank > 0:
        if cfg.stage != 2:
            raise ConfigError("lora.rank > 0 is for stage-2 fine-tuning; stage 1 trains the whole UNet (lora.rank=0)")
        if not lo.target_modules or not all(isinstance(t, str) and t for t in lo.target_modules):
            raise ConfigError(f"lora.target_modules must be a non-empty list of module names, got {lo.target_modules}")


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key != "mix":
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out
