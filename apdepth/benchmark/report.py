"""The benchmark's results: one :class:`Row` per timed setting, the speed targets a run can speak to, and the
plain-text and Markdown tables (the README's performance table) built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .scaling import describe_superlinear, flop_table
from .timing import Timing

if TYPE_CHECKING:
    from .runner import BenchConfig


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


# The speed targets `apdepth bench` judges a run against (README, "Speed"). Reported, never asserted: they
# depend on the machine.
CPU_GOAL_MS = 3_000  # 2 CPU cores, 640x480, full-size model with DA2-small
GPU_GOAL_MS = 25  # H100, bf16, DA2-large, batch 1
GPU_BATCH_GOAL_MS = 15  # the same, per image at batch 8
MARIGOLD_GOAL_RATIO = 300  # Marigold 50 steps x 10 ensemble / ApDepth, same run
MARIGOLD_1STEP_GOAL = 1.1  # ApDepth / Marigold 1 step x 1 on the same UNet and VAE, same run (GPU)
TRAIN_GOAL_MS = 1_500  # one stage-2 optimizer step at batch 32, 480x640, bf16 (H100)
TRAIN_GOAL_BATCH = 32
# Fast-path rows that do not run the pipeline at the bench's size on its device.
_NOT_LATENCY = ("VAE tiling", "model CPU offload")


def _latency_rows(rows: list[dict], cfg: BenchConfig) -> list[dict]:
    """Every timed whole-pipeline call at the bench resolution: the end-to-end rows and the fast paths."""
    h, w = cfg.resolution
    return [r for r in rows if r["timing"] and r.get("resolution", f"{w}x{h}") == f"{w}x{h}" and (
        (r["scenario"] == "apdepth" and r["setting"] == "end-to-end")
        or (r["scenario"] == "fast path" and not r["setting"].startswith(_NOT_LATENCY)))]


def goals(rows: list[dict], device_type: str, cfg: BenchConfig, flops: dict | None = None,
          gemm_tflops: dict | None = None) -> list[dict]:
    """The goals this run can speak to: ``{goal, target, measured, met, note}`` each (``measured`` in ms or x).

    Latency: the fastest whole-pipeline call at batch 1 (end to end in any dtype, or a fast path; the note
    names it); per image on GPU: the fastest ``median / 8`` at batch 8; against Marigold: the ratios of the
    same run; training: the fastest stage-2 step at the bench resolution, scaled to batch 32 where it ran
    as smaller micro-batches (gradient accumulation). A goal whose conditions this run does not meet
    (another resolution, prior or device) is reported with ``met: None`` and the reason. With the counted
    FLOPs (``flops``, a :func:`.scaling.flop_report`) and the machine's matrix-product rate (``gemm_tflops``),
    the CPU goal's note gives the time the counted work takes at that rate: the floor of any implementation
    on this machine that does the same arithmetic.
    """
    standard = cfg.arch == "full" and tuple(cfg.resolution) == (480, 640)
    calls = _latency_rows(rows, cfg)
    out = []
    if device_type == "cpu":
        out += _cpu_goal(calls, standard and cfg.prior == "small", flops, gemm_tflops)
    if device_type == "cuda":
        out += _gpu_goals(calls, standard and cfg.prior == "large")
    out += _marigold_goals(rows, device_type == "cuda")
    if device_type == "cuda":
        out += _train_goal(rows)
    return out


def _fastest(calls: list[dict], batch: int) -> dict | None:
    return min((r for r in calls if r["batch"] == batch), key=lambda r: r["timing"]["median_ms"], default=None)


def _named(row: dict) -> str:
    return "" if row["scenario"] == "apdepth" else f"row '{row['setting']}'"


def _cpu_goal(calls: list[dict], ok: bool, flops: dict | None, gemm_tflops: dict | None) -> list[dict]:
    one = _fastest(calls, 1)
    if one is None:
        return []
    note = _named(one) if ok else "needs --arch full, --res 640x480, --prior small"
    work = (flops or {}).get("tflop", {}).get("640x480", {}).get("total")
    rate = (gemm_tflops or {}).get(one["dtype"])
    if ok and work and rate:
        note = "; ".join(filter(None, [note, (
            f"the counted {work:.2f} TFLOP at this machine's {one['dtype']} matrix-product rate "
            f"({rate:.2f} TFLOP/s) take {1000 * work / rate:.0f} ms; {CPU_GOAL_MS} ms needs "
            f"{work / (CPU_GOAL_MS / 1000):.2f} TFLOP/s")]))
    return [{"goal": "CPU end-to-end, 640x480, DA2-small", "target": f"<= {CPU_GOAL_MS} ms",
             "measured": one["timing"]["median_ms"], "dtype": one["dtype"],
             "met": one["timing"]["median_ms"] <= CPU_GOAL_MS if ok else None, "note": note}]


def _gpu_goals(calls: list[dict], ok: bool) -> list[dict]:
    out = []
    for batch, target, label in ((1, GPU_GOAL_MS, "GPU batch 1"), (8, GPU_BATCH_GOAL_MS, "GPU per image at batch 8")):
        best = _fastest(calls, batch)
        if best is None:
            continue
        per_image = best["timing"]["median_ms"] / batch
        out.append({"goal": f"{label}, 640x480, DA2-large (H100)", "target": f"<= {target} ms",
                    "measured": per_image, "dtype": best["dtype"], "batch": batch,
                    "met": per_image <= target if ok else None,
                    "note": _named(best) if ok else "needs --arch full, --res 640x480, --prior large"})
    return out


def _marigold_goals(rows: list[dict], gpu: bool) -> list[dict]:
    out = []
    for r in rows:
        if r["scenario"] != "marigold" or "times_apdepth" not in r["extra"]:
            continue
        ratio = r["extra"]["times_apdepth"]  # Marigold's time / ApDepth's
        if r["setting"] == "Marigold 50 step(s) x 10":
            out.append({"goal": f"faster than Marigold 50x10 ({r['dtype']})", "target": f">= {MARIGOLD_GOAL_RATIO}x",
                        "measured": ratio, "dtype": r["dtype"], "met": ratio >= MARIGOLD_GOAL_RATIO,
                        "note": r["note"]})
        elif r["setting"] == "Marigold 1 step(s) x 1":
            out.append({"goal": f"at most {MARIGOLD_1STEP_GOAL}x Marigold 1 step ({r['dtype']})",
                        "target": f"<= {MARIGOLD_1STEP_GOAL}x", "measured": 1.0 / ratio, "dtype": r["dtype"],
                        "met": 1.0 / ratio <= MARIGOLD_1STEP_GOAL if gpu else None,
                        "note": "" if gpu else "a GPU goal: on CPUs the VAE dominates, and ApDepth encodes twice"})
    return out


def _train_goal(rows: list[dict]) -> list[dict]:
    steps = [r for r in rows if r["scenario"] == "train" and r["timing"] and r["dtype"] == "bf16"
             and r.get("resolution", "640x480") == "640x480"]
    if not steps:
        return []
    best = min(steps, key=lambda r: r["timing"]["median_ms"] / r["batch"])
    micro = -(-TRAIN_GOAL_BATCH // best["batch"])  # micro-batches per optimizer step
    ms = best["timing"]["median_ms"] * micro
    note = f"row '{best['setting']}'" + (f", {micro} micro-batches of {best['batch']}" if micro > 1 else "")
    return [{"goal": f"stage-2 step, batch {TRAIN_GOAL_BATCH}, 480x640, bf16 (H100)", "target": f"<= {TRAIN_GOAL_MS} ms",
             "measured": ms, "dtype": "bf16", "met": ms <= TRAIN_GOAL_MS, "note": note}]


def judge_report(report: dict) -> list[dict]:
    """A saved report's goals judged again by the current rules (``apdepth bench --from``), so that reports
    written before a goal existed speak to it too."""
    from dataclasses import fields

    from .runner import BenchConfig

    names = {f.name for f in fields(BenchConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in report["settings"].items() if k in names}
    hw = report["hardware"]
    return goals(report["rows"], "cuda" if "gpu" in hw else "cpu", BenchConfig(**settings), report.get("flops"),
                 hw.get("gemm_tflops"))


def format_goals(goal_rows: list[dict]) -> str:
    lines = []
    for g in goal_rows:
        unit = "x" if g["target"].endswith("x") else " ms"
        digits = 2 if unit == "x" and g["measured"] < 10 else 1
        verdict = {True: "met", False: "NOT met", None: "not applicable"}[g["met"]]
        note = f" ({g['note']})" if g["note"] else ""
        lines.append(f"goal: {g['goal']}: {g['measured']:.{digits}f}{unit} [{g['dtype']}], target {g['target']}: "
                     f"{verdict}{note}")
    return "\n".join(lines)


def backend_line(hw: dict) -> str:
    """Which kernels ran: 'CUDA 12.8, cuDNN 90100' on a GPU; on a CPU the dispatch ISA, the bf16 / int8 units
    and the oneDNN build ('ISA AVX512 (avx512_bf16, avx512_vnni), oneDNN v3.12.0'); and the allocator.
    Reports written before these fields existed give what they have."""
    parts = []
    if "gpu" in hw:
        parts.append(f"CUDA {hw.get('cuda')}, cuDNN {hw.get('cudnn')}")
    elif "isa" in hw:
        units = [f for f in hw.get("cpu_flags", []) if f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni")]
        parts.append(f"ISA {hw['isa']}" + (f" ({', '.join(units)})" if units else "")
                     + ("" if hw.get("native_bf16") else ", bf16 emulated"))
        if hw.get("onednn"):
            parts.append(hw["onednn"].replace("Intel(R) MKL-DNN", "oneDNN"))
    if hw.get("gemm_tflops"):
        parts.append("matrix products " + ", ".join(f"{d} {v:.2f}" for d, v in hw["gemm_tflops"].items()) + " TFLOP/s")
    parts.append(f"allocator {hw.get('allocator', 'system')}")
    parts.append(f"{hw.get('torch_threads', '?')} threads")
    return ", ".join(parts)


def markdown_table(report: dict) -> str:
    """The README's performance table from a JSON report: one line per timed row, hardware and versions above."""
    hw, v = report["hardware"], report["versions"]
    where = hw.get("gpu") or hw["cpu"]
    lines = [f"Measured on {where} ({hw['cpu_count']} CPUs{', ' + str(hw['gpu_memory_gb']) + ' GiB' if 'gpu' in hw else ''}; "
             f"{backend_line(hw)}), "
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
