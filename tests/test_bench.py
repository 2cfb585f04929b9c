"""The speed benchmark: full-size architectures match SD2, timers and memory probes behave, and
`apdepth bench` runs end to end (on the tiny models) and writes its report."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from apdepth.apps.cli import main
from apdepth.benchmark.architectures import SD2_TEXT, SD2_UNET, SD2_VAE
from apdepth.benchmark.runner import BenchConfig, Benchmark, Row
from apdepth.benchmark.timing import PeakMemory, Timing, measure


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_architectures_are_stable_diffusion_2():
    with init_empty_weights():
        unet = UNet2DConditionModel(**SD2_UNET)
        vae = AutoencoderKL(**SD2_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD2_TEXT))
    # SD2's published counts; the 8-channel conv_in adds 4 x 320 x 3 x 3 weights.
    assert _count(unet) == 865_910_724 + 4 * 320 * 9
    assert _count(vae) == 83_653_863
    assert _count(text) == 340_387_840


def test_measure_times_what_it_runs():
    t = measure(lambda: time.sleep(0.02), torch.device("cpu"), repeats=3, warmup=1)
    assert t.n == 3 and t.warmup == 1
    assert 20 <= t.min_ms <= t.median_ms < 200 and t.p10_ms <= t.median_ms <= t.p90_ms


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu"), interval_s=0.001) as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
        time.sleep(0.05)
        del block
    assert mem.delta_mb >= 48


def test_marigold_50x10_extrapolation_formula():
    bench = Benchmark.__new__(Benchmark)
    bench.rows = []
    saved = []
    bench.on_row = lambda b: saved.append(len(b.rows))  # the bench command saves its report here
    one = Row("marigold", "1x1", "fp32", "640x480", 1, Timing(100.0, 100, 100, 100, 3, 1))
    four = Row("marigold", "4x1", "fp32", "640x480", 1, Timing(160.0, 160, 160, 160, 3, 1))
    row = bench._extrapolate_marigold("50x10", "fp32", 50, 10, {(1, 1): one, (4, 1): four})
    assert row.timing.median_ms == pytest.approx(10 * (100 + 49 * 20))  # 20 ms per extra step
    assert "extrapolated" in row.note
    assert saved == [1] and bench.rows == [row]
    # diffusers encodes the image once for the whole ensemble: 30 ms of the 1x1 run is not repeated
    once = bench._extrapolate_marigold("50x10", "fp32", 50, 10, {(1, 1): one, (4, 1): four}, encode_ms=30.0)
    assert once.timing.median_ms == pytest.approx(30 + 10 * (100 - 30 + 49 * 20))
    assert "one encode" in once.note and once.extra["t_step_ms"] == pytest.approx(20)
    # a 4-step run no slower than the 1-step run is noise (a cold first call): no figure rather than a negative one
    slow_one = Row("marigold", "1x1", "fp32", "640x480", 1, Timing(380.0, 380, 380, 380, 1, 0))
    none = bench._extrapolate_marigold("50x10", "fp32", 50, 10, {(1, 1): slow_one, (4, 1): four})
    assert none.timing is None and "not extrapolated" in none.note and none.extra["t_step_ms"] < 0


def test_bench_command_on_tiny_models(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--arch", "tiny", "--device", "cpu", "--res", "48x32", "--large-res", "96x64",
               "--dtypes", "fp32", "--batch-sizes", "1,2", "--repeats", "1", "--warmup", "0",
               "--marigold", "1x1,4x1,50x10", "--train-batch", "2", "--train-res", "48x32", "-o", str(out),
               "--markdown", str(tmp_path / "bench.md"), "--release-res", "64", "--scale-res", "32x24,64x48",
               "--scale-batches", "1,2", "--flop-res", "64x48,128x96"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"hardware", "versions", "settings", "rows"} <= report.keys()
    assert report["versions"]["torch"] == torch.__version__
    assert report["hardware"]["gemm_tflops"]["fp32"] > 0  # the machine's rate, to compare runs across machines
    settings = {(r["scenario"], r["setting"], r["batch"]) for r in report["rows"]}
    for expected in [("stage", "UNet (1 step)", 1), ("apdepth", "end-to-end", 2), ("fast path", "RGB + prior in one VAE call", 1),
                     ("fast path", "classic attention", 1), ("fast path", "VAE tiling on", 1),
                     ("marigold", "Marigold 50 step(s) x 10", 1), ("train", "step: raw inputs (encode every step)", 2),
                     ("train", "step: latent cache", 2), ("train", "step: cache + gradient checkpointing", 2),
                     ("train", "step: cache + fused Adam", 2), ("train", "step: cache + L1 on a 1/4-area crop", 2),
                     ("apdepth", "end-to-end, release default (64 long edge)", 1),
                     ("apdepth", "bare diffusers: encode x2 + UNet + decode", 1), ("apdepth", "bare diffusers + prior", 1),
                     ("marigold", "VAE encode (1 image, once per ensemble)", 1),
                     ("scaling", "end-to-end by resolution", 1), ("scaling", "end-to-end by batch", 2)]:
        assert expected in settings
    rows = {(r["setting"], r["resolution"], r["batch"]): r for r in report["rows"]}
    release = rows[("end-to-end, release default (64 long edge)", "48x32", 1)]
    assert "processed at 64x42" in release["note"]  # 48x32 -> long edge 64 (processing_size)
    bare = rows[("bare diffusers + prior", "48x32", 1)]
    e2e = rows[("end-to-end", "48x32", 1)]["timing"]["median_ms"]
    assert bare["extra"]["e2e_over_bare"] == pytest.approx(e2e / bare["timing"]["median_ms"])
    assert bare["extra"]["glue_ms"] == pytest.approx(e2e - bare["timing"]["median_ms"])
    by_res = [r for r in report["rows"] if r["setting"] == "end-to-end by resolution"]
    assert [r["resolution"] for r in by_res] == ["32x24", "64x48"]
    for r in by_res:
        assert r["extra"]["ms_per_megapixel"] == pytest.approx(r["timing"]["median_ms"] / (r["batch"] * 0 + int(
            r["resolution"].split("x")[0]) * int(r["resolution"].split("x")[1]) / 1e6))
        assert r["peak_mb"] > 0 and "peak_rise_mb" in r["extra"]
    by_batch = [r for r in report["rows"] if r["setting"] == "end-to-end by batch"]
    assert [r["batch"] for r in by_batch] == [1, 2]
    assert by_batch[1]["extra"]["ms_per_image"] == pytest.approx(by_batch[1]["timing"]["median_ms"] / 2)
    assert list(report["flops"]["tflop"]) == ["64x48", "128x96"]
    assert report["flops"]["growth_exponent"]["UNet self-attention"] == pytest.approx(2.0, abs=0.01)
    assert "UNet self-attention" in {t["term"] for t in report["flops"]["superlinear"]}
    marigold = [r for r in report["rows"] if r["setting"].startswith("Marigold")]
    assert all(r["extra"]["times_apdepth"] > 0 for r in marigold)
    table = capsys.readouterr().out
    assert "end-to-end" in table and "x ApDepth" in table
    # Tiny models at 48x32: the CPU goal is named but not judged; the Marigold ratio is.
    goals = {g["goal"]: g for g in report["goals"]}
    cpu = goals["CPU end-to-end, 640x480, DA2-small"]
    assert cpu["met"] is None and "--arch full" in cpu["note"]
    assert isinstance(goals["faster than Marigold 50x10 (fp32)"]["met"], bool)
    assert "goal: CPU end-to-end" in table
    markdown = (tmp_path / "bench.md").read_text()
    assert "| TFLOP per image | 64x48 | 128x96 |" in markdown and "UNet self-attention grows as pixels^2.00" in markdown
    markdown_rows = markdown.split("| TFLOP per image")[0]
    assert markdown_rows.count("\n| ") == len(report["rows"]) + 1  # header + one line per row
    assert "| apdepth | end-to-end | fp32 | 48x32 | 2 |" in markdown
    assert "matrix products fp32 " in markdown.splitlines()[0]
    # --from renders the saved report again without measuring anything
    assert main(["bench", "--from", str(out), "--markdown", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == markdown


def test_goals_are_judged_on_the_right_rows():
    from apdepth.benchmark import goals

    def row(scenario, setting, dtype, batch, ms, **extra):
        return {"scenario": scenario, "setting": setting, "dtype": dtype, "batch": batch,
                "timing": {"median_ms": ms}, "extra": extra, "note": ""}

    rows = [row("apdepth", "end-to-end", "fp32", 1, 13_000.0), row("apdepth", "end-to-end", "fp32", 2, 24_000.0),
            row("apdepth", "end-to-end", "bf16", 1, 2_900.0),
            row("marigold", "Marigold 50 step(s) x 10", "fp32", 1, 3e6, times_apdepth=230.0)]
    cpu = goals(rows, "cpu", BenchConfig(prior="small"))
    assert cpu[0]["measured"] == 2_900.0 and cpu[0]["dtype"] == "bf16" and cpu[0]["met"] is True  # <= 3 s
    rows[2]["timing"]["median_ms"] = 3_100.0
    assert goals(rows, "cpu", BenchConfig(prior="small"))[0]["met"] is False
    assert cpu[1]["measured"] == 230.0 and cpu[1]["met"] is False
    gpu_rows = [row("apdepth", "end-to-end", "bf16", 1, 30.0), row("apdepth", "end-to-end", "bf16", 8, 112.0),
                row("fast path", "torch.compile(whole pipeline, reduce-overhead)", "bf16", 1, 24.0),
                row("fast path", "VAE tiling on", "bf16", 1, 10.0),  # another input size: not a latency
                row("marigold", "Marigold 1 step(s) x 1", "bf16", 1, 25.0, times_apdepth=25.0 / 30.0),
                row("train", "step: cache + checkpointing + fused + bf16", "bf16", 8, 400.0),
                row("train", "step: cache + gradient checkpointing", "fp32", 8, 100.0)]  # fp32: not the goal's
    gpu_rows[3]["resolution"] = "2048x1536"
    gpu = {g["goal"].split(",")[0]: g for g in goals(gpu_rows, "cuda", BenchConfig(prior="large"))}
    b1, b8 = gpu["GPU batch 1"], gpu["GPU per image at batch 8"]
    assert b1["measured"] == 24.0 and b1["met"] is True and "whole pipeline" in b1["note"]  # the compiled row
    assert b8["measured"] == 14.0 and b8["met"] is True  # 112 ms / 8 images <= 15 ms
    m1 = gpu["at most 1.1x Marigold 1 step (bf16)"]
    assert m1["measured"] == pytest.approx(1.2) and m1["met"] is False  # 30 / 25 ms
    train = gpu["stage-2 step"]
    assert train["measured"] == 1600.0 and train["met"] is False and "4 micro-batches of 8" in train["note"]
    cpu_m1 = [g for g in goals(gpu_rows, "cpu", BenchConfig(prior="small")) if "Marigold 1 step" in g["goal"]]
    assert cpu_m1[0]["met"] is None  # a GPU goal
    assert goals(rows[:1], "cpu", BenchConfig(prior="large"))[0]["met"] is None
    # the floor: counted work at the machine's matrix-product rate (6.0 TFLOP at 0.5 TFLOP/s = 12 s)
    floor = goals(rows, "cpu", BenchConfig(prior="small"), {"tflop": {"640x480": {"total": 6.0}}}, {"bf16": 0.5})
    assert "take 12000 ms; 3000 ms needs 2.00 TFLOP/s" in floor[0]["note"]


def test_bench_config_defaults_follow_the_paper():
    cfg = BenchConfig()
    assert cfg.resolution == (480, 640) and (50, 10) in cfg.marigold


@pytest.mark.parametrize("fast", ["checkpointing", "fused"])
def test_training_fast_paths_give_the_plain_step(fast, tmp_path):
    """Gradient checkpointing and fused Adam change speed and memory, not the update."""
    from apdepth.benchmark.training import training_batch
    from apdepth.testing import tiny_pipeline
    from apdepth.training.config import Stage2Config
    from apdepth.training.inputs import TrainModule, encode_inputs
    from apdepth.training.stage2 import Stage2

    def one_step(on: bool) -> dict:
        pipe = tiny_pipeline(tmp_path / fast)
        unet = pipe.unet.requires_grad_(True).train()
        if on and fast == "checkpointing":
            unet.enable_gradient_checkpointing()
            pipe.vae.enable_gradient_checkpointing()
        optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3, fused=(on and fast == "fused") or None)
        inputs = encode_inputs(pipe, training_batch(2, 16, 24, torch.device("cpu")))
        Stage2(Stage2Config(), pipe.vae).losses(TrainModule(pipe), inputs, step=1)["loss"].backward()
        optimizer.step()
        return {k: v.detach().clone() for k, v in unet.state_dict().items()}

    plain, fast_step = one_step(False), one_step(True)
    for k in plain:
        torch.testing.assert_close(fast_step[k], plain[k], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_training_step_follows_fp32(tmp_path):
    """bf16 autocast (the benchmark's and `run.mixed_precision=bf16`'s fast path) changes rounding, not the step:
    the loss agrees to about 1% and the gradient points the same way as in fp32."""
    from apdepth.benchmark.training import training_batch
    from apdepth.testing import tiny_pipeline
    from apdepth.training.config import Stage2Config
    from apdepth.training.inputs import TrainModule, encode_inputs
    from apdepth.training.stage2 import Stage2

    pipe = tiny_pipeline(tmp_path / "bf16")
    unet = pipe.unet.requires_grad_(True).train()
    inputs = encode_inputs(pipe, training_batch(2, 16, 24, torch.device("cpu")))
    stage = Stage2(Stage2Config(), pipe.vae)

    def loss_and_grad(bf16: bool):
        unet.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = stage.losses(TrainModule(pipe), inputs, step=1)["loss"]
        loss.backward()
        return float(loss), torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None])

    (loss32, grad32), (loss16, grad16) = loss_and_grad(False), loss_and_grad(True)
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert grad16.shape == grad32.shape
    assert float(torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)) > 0.98


def test_counted_flops_match_hand_counts():
    """Attention products counted on the meta device equal 4 N^2 C (QK^T and AV) for the VAE decoder's single-head
    mid-block attention; the UNet's self-attention grows with the square of the pixel count, convolutions linearly."""
    from apdepth.benchmark.scaling import growth_exponents, meta_components, stage_flops

    meta = meta_components("full", "small")
    h, w = 480, 640
    f = stage_flops(meta, h, w)
    n, c = (h // 8) * (w // 8), 512
    assert f["decode attention"] == 4 * n * n * c
    assert f["encode x2 attention"] == 2 * 4 * n * n * c  # two images
    # UNet self-attention at 1/8, 1/16, 1/32: 2 down + 3 up transformer blocks per level, channels 320/640/1280;
    # the mid block's one at 1/64 (60x80 latent -> 8x10 cells)
    unet_attn = sum(k * 4 * (n // 4**i) ** 2 * ch for i, (k, ch) in enumerate(((5, 320), (5, 640), (5, 1280))))
    unet_attn += 4 * (8 * 10) ** 2 * 1280
    assert f["UNet self-attention"] == unet_attn
    assert 0.9e12 < f["UNet"] < 1.05e12 and 2.9e12 < f["decode"] < 3.0e12  # ~0.97 and ~2.95 TFLOP
    g = growth_exponents({h * w: f, 4 * h * w: stage_flops(meta, 2 * h, 2 * w)})
    assert g["UNet self-attention"] == pytest.approx(2.0, abs=1e-3) and g["decode attention"] == pytest.approx(2.0)
    assert 1.0 < g["UNet"] < 1.5 and g["prior attention"] > 1.8


def test_other_prior_rows_swap_the_prior_and_put_it_back(monkeypatch):
    """--other-priors: the prior stage and end to end with another DA2 size in the same pipeline (here a tiny
    stand-in for the full-size DA2-large), then the bench's own prior is back."""
    from apdepth.benchmark import architectures, scaling
    from apdepth.diffusion.architectures import tiny_prior

    built = []
    monkeypatch.setattr(architectures, "full_size_prior",
                        lambda size, device, dtype: built.append(size) or tiny_prior().to(device, dtype))
    bench = Benchmark(BenchConfig(arch="tiny", resolution=(32, 48), repeats=1, warmup=0, prior="small"))
    own = bench.pipe.prior
    scaling.other_prior_rows(bench, "fp32", ("small", "large"))
    assert built == ["large"]  # the bench's own size is not timed twice
    assert bench.pipe.prior is own
    assert [(r.scenario, r.setting) for r in bench.rows] == [("stage", "prior (DA2-large)"),
                                                              ("apdepth", "end-to-end with DA2-large")]


def test_other_priors_names_the_sizes(capsys):
    with pytest.raises(SystemExit, match="--other-priors: unknown \\['huge'\\]"):
        main(["bench", "--arch", "tiny", "--device", "cpu", "--other-priors", "huge", "-o", "unused.json"])


@pytest.mark.parametrize(("flags", "line"), [
    ("fpu avx2 fma avx512f avx512_vnni avx512_bf16", "ISA AVX512 (avx512_bf16, avx512_vnni)"),
    ("fpu avx2 fma avx512f amx_bf16 amx_tile amx_int8 avx512_bf16", "ISA AVX512 (amx_bf16, amx_int8, avx512_bf16)"),
    ("fpu avx2 fma", "ISA AVX2, bf16 emulated"),
])
def test_the_report_says_which_kernels_ran(tmp_path, monkeypatch, flags, line):
    """The header names the dispatch ISA, the bf16 / int8 units, oneDNN, the allocator and the threads."""
    from apdepth.benchmark.report import backend_line
    from apdepth.devices import cpu_backend_info

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    isa = "AVX512" if "avx512f" in flags else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    hw = {"cpu_count": 2, "torch_threads": 2, "allocator": "glibc-retain", **cpu_backend_info(str(info))}
    assert hw["native_bf16"] is ("bf16" in flags)
    text = backend_line(hw)
    assert text.startswith(line + ", ") and text.endswith("allocator glibc-retain, 2 threads")
    if torch.backends.mkldnn.is_available():
        assert "oneDNN v" in text
    assert backend_line({"gpu": "H100", "cuda": "12.8", "cudnn": 90100}) == \
        "CUDA 12.8, cuDNN 90100, allocator system, ? threads"


def test_compile_freezing_reaches_inductor(tiny_pipeline_dir, monkeypatch):
    """compile_models(freezing=True) runs the compiled code with inductor's freezing on (weights as constants,
    prepacked for oneDNN on CPUs), which inductor reads from its global config when it compiles, in both
    scopes; without it, freezing stays off. torch.compile is replaced by a recorder: no code is generated."""
    import torch._inductor.config as inductor_config
    from PIL import Image

    from apdepth import ApDepthPipeline

    calls, seen = [], []

    def fake_compile(fn, **kw):
        calls.append(kw)

        def run(*args, **kwargs):
            seen.append(inductor_config.freezing)
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    image = Image.new("RGB", (32, 24), (120, 80, 40))
    for scope in ("pipeline", "modules"):
        pipe.compile_models("max-autotune", scope=scope, cache=False, freezing=True)
        assert calls[-1]["mode"] == "max-autotune" and "options" not in calls[-1]
        pipe(image, processing_resolution=0)
        assert seen and all(seen), scope
        assert inductor_config.freezing is False  # only while the compiled code runs
        seen.clear()
    pipe.compile_models("default", scope="pipeline", cache=False)
    pipe(image, processing_resolution=0)
    assert calls[-1]["mode"] == "default" and seen and not any(seen)


def test_fusion_block_and_profile_split():
    """apdepth.benchmark.fusion times the SD2 VAE decoder's plain resnet blocks: up-block 2 has 256 channels at
    half the image's size; the eager profile splits a call into convolutions and the rest."""
    from apdepth.benchmark.fusion import decoder_resnet, eager_profile

    block, channels, scale = decoder_resnet(2)
    assert (channels, scale) == (256, 2) and block.in_channels == block.out_channels == 256
    x = torch.randn(1, 256, 6, 8)  # [B, C, h, w]
    with torch.no_grad():
        assert block(x, None).shape == x.shape
    split = eager_profile(block, x)
    assert split["conv_ms"] > 0 and split["other_ms"] > 0
    assert split["other_share"] == pytest.approx(split["other_ms"] / (split["conv_ms"] + split["other_ms"]))
