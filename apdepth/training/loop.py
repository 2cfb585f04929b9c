"""The one training loop, shared by both stages (a stage is a :class:`~.stage.TrainingStage`).

It owns devices and processes (accelerate: one or many GPUs, one or many nodes, bf16/fp16 autocast),
gradient accumulation to ``optim.effective_batch``, Adam with the learning-rate schedule
(:class:`~.schedule.LRSchedule`: warm-up, then exponential decay), optional EMA, TensorBoard logs of
every loss term, the learning rate and the throughput, periodic validation, atomic checkpoints every
``run.checkpoint_every`` optimizer steps and exact resumption from them, and the export of the trained
model (``<output_dir>/final``: an ApDepth pipeline folder, plus what the stage adds, e.g. ``adapter/``).

Read :func:`train` first: it is the whole run; :class:`Trainer` holds the state between steps.
The latent cache is built by its own entry point, :func:`~.cache.cache_latents`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..io import atomic_open
from .build import (
    build_accelerator,
    build_datasets,
    build_pipeline,
    build_stage,
    check_paths,
    place_frozen,
    resume_checkpoint,
)
from .cache import cache_latents, open_cached_view
from .checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, build_config
from .inputs import TrainModule, encode_inputs
from .schedule import LRSchedule

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None, *,
          on_step: Callable[[int, dict], None] | None = None) -> Path:
    """Run (or resume) a training run; returns the exported model folder (``<run.output_dir>/final``).

    Args:
        cfg: the resolved config.
        resume: a checkpoint folder, a run folder (its latest checkpoint), or ``True`` for the latest
            checkpoint in ``run.output_dir``.
        on_step: called after every optimizer step with ``(step, logged values)`` (monitoring, tests).
    """
    resume_from = check_start(cfg, resume)  # everything that can fail before a model loads
    trainer = Trainer(cfg, resume_from)
    while trainer.step < cfg.max_steps:
        trainer.train_step()
        step = trainer.step
        logged = trainer.log() if step % cfg.run.log_every == 0 or step == cfg.max_steps else {}
        if cfg.validation.every > 0 and step % cfg.validation.every == 0:
            logged.update(trainer.validate())
        if step % cfg.run.checkpoint_every == 0 or step == cfg.max_steps:
            trainer.checkpoint()
        if on_step is not None:
            on_step(step, logged)
    return trainer.finish()


def check_start(cfg: TrainConfig, resume) -> Path | None:
    """Fail fast: ``run.output_dir``, TensorBoard, the checkpoint to resume (or none in the way) and every
    input path. Returns the checkpoint to resume from."""
    if not cfg.run.output_dir:
        raise ConfigError("run.output_dir is not set: give it in the config or as run.output_dir=...")
    _summary_writer_class()
    resume_from = resume_checkpoint(cfg, resume)
    check_paths(cfg)
    return resume_from


def accumulation_steps(effective_batch: int, batch_size: int, processes: int) -> int:
    per_step = batch_size * processes
    if effective_batch % per_step:
        raise ConfigError(f"optim.effective_batch={effective_batch} is not a multiple of data.batch_size={batch_size} "
                          f"x {processes} processes; change one of them")
    return effective_batch // per_step


class Trainer:
    """A run between optimizer steps: model, optimizer, data stream, logs; ``step`` optimizer steps done.

    Built in the order the random state sees it (seed, data, validation set, model, stage with its
    adapter, optimizer, EMA, then the resumed state), so a run and its resumption draw the same numbers.
    """

    def __init__(self, cfg: TrainConfig, resume_from: Path | None = None):
        from accelerate.utils import set_seed

        self.cfg, self.output_dir = cfg, Path(cfg.run.output_dir)
        self.accelerator = accelerator = build_accelerator(cfg)
        self.world, self.rank, self.device = accelerator.num_processes, accelerator.process_index, accelerator.device
        self.accum = accumulation_steps(cfg.optim.effective_batch, cfg.data.batch_size, self.world)
        set_seed(cfg.run.seed)
        names, probs, view = build_datasets(cfg)
        sizes = view.sizes()
        self.validator = self._validator()
        self.pipe = build_pipeline(cfg)
        self.pipe.empty_text_embedding(torch.device("cpu"), torch.float32)  # cached for every UNet call
        place_frozen(self.pipe, self.device)
        if cfg.data.cache_dir:
            view = open_cached_view(cfg, self.pipe, names, view)
        self.stage = build_stage(cfg, self.pipe)
        self.module = self._trainable_module()
        self.modules = {"unet": self.module.unet, **self.stage.trainable_modules()}  # checkpointed by name
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer, self.scheduler, self.model, self.ema = self._optimizer()
        self.step, self.consumed = self._resume(resume_from) if resume_from is not None else (0, 0)
        self.batches = self._batches(view, sizes, probs, self.consumed)
        self.config_yaml = cfg.to_yaml()
        self.writer = self._writer()
        self.window = LossWindow(self.device)
        logger.info("Stage %d: %d optimizer steps of %d samples (%d per micro-batch x %d processes x %d "
                    "accumulation), from step %d", cfg.stage, cfg.max_steps, cfg.optim.effective_batch,
                    cfg.data.batch_size, self.world, self.accum, self.step)

    # ------------------------------------------------------------------ building
    def _validator(self):
        if self.cfg.validation.every <= 0 or not self.accelerator.is_main_process:
            return None  # the main process validates, the others wait
        from .validation import Validator

        return Validator(self.cfg.validation)

    def _trainable_module(self) -> TrainModule:
        """The UNet and the stage's own trained modules as one module; the stage's frozen modules on the device."""
        self.stage.prepare_unet(self.pipe.unet)
        if self.cfg.model.gradient_checkpointing:
            self.pipe.unet.enable_gradient_checkpointing()
            self.pipe.vae.enable_gradient_checkpointing()  # the decoder the pixel losses backpropagate through
        for frozen in self.stage.frozen_modules().values():
            frozen.to(self.device)
        return TrainModule(self.pipe, **self.stage.trainable_modules()).train()

    def _optimizer(self):
        """Adam, the learning-rate schedule, the accelerate-wrapped model and the optional EMA."""
        o = self.cfg.optim
        optimizer = torch.optim.Adam(self.params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                     fused=o.fused or None)
        scheduler = LRSchedule.from_config(o).scheduler(optimizer)
        model, optimizer = self.accelerator.prepare(self.module, optimizer)
        ema = None
        if o.ema:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(self.params, decay=o.ema_decay)
            ema.to(self.device)
        return optimizer, scheduler, model, ema

    def _resume(self, folder: Path) -> tuple[int, int]:
        """Restore a checkpoint; returns (optimizer steps done, micro-batches consumed by all processes)."""
        try:
            state = load_checkpoint(folder, rank=self.rank, modules=self.modules, optimizer=self.optimizer,
                                    scheduler=self.scheduler, ema=self.ema)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"--resume {folder}: {e}") from e
        if state.get("world_size") != self.world:
            logger.warning("Resuming a %s-process run on %d processes: the data stream continues, the "
                           "accumulation becomes %d", state.get("world_size"), self.world, self.accum)
        logger.info("Resumed from %s at step %d", folder, int(state["step"]))
        return int(state["step"]), int(state["micro_batches"])

    def _batches(self, view, sizes: list[int], probs: list[float], consumed: int) -> Iterator[dict]:
        """The endless micro-batch stream of this process, from the ``consumed``-th micro-batch on."""
        from ..data.training import MixedBatchSampler

        d = self.cfg.data
        sampler = MixedBatchSampler(sizes, probs, d.batch_size, self.cfg.run.seed, d.flip_prob, start=consumed,
                                    rank=self.rank, world_size=self.world)
        loader = DataLoader(view, batch_sampler=sampler, num_workers=d.num_workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=d.num_workers > 0)
        return iter(loader)

    def _writer(self):
        """The main process's TensorBoard writer (and ``<output_dir>/config.yaml``); ``None`` elsewhere."""
        if not self.accelerator.is_main_process:
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        _write_text(self.output_dir / "config.yaml", self.config_yaml)
        return _summary_writer_class()(str(self.output_dir / "tensorboard"),
                                       purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------------ one optimizer step
    def train_step(self) -> None:
        """Optimizer step ``step + 1``: ``accum`` micro-batches (gradients synchronised between processes on
        the last one only), gradient clipping, Adam, the schedule, EMA."""
        step = self.step + 1
        terms: set[str] = set()
        for micro in range(self.accum):
            inputs = encode_inputs(self.pipe, next(self.batches), self.stage.needs_depth_latent)
            with torch.no_grad():
                inputs = self.stage.prepare_inputs(inputs)
            sync = micro == self.accum - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                with self.accelerator.autocast():
                    out = self.stage.losses(self.model, inputs, step)
                _check_finite(out, step)
                self.accelerator.backward(out["loss"] / self.accum)
            self.window.add(out, self.accum)
            terms.update(out)
        self.consumed += self.accum * self.world
        if self.cfg.optim.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        self.step = step
        self.window.step_done(terms)

    # ------------------------------------------------------------------ logs, validation, checkpoints
    def log(self) -> dict[str, float]:
        """Log the loss terms averaged since the last log (over all processes), lr, throughput, stage values."""
        logged = self.window.means(self.accelerator)
        logged["train/lr"] = self.scheduler.get_last_lr()[0]
        logged.update(self.window.throughput(self.cfg.optim.effective_batch))
        logged.update(self.stage.log_values(self.step))
        self._write_scalars(logged)
        logger.info("step %d/%d  %s", self.step, self.cfg.max_steps,
                    "  ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in logged.items()))
        self.window.reset()
        return logged

    def validate(self) -> dict[str, float]:
        """The main process evaluates the model (EMA weights with EMA) on the validation set; the others wait."""
        logged = {}
        if self.validator is not None:
            unwrapped = self.accelerator.unwrap_model(self.module)
            unwrapped.eval()
            try:
                with _ema_weights(self.ema, self.params), self.accelerator.autocast():
                    metrics, images = self.validator(self.pipe)
            finally:
                unwrapped.train()
            logged = {f"val/{k}": v for k, v in metrics.items() if not math.isnan(v)}
            self._write_scalars(logged)
            if self.writer is not None:
                for i, image in enumerate(images):
                    self.writer.add_image(f"val/depth_{i}", image, self.step, dataformats="HWC")
            logger.info("validation at step %d: %s", self.step, "  ".join(f"{k}={v:.4f}" for k, v in logged.items()))
        self.accelerator.wait_for_everyone()
        return logged

    def _write_scalars(self, values: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, self.step)

    def checkpoint(self) -> Path:
        trainer_state = {"stage": self.cfg.stage, "step": self.step, "micro_batches": self.consumed,
                         "world_size": self.world, "accumulation": self.accum,
                         "effective_batch": self.cfg.optim.effective_batch}
        return save_checkpoint(self.output_dir, self.step, accelerator=self.accelerator, modules=self.modules,
                               optimizer=self.optimizer, scheduler=self.scheduler, trainer_state=trainer_state,
                               config_yaml=self.config_yaml, ema=self.ema, keep=self.cfg.run.keep_checkpoints)

    # ------------------------------------------------------------------ the end
    def finish(self) -> Path:
        """Close the logs, export the model, end the processes; returns the exported folder."""
        if self.writer is not None:
            self.writer.close()
        final = self.export(self.output_dir / "final")
        self.accelerator.end_training()
        return final

    def export(self, folder: Path) -> Path:
        """Save the trained model (EMA weights with EMA) as an ApDepth pipeline, then what the stage adds.
        LoRA runs write the adapter alone to ``<output_dir>/lora`` and merge it into the exported UNet."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            from .lora import has_lora, merge_lora, save_lora_adapter

            with _ema_weights(self.ema, self.params):
                self.accelerator.unwrap_model(self.module).remove_hook()
                if has_lora(self.pipe.unet):  # the adapter alone beside final/, then final/ with it merged
                    save_lora_adapter(self.pipe.unet, folder.parent / "lora")
                    merge_lora(self.pipe.unet)
                self.pipe.save_pretrained(folder)
                self.stage.export(folder)
                _write_text(folder / "training_config.yaml", self.config_yaml)
            logger.info("Exported the trained model to %s", folder)
        self.accelerator.wait_for_everyone()
        return folder


class LossWindow:
    """The loss terms since the last log line: sums per term (each step's micro-batches averaged), the
    number of steps each term appeared in, and the wall time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        self.counts: dict[str, int] = defaultdict(int)
        self.start, self.steps = time.perf_counter(), 0

    def add(self, out: dict[str, torch.Tensor], accum: int) -> None:
        """One micro-batch's terms, ``1 / accum`` of its optimizer step."""
        for k, v in out.items():
            self.sums[k] += v.detach().float() / accum

    def step_done(self, terms: set[str]) -> None:
        for k in terms:
            self.counts[k] += 1
        self.steps += 1

    def means(self, accelerator) -> dict[str, float]:
        """``train/<term>``: the mean over the window's steps that computed it, averaged over processes."""
        keys = sorted(self.sums)
        means = accelerator.reduce(torch.stack([self.sums[k] / max(self.counts[k], 1) for k in keys]), "mean")
        return {f"train/{k}": float(v) for k, v in zip(keys, means)}

    def throughput(self, samples_per_step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        return {"perf/seconds_per_step": elapsed / self.steps,
                "perf/samples_per_second": self.steps * samples_per_step / elapsed}


def _check_finite(out: dict[str, torch.Tensor], step: int) -> None:
    if not torch.isfinite(out["loss"]):
        raise FloatingPointError(f"step {step}: the loss is {float(out['loss'])} "
                                 f"({ {k: float(v) for k, v in out.items()} })")


@contextlib.contextmanager
def _ema_weights(ema, params: list[torch.nn.Parameter]):
    """The EMA weights in ``params`` inside the block (nothing without EMA); the trained ones after it."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def _summary_writer_class():
    """TensorBoard's writer: the logs need ``tensorboard``, an optional dependency (``apdepth[train]``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(f"training writes TensorBoard logs, and tensorboard cannot be imported ({e}); install "
                          "the training extra: pip install 'apdepth[train]'") from None
    return SummaryWriter


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def config_from_files(config_files: list[str], overrides: list[str], resume: str | bool | None = None) -> TrainConfig:
    """Configs + overrides; when resuming without a config, on top of the checkpoint's own config."""
    base = None
    if resume and not config_files:
        if resume is True:
            raise ConfigError("--resume without a path needs --config (to find run.output_dir)")
        import yaml

        try:
            base = yaml.safe_load((resolve_checkpoint(resume) / "config.yaml").read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"--resume: {e}") from None
    return build_config(config_files, overrides, base=base)


def train_from_files(config_files: list[str], overrides: list[str], resume: str | bool | None = None,
                     build_cache: bool = False) -> Path:
    """The CLI's entry: :func:`train` with configs + overrides (:func:`config_from_files`).

    ``build_cache=True`` (``apdepth train --build-cache``, kept for existing scripts) builds the latent cache
    instead, through its own entry point :func:`~.cache.cache_latents`, and returns its folder.
    """
    cfg = config_from_files(config_files, overrides, resume)
    if build_cache:
        return cache_latents(cfg)
    return train(cfg, resume=resume)
