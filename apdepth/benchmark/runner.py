"""The inference benchmark: stage times, end-to-end latency, throughput, fast paths on and off, and
Marigold-style multi-step baselines on the identical UNet and VAE, all in one run.

The scenarios of the sibling modules (:mod:`.scaling`, :mod:`.training`, :mod:`.allocation`) take the
:class:`Benchmark` and use only its public methods (``record``, ``add``, ``set_dtype``, ``call``,
``changed``); rows and tables are in :mod:`.report`."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..devices import DTYPES, cpu_backend_info, prefers_channels_last
from ..diffusion import decode_depth
from .architectures import (
    apdepth_pipeline,
    empty_prompt_embedding,
    full_size_components,
    marigold_pipeline,
    tiny_components,
)
from .report import Row, format_goals, format_table, goals, markdown_table
from .scaling import SCALE_RESOLUTIONS
from .timing import PeakMemory, Timing, gemm_tflops, measure

logger = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    device: str = "cpu"
    arch: str = "full"  # full | tiny
    prior: str = "small"  # small | base | large | giant
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    resolution: tuple[int, int] = (480, 640)  # H, W
    batch_sizes: tuple[int, ...] = (1, 2)
    repeats: int = 3
    warmup: int = 1
    fast_paths: bool = True
    large_resolution: tuple[int, int] = (1536, 2048)  # for VAE tiling
    compile: str | None = None  # torch.compile mode ("default", "reduce-overhead", ...); opt-in: it takes minutes
    marigold: tuple[tuple[int, int], ...] = ((1, 1), (4, 1), (50, 10))  # (steps, ensemble)
    marigold_full: bool = False  # on CPU, 50x10 is extrapolated from its measured parts unless this is set
    train: bool = True  # time a stage-2 training step (benchmark/training.py)
    train_batch: int = 1  # 32 on GPU (the paper's batch without accumulation)
    train_resolution: tuple[int, int] = (240, 320)  # H, W; 480x640 on GPU
    release_resolution: int = 768  # also time end to end at the release's default processing resolution (0: no)
    components: bool = True  # also time the bare diffusers components (end to end vs components, same run)
    scale_resolutions: tuple[tuple[int, int], ...] = ()  # (H, W) each: end to end at batch 1 (scaling.py)
    scale_batches: tuple[int, ...] = ()  # end to end at the bench resolution
    flop_resolutions: tuple[tuple[int, int], ...] = SCALE_RESOLUTIONS  # counted FLOPs per stage (meta device)
    allocators: bool = False  # CPU: a VAE encode under each installed allocator, each in a fresh process
    other_priors: tuple[str, ...] = ()  # DA2 sizes also timed (prior stage and end to end) in the first dtype


def hardware_info(device: torch.device) -> dict:
    from ..allocator import active_allocator

    info = {"allocator": active_allocator(), "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), info["cpu"])
    info.update(cpu_backend_info())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def library_versions() -> dict:
    import accelerate
    import diffusers
    import transformers

    from .. import __version__

    return {"apdepth": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


class Benchmark:
    def __init__(self, config: BenchConfig, on_row: Callable[[Benchmark], None] | None = None):
        """``on_row`` is called after each new row (the bench command saves the partial report there, so an
        interrupted run keeps what it measured)."""
        self.cfg = config
        self.on_row = on_row
        self.device = torch.device(config.device)
        self.rows: list[Row] = []
        build = full_size_components if config.arch == "full" else tiny_components
        kwargs = {"prior": config.prior} if config.arch == "full" else {}
        logger.info("building %s-size models on %s", config.arch, self.device)
        self.components = build(device=self.device, dtype=torch.float32, **kwargs)
        self.pipe = apdepth_pipeline(self.components)
        self.channels_last = prefers_channels_last(self.device)  # the command line's default on this device
        self.pipe.set_channels_last(self.channels_last)
        h, w = config.resolution
        rng = np.random.default_rng(0)
        self.image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    # -------------------------------------------------------------- helpers

    def record(self, scenario, setting, dtype, batch, fn, resolution=None, note="", long=False, **extra) -> Row:
        """Time ``fn`` and keep the row. ``long``: a run of seconds (large inputs, Marigold 50x10, training
        steps, offloading), timed at most 3 times after at most 1 warm-up; the row's timing says how many."""
        h, w = resolution or self.cfg.resolution
        repeats, warmup = self.cfg.repeats, self.cfg.warmup
        if long:
            repeats, warmup = min(repeats, 3), min(warmup, 1)
        with PeakMemory(self.device) as mem:
            timing = measure(fn, self.device, repeats=repeats, warmup=warmup)
        extra = {"peak_rise_mb": mem.delta_mb, **extra}
        row = self.add(Row(scenario, setting, dtype, f"{w}x{h}", batch, timing, mem.peak_mb, note, extra))
        logger.info("%-10s %-28s %-5s %4d  %9.1f ms", scenario, setting, dtype, batch, timing.median_ms)
        return row

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        self.changed()
        return row

    def changed(self) -> None:
        if self.on_row is not None:
            self.on_row(self)

    def set_dtype(self, name: str) -> None:
        for module in self.components.values():
            module.to(dtype=DTYPES[name])
        self.pipe.set_empty_text_embedding(empty_prompt_embedding(self.components["text_encoder"]))

    def call(self, images, **kwargs):
        return self.pipe(images, processing_resolution=0, batch_size=len(images), **kwargs)

    # -------------------------------------------------------------- scenarios

    def stages(self, dtype: str) -> dict[str, Row]:
        h, w = self.cfg.resolution
        pipe = self.pipe
        rgb = torch.rand(1, 3, h, w, device=self.device) * 2 - 1
        prior = pipe.run_prior(rgb)
        cond = pipe.encode_condition(rgb, prior)
        latent = pipe.predict_latent(cond)
        with torch.no_grad():
            prior_name = f"DA2-{self.cfg.prior}" if self.cfg.arch == "full" else "tiny"
            return {
                "prior": self.record("stage", f"prior ({prior_name})", dtype, 1, lambda: pipe.run_prior(rgb)),
                "encode": self.record("stage", "encode (RGB + prior)", dtype, 1,
                                       lambda: pipe.encode_condition(rgb, prior)),
                "UNet": self.record("stage", "UNet (1 step)", dtype, 1, lambda: pipe.predict_latent(cond)),
                "decode": self.record("stage", "decode", dtype, 1, lambda: decode_depth(pipe.vae, latent)),
            }

    def end_to_end(self, dtype: str) -> dict[int, Row]:
        rows = {}
        for batch in self.cfg.batch_sizes:
            images = [self.image] * batch
            rows[batch] = self.record("apdepth", "end-to-end", dtype, batch, lambda im=images: self.call(im))
        return rows

    @contextlib.contextmanager
    def _toggle(self, name: str, on: bool):
        """Switch one fast path; everything else stays at the pipeline's defaults."""
        pipe, unet, vae = self.pipe, self.components["unet"], self.components["vae"]
        if name == "sdpa" and not on:
            from diffusers.models.attention_processor import AttnProcessor

            saved = (unet.attn_processors, vae.attn_processors)
            unet.set_attn_processor(AttnProcessor())
            vae.set_attn_processor(AttnProcessor())
            try:
                yield
            finally:
                unet.set_attn_processor(saved[0])
                vae.set_attn_processor(saved[1])
        elif name == "fused_encode" and on != pipe.fuse_encode:
            saved = pipe.fuse_encode
            pipe.fuse_encode = on
            try:
                yield
            finally:
                pipe.fuse_encode = saved
        elif name == "channels_last" and on != self.channels_last:
            pipe.set_channels_last(on)
            try:
                yield
            finally:
                pipe.set_channels_last(self.channels_last)
        elif name == "cudnn_benchmark" and on:  # cuDNN times its convolution algorithms once per shape
            saved = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            try:
                yield
            finally:
                torch.backends.cudnn.benchmark = saved
        elif name == "overlap_prior" and on != pipe.overlap_prior:
            pipe.overlap_prior = on
            try:
                yield
            finally:
                pipe.overlap_prior = not on
        elif name == "vae_tiling" and on:
            pipe.enable_vae_tiling()
            try:
                yield
            finally:
                pipe.disable_vae_tiling()
        else:
            yield

    def fast_paths(self, dtype: str) -> None:
        images = [self.image]
        te = self.components["text_encoder"]

        def uncached():  # the embedding recomputed on every call, as pipelines without a cache do
            self.pipe.set_empty_text_embedding(empty_prompt_embedding(te))
            return self.call(images)

        self.record("fast path", "text embedding: computed per call", dtype, 1, uncached)
        for name, on_label, off_label, default_on in (
            ("sdpa", "SDPA attention", "classic attention", True),
            ("fused_encode", "RGB + prior in one VAE call", "two VAE calls", self.pipe.fuse_encode),
            ("channels_last", "channels_last", "contiguous", self.channels_last),
        ):
            for on in (True, False):
                if on == default_on:
                    continue  # the default setting is the end-to-end row
                with self._toggle(name, on):
                    self.record("fast path", on_label if on else off_label, dtype, 1, lambda: self.call(images))
        from .quantization import int8_rows

        int8_rows(self, dtype)  # int8 weight-only UNet + VAE Linear layers (torchao), off and on

        if self.device.type == "cuda":  # the RGB encode on a second stream while the prior runs (eager)
            with self._toggle("overlap_prior", True):
                self.record("fast path", "RGB encode beside the prior (CUDA stream)", dtype, 1,
                            lambda: self.call(images))
        if self.device.type == "cuda":  # cuDNN autotuning, alone and with channels_last, at batch 1 and the largest
            for batch in sorted({1, max(self.cfg.batch_sizes)}):
                many = images * batch
                with self._toggle("cudnn_benchmark", True):
                    self.record("fast path", "cudnn.benchmark", dtype, batch, lambda im=many: self.call(im))
                    with self._toggle("channels_last", True):
                        self.record("fast path", "cudnn.benchmark + channels_last", dtype, batch,
                                     lambda im=many: self.call(im))

        h, w = self.cfg.large_resolution
        big = [self.image.resize((w, h))]
        for on in (False, True):
            with self._toggle("vae_tiling", on):
                self.record("fast path", f"VAE tiling {'on' if on else 'off'}", dtype, 1,
                             lambda: self.call(big), resolution=(h, w), long=True)

        if self.device.type == "cuda":
            self.pipe.enable_model_cpu_offload(device=self.device)
            self.record("fast path", "model CPU offload (low memory)", dtype, 1, lambda: self.call(images),
                         long=True)
            self.pipe.remove_all_hooks()
            self.pipe.to(self.device)

    def compiled(self, dtype: str, mode: str) -> None:
        """``torch.compile(mode=mode)`` at batch 1, each new shape compiling again: the UNet and the VAE's
        encoder and decoder each on its own, then the whole pipeline as one region (one CUDA graph under
        reduce-overhead), then the ``--fast`` preset (:func:`apdepth.compilation.apply_fast_preset`: its dtype,
        its compile mode for this device) against the fp32 eager defaults. Each row carries its depth's
        difference from fp32 eager (``max_abs``, ``mean_abs``); a compilation failure becomes a row that says
        why instead of ending the run."""
        reference = self._fp32_reference(dtype)
        for scope, label in (("modules", "UNet + VAE"), ("pipeline", "whole pipeline")):
            self._compiled_row(f"torch.compile({label}, {mode})", dtype, reference,
                               lambda s=scope: self.pipe.compile_models(mode, scope=s))
        self.pipe.compile_models(None)
        self.fast_preset(reference)

    def fast_preset(self, reference: torch.Tensor) -> None:
        """``--fast`` off (fp32 eager, the defaults) and on, at batch 1; the pipeline's settings are restored."""
        from ..compilation import apply_fast_preset, fast_compile_mode
        from ..devices import auto_dtype

        fast_dtype = next(k for k, v in DTYPES.items() if v == auto_dtype(self.device))
        self.set_dtype("fp32")
        self.record("fast path", "--fast off (fp32 eager)", "fp32", 1, lambda: self.call([self.image]))
        self.set_dtype(fast_dtype)
        mode = fast_compile_mode(self.device.type) or "none"
        try:
            self._compiled_row(f"--fast ({fast_dtype}, compile {mode})", fast_dtype, reference,
                               lambda: logger.info("%s", apply_fast_preset(self.pipe, self.device).describe()))
        finally:
            self.pipe.compile_models(None)
            self.pipe.overlap_prior = False
            self.pipe.set_channels_last(self.channels_last)

    def _fp32_reference(self, dtype: str) -> torch.Tensor:
        """The eager fp32 depth of the bench image at batch 1 (from the current weights; back in ``dtype``)."""
        self.set_dtype("fp32")
        with torch.no_grad():
            reference = self.call([self.image], output_type="pt").prediction
        self.set_dtype(dtype)
        return reference

    def _compiled_row(self, setting: str, dtype: str, reference: torch.Tensor, apply: Callable[[], None]) -> None:
        from .quantization import depth_difference

        h, w = self.cfg.resolution
        try:
            apply()
            with torch.no_grad():
                diff = depth_difference(self.call([self.image], output_type="pt").prediction, reference)
            self.record("fast path", setting, dtype, 1, lambda: self.call([self.image]),
                        note=f"first call compiles; depth vs fp32 eager: max {diff['max_abs']:.1e}, "
                             f"mean {diff['mean_abs']:.1e}", **diff)
        except Exception as e:  # noqa: BLE001 - any backend error is a result to report
            logger.warning("%s failed: %s", setting, e)
            first = str(e).splitlines()[0][:120] if str(e) else ""
            self.add(Row("fast path", setting, dtype, f"{w}x{h}", 1, None, note=f"failed: {type(e).__name__}: {first}"))

    def marigold(self, dtype: str, apdepth_ms: float) -> None:
        mpipe = marigold_pipeline(self.components)
        mpipe.empty_text_embedding = empty_prompt_embedding(self.components["text_encoder"])
        # the first call of a new pipeline pays one-time set-up (seen: 380 ms against 53 ms for a 4-step run
        # with --warmup 0); the ApDepth rows are timed on a pipeline that earlier rows have warmed, so this
        # one is warmed too, whatever --warmup says
        with torch.no_grad():
            mpipe(self.image, num_inference_steps=1, ensemble_size=1, processing_resolution=0, batch_size=1,
                  generator=torch.Generator(self.device).manual_seed(0))
        measured: dict[tuple[int, int], Row] = {}
        encode_ms = None
        for steps, ensemble in self.cfg.marigold:
            setting = f"Marigold {steps} step(s) x {ensemble}"
            if steps * ensemble > 8 and self.device.type == "cpu" and not self.cfg.marigold_full:
                if encode_ms is None and ensemble > 1:
                    encode_ms = self._marigold_encode(dtype)
                measured[(steps, ensemble)] = self._extrapolate_marigold(setting, dtype, steps, ensemble, measured,
                                                                         encode_ms or 0.0)
                continue

            def run(s=steps, e=ensemble):
                return mpipe(self.image, num_inference_steps=s, ensemble_size=e, processing_resolution=0,
                             batch_size=1, generator=torch.Generator(self.device).manual_seed(0))

            measured[(steps, ensemble)] = self.record("marigold", setting, dtype, 1, run, long=steps * ensemble > 8)
        for row in measured.values():
            if row.timing is not None:
                row.extra["times_apdepth"] = row.timing.median_ms / apdepth_ms
        self.changed()  # the ratios are known only now

    def _marigold_encode(self, dtype: str) -> float:
        """One VAE encode of the image: diffusers' Marigold encodes once and repeats the latent per member."""
        from ..diffusion import encode_latent

        h, w = self.cfg.resolution
        rgb = torch.rand(1, 3, h, w, device=self.device) * 2 - 1
        with torch.no_grad():
            row = self.record("marigold", "VAE encode (1 image, once per ensemble)", dtype, 1,
                               lambda: encode_latent(self.pipe.vae, rgb), note="input to the extrapolation")
        return row.timing.median_ms

    def _extrapolate_marigold(self, setting, dtype, steps, ensemble, measured, encode_ms: float = 0.0) -> Row:
        """``T(s x e) = T_enc + e * (T(1x1) - T_enc + (s - 1) * t_step)``: ``t_step`` from the measured 1- and
        4-step runs, the image encoded once (diffusers repeats its latent for every ensemble member); each
        member adds its steps, its decode and its share of the overhead. The final ensembling (alignment
        and median of the members) is not counted."""
        one, four = measured.get((1, 1)), measured.get((4, 1))
        if one is None or four is None:
            raise ValueError("extrapolating Marigold needs the (1, 1) and (4, 1) runs")
        t_step = (four.timing.median_ms - one.timing.median_ms) / 3
        if t_step <= 0:  # timing noise: a step cannot cost nothing, and a negative figure is worse than none
            return self.add(Row("marigold", setting, dtype, one.resolution, 1, None,
                                note=f"not extrapolated: the 4-step run ({four.timing.median_ms:.1f} ms) was not "
                                     f"slower than the 1-step run ({one.timing.median_ms:.1f} ms); "
                                     "time with more --repeats",
                                extra={"t_step_ms": t_step, "encode_ms": encode_ms}))
        ms = encode_ms + ensemble * (one.timing.median_ms - encode_ms + (steps - 1) * t_step)
        timing = Timing(ms, ms, ms, ms, 0, 0)
        note = "extrapolated (CPU), one encode" if encode_ms else "extrapolated (CPU)"
        return self.add(Row("marigold", setting, dtype, one.resolution, 1, timing, note=note,
                            extra={"t_step_ms": t_step, "encode_ms": encode_ms}))

    # -------------------------------------------------------------- all

    def run(self) -> list[Row]:
        cfg = self.cfg
        from . import scaling

        self.calibrate()
        if cfg.flop_resolutions:
            self.flops = scaling.flop_report(self, cfg.flop_resolutions)
        for i, dtype in enumerate(cfg.dtypes):
            self.set_dtype(dtype)
            stage_rows = self.stages(dtype)
            e2e = self.end_to_end(dtype)
            if cfg.release_resolution:
                scaling.release_default_row(self, dtype)
            if i == 0 and cfg.other_priors:
                scaling.other_prior_rows(self, dtype, cfg.other_priors)
            if cfg.components and 1 in e2e:
                scaling.bare_components_row(self, dtype, e2e[1].timing.median_ms, stage_rows)
            if i == 0 and cfg.fast_paths:
                self.fast_paths(dtype)
            if cfg.marigold:
                self.marigold(dtype, e2e[1].timing.median_ms)
        last = cfg.dtypes[-1]  # the fastest on machines with native bf16 / fp16; scaling rows in it
        if cfg.scale_resolutions or cfg.scale_batches:
            self.set_dtype(last)
            scaling.scaling_rows(self, last)
        if cfg.allocators and self.device.type == "cpu":
            from .allocation import allocator_rows

            allocator_rows(self, cfg.dtypes[0])
        if cfg.compile:
            self.compiled(cfg.dtypes[-1], cfg.compile)
        if cfg.train:
            from .training import training_step_rows

            training_step_rows(self, cfg.train_batch, cfg.train_resolution,
                               bf16="bf16" in cfg.dtypes and self.device.type == "cuda")
        return self.rows

    def calibrate(self) -> dict[str, float]:
        """The matrix-product rate in each benchmarked dtype (:func:`.timing.gemm_tflops`), measured once."""
        if not hasattr(self, "gemm_tflops"):
            self.gemm_tflops = {d: round(gemm_tflops(self.device, DTYPES[d]), 3) for d in self.cfg.dtypes}
            logger.info("matrix products: %s", ", ".join(f"{d} {v:.2f} TFLOP/s" for d, v in self.gemm_tflops.items()))
        return self.gemm_tflops

    def report(self) -> dict:
        rows = [r.as_dict() for r in self.rows]
        hardware = hardware_info(self.device)
        if hasattr(self, "gemm_tflops"):
            hardware["gemm_tflops"] = self.gemm_tflops
        return {"hardware": hardware, "versions": library_versions(),
                "settings": {k: v for k, v in self.cfg.__dict__.items()},
                "rows": rows, "goals": goals(rows, self.device.type, self.cfg, getattr(self, "flops", None),
                                             getattr(self, "gemm_tflops", None)),
                "flops": getattr(self, "flops", None)}


__all__ = ["BenchConfig", "Benchmark", "Row", "format_goals", "format_table", "goals", "markdown_table"]
