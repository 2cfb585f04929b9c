"""The inference benchmark: stage times, end-to-end latency, throughput, fast paths on and off, and
Marigold-style multi-step baselines on the identical UNet and VAE, all in one run."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..devices import DTYPES, prefers_channels_last
from ..diffusion import decode_depth
from .architectures import (
    apdepth_pipeline,
    empty_prompt_embedding,
    full_size_components,
    marigold_pipeline,
    tiny_components,
)
from .scaling import SCALE_RESOLUTIONS, describe_superlinear, flop_table
from .timing import PeakMemory, Timing, measure

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


@dataclass
class Row:
    scenario: str
    setting: str
    dtype: str
    resolution: str
    batch: int
    timing: Timing | None
    peak_mb: float = float("nan")
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.timing.median_ms / 1000.0) if self.timing else float("nan")

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "timing"}
        d["timing"] = self.timing.as_dict() if self.timing else None
        d["images_per_s"] = self.images_per_s
        return d


def hardware_info(device: torch.device) -> dict:
    from ..allocator import active_allocator

    info = {"allocator": active_allocator(), "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), info["cpu"])
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

    def _record(self, scenario, setting, dtype, batch, fn, resolution=None, note="", long=False, **extra) -> Row:
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
        self._changed()
        return row

    def _changed(self) -> None:
        if self.on_row is not None:
            self.on_row(self)

    def _set_dtype(self, name: str) -> None:
        for module in self.components.values():
            module.to(dtype=DTYPES[name])
        self.pipe.set_empty_text_embedding(empty_prompt_embedding(self.components["text_encoder"]))

    def _call(self, images, **kwargs):
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
                "prior": self._record("stage", f"prior ({prior_name})", dtype, 1, lambda: pipe.run_prior(rgb)),
                "encode": self._record("stage", "encode (RGB + prior)", dtype, 1,
                                       lambda: pipe.encode_condition(rgb, prior)),
                "UNet": self._record("stage", "UNet (1 step)", dtype, 1, lambda: pipe.predict_latent(cond)),
                "decode": self._record("stage", "decode", dtype, 1, lambda: decode_depth(pipe.vae, latent)),
            }

    def end_to_end(self, dtype: str) -> dict[int, Row]:
        rows = {}
        for batch in self.cfg.batch_sizes:
            images = [self.image] * batch
            rows[batch] = self._record("apdepth", "end-to-end", dtype, batch, lambda im=images: self._call(im))
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
            return self._call(images)

        self._record("fast path", "text embedding: computed per call", dtype, 1, uncached)
        for name, on_label, off_label, default_on in (
            ("sdpa", "SDPA attention", "classic attention", True),
            ("fused_encode", "RGB + prior in one VAE call", "two VAE calls", self.pipe.fuse_encode),
            ("channels_last", "channels_last", "contiguous", self.channels_last),
        ):
            for on in (True, False):
                if on == default_on:
                    continue  # the default setting is the end-to-end row
                with self._toggle(name, on):
                    self._record("fast path", on_label if on else off_label, dtype, 1, lambda: self._call(images))

        if self.device.type == "cuda":  # cuDNN autotuning, alone and with channels_last, at batch 1 and the largest
            for batch in sorted({1, max(self.cfg.batch_sizes)}):
                many = images * batch
                with self._toggle("cudnn_benchmark", True):
                    self._record("fast path", "cudnn.benchmark", dtype, batch, lambda im=many: self._call(im))
                    with self._toggle("channels_last", True):
                        self._record("fast path", "cudnn.benchmark + channels_last", dtype, batch,
                                     lambda im=many: self._call(im))

        h, w = self.cfg.large_resolution
        big = [self.image.resize((w, h))]
        for on in (False, True):
            with self._toggle("vae_tiling", on):
                self._record("fast path", f"VAE tiling {'on' if on else 'off'}", dtype, 1,
                             lambda: self._call(big), resolution=(h, w), long=True)

        if self.device.type == "cuda":
            self.pipe.enable_model_cpu_offload(device=self.device)
            self._record("fast path", "model CPU offload (low memory)", dtype, 1, lambda: self._call(images),
                         long=True)
            self.pipe.remove_all_hooks()
            self.pipe.to(self.device)

    def compiled(self, dtype: str, mode: str) -> None:
        """The UNet and the VAE's encoder and decoder under ``torch.compile(mode=mode)`` at batch 1 (each new
        shape compiles again); a compilation failure becomes a row that says why instead of ending the run."""
        self.pipe.compile_models(mode)
        setting = f"torch.compile(UNet + VAE, {mode})"
        try:
            self._record("fast path", setting, dtype, 1, lambda: self._call([self.image]),
                         note="warm-up includes compilation")
        except Exception as e:  # noqa: BLE001 - any backend error is a result to report
            logger.warning("%s failed: %s", setting, e)
            h, w = self.cfg.resolution
            first = str(e).splitlines()[0][:120] if str(e) else ""
            self.add(Row("fast path", setting, dtype, f"{w}x{h}", 1, None, note=f"failed: {type(e).__name__}: {first}"))

    def marigold(self, dtype: str, apdepth_ms: float) -> None:
        mpipe = marigold_pipeline(self.components)
        mpipe.empty_text_embedding = empty_prompt_embedding(self.components["text_encoder"])
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

            measured[(steps, ensemble)] = self._record("marigold", setting, dtype, 1, run, long=steps * ensemble > 8)
        for row in measured.values():
            row.extra["times_apdepth"] = row.timing.median_ms / apdepth_ms
        self._changed()  # the ratios are known only now

    def _marigold_encode(self, dtype: str) -> float:
        """One VAE encode of the image: diffusers' Marigold encodes once and repeats the latent per member."""
        from ..diffusion import encode_latent

        h, w = self.cfg.resolution
        rgb = torch.rand(1, 3, h, w, device=self.device) * 2 - 1
        with torch.no_grad():
            row = self._record("marigold", "VAE encode (1 image, once per ensemble)", dtype, 1,
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
        ms = encode_ms + ensemble * (one.timing.median_ms - encode_ms + (steps - 1) * t_step)
        timing = Timing(ms, ms, ms, ms, 0, 0)
        note = "extrapolated (CPU), one encode" if encode_ms else "extrapolated (CPU)"
        return self.add(Row("marigold", setting, dtype, one.resolution, 1, timing, note=note,
                            extra={"t_step_ms": t_step, "encode_ms": encode_ms}))

    # -------------------------------------------------------------- all

    def run(self) -> list[Row]:
        cfg = self.cfg
        from . import scaling

        if cfg.flop_resolutions:
            self.flops = scaling.flop_report(self, cfg.flop_resolutions)
        for i, dtype in enumerate(cfg.dtypes):
            self._set_dtype(dtype)
            stage_rows = self.stages(dtype)
            e2e = self.end_to_end(dtype)
            if cfg.release_resolution:
                scaling.release_default_row(self, dtype)
            if cfg.components and 1 in e2e:
                scaling.bare_components_row(self, dtype, e2e[1].timing.median_ms, stage_rows)
            if i == 0 and cfg.fast_paths:
                self.fast_paths(dtype)
            if cfg.marigold:
                self.marigold(dtype, e2e[1].timing.median_ms)
        last = cfg.dtypes[-1]  # the fastest on machines with native bf16 / fp16; scaling rows in it
        if cfg.scale_resolutions or cfg.scale_batches:
            self._set_dtype(last)
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

    def report(self) -> dict:
        rows = [r.as_dict() for r in self.rows]
        return {"hardware": hardware_info(self.device), "versions": library_versions(),
                "settings": {k: v for k, v in self.cfg.__dict__.items()},
                "rows": rows, "goals": goals(rows, self.device.type, self.cfg), "flops": getattr(self, "flops", None)}


# The project's speed goals. Reported, never asserted: they depend on the machine.
CPU_GOAL_MS = 12_000  # 2 CPU cores, 640x480, full-size model with DA2-small
GPU_GOAL_MS = 25  # H100, bf16, DA2-large, per image
MARIGOLD_GOAL_RATIO = 300  # Marigold 50 steps x 10 ensemble / ApDepth, same run


def goals(rows: list[dict], device_type: str, cfg: BenchConfig) -> list[dict]:
    """The goals this run can speak to: ``{goal, target, measured, met, note}`` each (``measured`` in ms or x).

    Latency: the fastest dtype's end-to-end median at batch 1; per image on GPU: the best ``median / batch``
    over the batch sizes. A goal whose conditions this run does not meet (another resolution, prior or
    device) is reported with ``met: None`` and the reason.
    """
    out = []
    e2e = [r for r in rows if r["scenario"] == "apdepth" and r["setting"] == "end-to-end" and r["timing"]]
    standard = cfg.arch == "full" and tuple(cfg.resolution) == (480, 640)
    if e2e:
        one = min((r for r in e2e if r["batch"] == 1), key=lambda r: r["timing"]["median_ms"], default=None)
        if device_type == "cpu" and one is not None:
            ok = standard and cfg.prior == "small"
            out.append({"goal": "CPU end-to-end, 640x480, DA2-small", "target": f"<= {CPU_GOAL_MS} ms",
                        "measured": one["timing"]["median_ms"], "dtype": one["dtype"],
                        "met": one["timing"]["median_ms"] <= CPU_GOAL_MS if ok else None,
                        "note": "" if ok else "needs --arch full, --res 640x480, --prior small"})
        if device_type == "cuda":
            best = min(e2e, key=lambda r: r["timing"]["median_ms"] / r["batch"])
            per_image = best["timing"]["median_ms"] / best["batch"]
            ok = standard and cfg.prior == "large" and best["dtype"] == "bf16"
            out.append({"goal": "GPU per image, 640x480, bf16, DA2-large (H100)", "target": f"<= {GPU_GOAL_MS} ms",
                        "measured": per_image, "dtype": best["dtype"], "batch": best["batch"],
                        "met": per_image <= GPU_GOAL_MS if ok else None,
                        "note": "" if ok else "needs --arch full, --res 640x480, --prior large and bf16 fastest"})
    for r in rows:
        if r["scenario"] == "marigold" and r["setting"] == "Marigold 50 step(s) x 10" and "times_apdepth" in r["extra"]:
            ratio = r["extra"]["times_apdepth"]
            out.append({"goal": f"faster than Marigold 50x10 ({r['dtype']})", "target": f">= {MARIGOLD_GOAL_RATIO}x",
                        "measured": ratio, "dtype": r["dtype"], "met": ratio >= MARIGOLD_GOAL_RATIO,
                        "note": r["note"]})
    return out


def format_goals(goal_rows: list[dict]) -> str:
    lines = []
    for g in goal_rows:
        unit = "x" if g["target"].endswith("x") else " ms"
        verdict = {True: "met", False: "NOT met", None: "not applicable"}[g["met"]]
        note = f" ({g['note']})" if g["note"] else ""
        lines.append(f"goal: {g['goal']}: {g['measured']:.1f}{unit} [{g['dtype']}], target {g['target']}: "
                     f"{verdict}{note}")
    return "\n".join(lines)


def markdown_table(report: dict) -> str:
    """The README's performance table from a JSON report: one line per timed row, hardware and versions above."""
    hw, v = report["hardware"], report["versions"]
    where = hw.get("gpu") or hw["cpu"]
    lines = [f"Measured on {where} ({hw['cpu_count']} CPUs{', ' + str(hw['gpu_memory_gb']) + ' GiB' if 'gpu' in hw else ''}), "
             f"torch {v['torch']}, diffusers {v['diffusers']}, transformers {v['transformers']}, apdepth {v['apdepth']}; "
             f"prior DA2-{report['settings']['prior']}; median of {report['settings']['repeats']} timed runs after "
             f"{report['settings']['warmup']} warm-up.", "",
             "| what | setting | dtype | input | batch | median ms | p10-p90 ms | img/s | peak MB | vs ApDepth |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        t = r["timing"]
        if t is None:
            lines.append(f"| {r['scenario']} | {r['setting']} | {r['dtype']} | {r['resolution']} | {r['batch']} "
                         f"| - | - | - | - | {r['note']} |")
            continue
        spread = f"{t['p10_ms']:.0f}-{t['p90_ms']:.0f}" if t["n"] else "-"
        ratio = f"{r['extra']['times_apdepth']:.1f}x ApDepth's time" if "times_apdepth" in r["extra"] else ""
        note = "; ".join(x for x in (ratio, r["note"]) if x)
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] == r["peak_mb"] else "-"
        lines.append(f"| {r['scenario']} | {r['setting']} | {r['dtype']} | {r['resolution']} | {r['batch']} "
                     f"| {t['median_ms']:.0f} | {spread} | {r['images_per_s']:.2f} | {peak} | {note} |")
    if report.get("goals"):
        lines += ["", *(f"- {line}" for line in format_goals(report["goals"]).splitlines())]
    if report.get("flops"):
        lines += ["", flop_table(report["flops"]), *(f"- {line}" for line in describe_superlinear(report["flops"]))]
    return "\n".join(lines)



def format_table(rows: list[Row]) -> str:
    header = f"{'scenario':<10} {'setting':<34} {'dtype':<5} {'res':>9} {'batch':>5} {'median ms':>10} " \
             f"{'p10-p90 ms':>17} {'img/s':>7} {'peak MB':>8}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        t = r.timing
        if t is None:
            lines.append(f"{r.scenario:<10} {r.setting:<34} {r.dtype:<5} {r.resolution:>9} {r.batch:>5} "
                         f"{'-':>10} {'-':>17} {'-':>7} {'-':>8}  {r.note}")
            continue
        spread = f"{t.p10_ms:.1f}-{t.p90_ms:.1f}" if t.n else "-"
        note = r.note
        if "times_apdepth" in r.extra:
            note = (f"{r.extra['times_apdepth']:.1f}x ApDepth " + note).strip()
        lines.append(f"{r.scenario:<10} {r.setting:<34} {r.dtype:<5} {r.resolution:>9} {r.batch:>5} "
                     f"{t.median_ms:>10.1f} {spread:>17} {r.images_per_s:>7.2f} {r.peak_mb:>8.0f}  {note}")
    return "\n".join(lines)
