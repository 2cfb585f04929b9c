"""The one training loop, shared by both stages (a stage only computes its losses).

It owns devices and processes (accelerate: one or many GPUs, one or many nodes, bf16/fp16 autocast),
gradient accumulation to ``optim.effective_batch``, Adam with warm-up and exponential decay, optional
EMA, TensorBoard logs of every loss term, the learning rate and the throughput, periodic validation,
atomic checkpoints every ``run.checkpoint_every`` optimizer steps and exact resumption from them, and
the export of the trained model (``<output_dir>/final``: an ApDepth pipeline folder; stage 1 adds
``adapter/``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..io import atomic_open
from ..pipeline import ApDepthPipeline
from .build import build_datasets, build_pipeline, build_stage, check_paths, check_resume
from .cache import CachedView, LatentCache, build_latent_cache, cache_fingerprint
from .checkpoint import find_latest, load_checkpoint, read_trainer_state, resolve_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, build_config
from .inputs import TrainModule, encode_inputs
from .schedule import LRSchedule

logger = logging.getLogger(__name__)


def accumulation_steps(effective_batch: int, batch_size: int, processes: int) -> int:
    per_step = batch_size * processes
    if effective_batch % per_step:
        raise ConfigError(f"optim.effective_batch={effective_batch} is not a multiple of data.batch_size={batch_size} "
                         f"x {processes} processes; change one of them")
    return effective_batch // per_step


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def train(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None, *, build_cache: bool = False,
          on_step: Callable[[int, dict], None] | None = None) -> Path:
    """Run (or resume) a training run; returns the exported model folder (or the cache folder).

    Args:
        cfg: the resolved config.
        resume: a checkpoint folder, a run folder (its latest checkpoint), or ``True`` for the latest
            checkpoint in ``run.output_dir``.
        build_cache: fill ``data.cache_dir`` with the latent cache and return, without training.
        on_step: called after every optimizer step with ``(step, logged values)`` (monitoring, tests).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not cfg.run.output_dir:
        raise ConfigError("run.output_dir is not set: give it in the config or as run.output_dir=...")
    output_dir = Path(cfg.run.output_dir)

    # ------------------------------------------------------------------ 1. check everything up front
    resume_from = None
    if resume:
        try:
            resume_from = resolve_checkpoint(output_dir if resume is True else resume)
        except FileNotFoundError as e:
            raise ConfigError(f"--resume: {e}") from None
        import yaml

        saved = yaml.safe_load((resume_from / "config.yaml").read_text())
        check_resume(cfg, saved, read_trainer_state(resume_from), resume_from)
    elif find_latest(output_dir) is not None and not build_cache:
        raise ConfigError(f"{output_dir} already holds checkpoints; resume with --resume, or choose another "
                              "run.output_dir")
    check_paths(cfg, need_validation=not build_cache)
    if build_cache and not cfg.data.cache_dir:
        raise ConfigError("--build-cache needs data.cache_dir")

    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher_precision not in (None, cfg.run.mixed_precision):
        logger.warning("The launcher's mixed precision %r is ignored: the config's run.mixed_precision=%r applies "
                       "(set it in the config or as run.mixed_precision=...)", launcher_precision,
                       cfg.run.mixed_precision)
    accelerator = Accelerator(mixed_precision=cfg.run.mixed_precision)
    if not accelerator.is_main_process:
        logging.getLogger("apdepth").setLevel(logging.WARNING)
    world, rank = accelerator.num_processes, accelerator.process_index
    accum = accumulation_steps(cfg.optim.effective_batch, cfg.data.batch_size, world)
    set_seed(cfg.run.seed)
    names, probs, view = build_datasets(cfg)
    sizes = view.sizes()
    validator = None
    if cfg.validation.every > 0 and accelerator.is_main_process and not build_cache:
        from .validation import Validator

        validator = Validator(cfg.validation)

    # ------------------------------------------------------------------ 2. model: frozen parts
    pipe = build_pipeline(cfg)
    pipe.empty_text_embedding(torch.device("cpu"), torch.float32)  # cached; the text encoder stays on the CPU
    device = accelerator.device
    pipe.vae.to(device)
    if pipe.prior is not None:
        pipe.prior.to(device)

    # ------------------------------------------------------------------ 3. latent cache
    if cfg.data.cache_dir:
        sources = {n: (getattr(cfg.data, n).split, len(d), getattr(cfg.data, n).resize) for n, d in zip(names, view.datasets)}
        fingerprint = cache_fingerprint(pipe, sources, cfg.data.quantiles, cfg.data.cache_dtype)
        if build_cache:
            written = build_latent_cache(pipe, view, names, cfg.data.cache_dir, fingerprint, cfg.data.cache_dtype,
                                         rank, world, accelerator.wait_for_everyone)
            logger.info("Latent cache %s: %d files written by process %d", cfg.data.cache_dir, written, rank)
            return Path(cfg.data.cache_dir)
        try:
            view = CachedView(view, LatentCache(cfg.data.cache_dir, fingerprint, names))
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data.cache_dir: {e}") from None

    # ------------------------------------------------------------------ 4. trainable parts, optimizer
    stage = build_stage(cfg, pipe)
    stage.prepare_unet(pipe.unet)
    if cfg.model.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()  # the decoder the pixel losses backpropagate through
    encoder = getattr(stage, "encoder", None)
    if encoder is not None:
        encoder.to(device)
    module = TrainModule(pipe, getattr(stage, "adapter", None))
    module.train()
    modules = {"unet": module.unet, **stage.trainable_modules()}
    params = [p for p in module.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                 fused=o.fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(o.warmup_steps, o.decay_steps, o.final_ratio, warmup_from_zero=o.warmup_from_zero))
    model, optimizer = accelerator.prepare(module, optimizer)
    ema = None
    if o.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=o.ema_decay)
        ema.to(device)

    step, consumed = 0, 0
    if resume_from is not None:
        try:
            state = load_checkpoint(resume_from, rank=rank, modules=modules, optimizer=optimizer,
                                    scheduler=scheduler, ema=ema)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"--resume {resume_from}: {e}") from e
        step, consumed = int(state["step"]), int(state["micro_batches"])
        if state.get("world_size") != world:
            logger.warning("Resuming a %s-process run on %d processes: the data stream continues, the "
                           "accumulation becomes %d", state.get("world_size"), world, accum)
        logger.info("Resumed from %s at step %d", resume_from, step)

    # ------------------------------------------------------------------ 5. data stream, logs
    from ..data.training import MixedBatchSampler

    sampler = MixedBatchSampler(sizes, probs, cfg.data.batch_size, cfg.run.seed, cfg.data.flip_prob, start=consumed,
                                rank=rank, world_size=world)
    loader = DataLoader(view, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0)
    batches = iter(loader)
    config_yaml = cfg.to_yaml()
    writer = None
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_text(output_dir / "config.yaml", config_yaml)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=step + 1 if step else None)
    logger.info("Stage %d: %d optimizer steps of %d samples (%d per micro-batch x %d processes x %d accumulation), "
                "from step %d", cfg.stage, cfg.max_steps, cfg.optim.effective_batch, cfg.data.batch_size, world,
                accum, step)

    def checkpoint(at: int) -> None:
        trainer_state = {"stage": cfg.stage, "step": at, "micro_batches": consumed, "world_size": world,
                         "accumulation": accum, "effective_batch": cfg.optim.effective_batch}
        save_checkpoint(output_dir, at, accelerator=accelerator, modules=modules, optimizer=optimizer,
                        scheduler=scheduler, trainer_state=trainer_state, config_yaml=config_yaml, ema=ema,
                        keep=cfg.run.keep_checkpoints)

    # ------------------------------------------------------------------ 6. the loop
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    counts: dict[str, int] = defaultdict(int)
    window_start, window_steps = time.perf_counter(), 0
    while step < cfg.max_steps:
        current = step + 1  # the optimizer step being computed
        terms: set[str] = set()
        for micro in range(accum):
            inputs = encode_inputs(pipe, next(batches), stage.needs_depth_latent)
            sync = micro == accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                with accelerator.autocast():
                    out = stage.losses(model, inputs, current)
                if not torch.isfinite(out["loss"]):
                    raise FloatingPointError(f"step {current}: the loss is {float(out['loss'])} "
                                             f"({ {k: float(v) for k, v in out.items()} })")
                accelerator.backward(out["loss"] / accum)
            for k, v in out.items():
                sums[k] += v.detach().float() / accum
            terms.update(out)
        consumed += accum * world
        if o.max_grad_norm:
            accelerator.clip_grad_norm_(params, o.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        step = current
        for k in terms:
            counts[k] += 1
        window_steps += 1

        logged: dict[str, float] = {}
        if step % cfg.run.log_every == 0 or step == cfg.max_steps:
            keys = sorted(sums)
            means = accelerator.reduce(torch.stack([sums[k] / max(counts[k], 1) for k in keys]), "mean")
            elapsed = time.perf_counter() - window_start
            logged = {f"train/{k}": float(v) for k, v in zip(keys, means)}
            logged["train/lr"] = scheduler.get_last_lr()[0]
            logged["perf/seconds_per_step"] = elapsed / window_steps
            logged["perf/samples_per_second"] = window_steps * cfg.optim.effective_batch / elapsed
            if cfg.stage == 2:
                logged["train/phase"] = stage.phase(step)
            if writer is not None:
                for k, v in logged.items():
                    writer.add_scalar(k, v, step)
            logger.info("step %d/%d  %s", step, cfg.max_steps,
                        "  ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in logged.items()))
            sums.clear()
            counts.clear()
            window_start, window_steps = time.perf_counter(), 0
        if cfg.validation.every > 0 and step % cfg.validation.every == 0:
            if validator is not None:  # the main process validates, the others wait
                logged.update(_validate(validator, accelerator, module, ema, params, writer, step))
            accelerator.wait_for_everyone()
        if step % cfg.run.checkpoint_every == 0 or step == cfg.max_steps:
            checkpoint(step)
        if on_step is not None:
            on_step(step, logged)

    if writer is not None:
        writer.close()
    final = export(accelerator, pipe, module, ema, params, output_dir / "final", config_yaml)
    accelerator.end_training()
    return final


def _validate(validator, accelerator, module: TrainModule, ema, params, writer, step: int) -> dict[str, float]:
    pipe = module._pipe[0]
    unwrapped = accelerator.unwrap_model(module)
    unwrapped.eval()
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        with accelerator.autocast():
            metrics, images = validator(pipe)
    finally:
        if ema is not None:
            ema.restore(params)
        unwrapped.train()
    logged = {f"val/{k}": v for k, v in metrics.items() if not math.isnan(v)}
    if writer is not None:
        for k, v in logged.items():
            writer.add_scalar(k, v, step)
        for i, image in enumerate(images):
            writer.add_image(f"val/depth_{i}", image, step, dataformats="HWC")
    logger.info("validation at step %d: %s", step, "  ".join(f"{k}={v:.4f}" for k, v in logged.items()))
    return logged


def export(accelerator, pipe: ApDepthPipeline, module: TrainModule, ema, params, folder: Path,
           config_yaml: str) -> Path:
    """Save the trained model (EMA weights when EMA is on) as an ApDepth pipeline; stage 1 adds ``adapter/``.
    LoRA runs write the adapter alone to ``<output_dir>/lora`` and merge it into the exported UNet."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        try:
            unwrapped = accelerator.unwrap_model(module)
            unwrapped.remove_hook()
            from .lora import has_lora, merge_lora, save_lora_adapter

            if has_lora(pipe.unet):  # the adapter alone beside final/, then final/ with it merged (terminal)
                save_lora_adapter(pipe.unet, folder.parent / "lora")
                merge_lora(pipe.unet)
            pipe.save_pretrained(folder)
            if unwrapped.adapter is not None:
                unwrapped.adapter.save_pretrained(folder / "adapter")
            _write_text(folder / "training_config.yaml", config_yaml)
        finally:
            if ema is not None:
                ema.restore(params)
        logger.info("Exported the trained model to %s", folder)
    accelerator.wait_for_everyone()
    return folder


def train_from_files(config_files: list[str], overrides: list[str], resume: str | bool | None = None,
                     build_cache: bool = False) -> Path:
    """The CLI's entry: configs + overrides (or, when resuming without a config, the checkpoint's own)."""
    base = None
    if resume and not config_files:
        if resume is True:
            raise ConfigError("--resume without a path needs --config (to find run.output_dir)")
        import yaml

        try:
            base = yaml.safe_load((resolve_checkpoint(resume) / "config.yaml").read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"--resume: {e}") from None
    cfg = build_config(config_files, overrides, base=base)
    return train(cfg, resume=resume, build_cache=build_cache)
