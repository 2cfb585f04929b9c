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

from apdepth.benchmark.architectures import SD2_TEXT, SD2_UNET, SD2_VAE
from apdepth.benchmark.runner import BenchConfig, Benchmark, Row
from apdepth.benchmark.timing import PeakMemory, Timing, measure
from apdepth.cli import main


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


def test_bench_command_on_tiny_models(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--arch", "tiny", "--device", "cpu", "--res", "48x32", "--large-res", "96x64",
               "--dtypes", "fp32", "--batch-sizes", "1,2", "--repeats", "1", "--warmup", "0",
               "--marigold", "1x1,4x1,50x10", "--train-batch", "2", "--train-res", "48x32", "-o", str(out),
               "--markdown", str(tmp_path / "bench.md")])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"hardware", "versions", "settings", "rows"} <= report.keys()
    assert report["versions"]["torch"] == torch.__version__
    settings = {(r["scenario"], r["setting"], r["batch"]) for r in report["rows"]}
    for expected in [("stage", "UNet (1 step)", 1), ("apdepth", "end-to-end", 2), ("fast path", "RGB + prior in one VAE call", 1),
                     ("fast path", "classic attention", 1), ("fast path", "VAE tiling on", 1),
                     ("marigold", "Marigold 50 step(s) x 10", 1), ("train", "step: raw inputs (encode every step)", 2),
                     ("train", "step: latent cache", 2), ("train", "step: cache + gradient checkpointing", 2),
                     ("train", "step: cache + fused Adam", 2)]:
        assert expected in settings
    marigold = [r for r in report["rows"] if r["scenario"] == "marigold"]
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
    assert markdown.count("\n| ") == len(report["rows"]) + 1  # header + one line per row
    assert "| apdepth | end-to-end | fp32 | 48x32 | 2 |" in markdown
    # --from renders the saved report again without measuring anything
    assert main(["bench", "--from", str(out), "--markdown", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == markdown


def test_goals_are_judged_on_the_right_rows():
    from apdepth.benchmark import goals

    def row(scenario, setting, dtype, batch, ms, **extra):
        return {"scenario": scenario, "setting": setting, "dtype": dtype, "batch": batch,
                "timing": {"median_ms": ms}, "extra": extra, "note": ""}

    rows = [row("apdepth", "end-to-end", "fp32", 1, 13_000.0), row("apdepth", "end-to-end", "fp32", 2, 24_000.0),
            row("apdepth", "end-to-end", "bf16", 1, 11_000.0),
            row("marigold", "Marigold 50 step(s) x 10", "fp32", 1, 3e6, times_apdepth=230.0)]
    cpu = goals(rows, "cpu", BenchConfig(prior="small"))
    assert cpu[0]["measured"] == 11_000.0 and cpu[0]["dtype"] == "bf16" and cpu[0]["met"] is True
    assert cpu[1]["measured"] == 230.0 and cpu[1]["met"] is False
    gpu = goals([row("apdepth", "end-to-end", "bf16", 1, 30.0), row("apdepth", "end-to-end", "bf16", 8, 160.0)],
                "cuda", BenchConfig(prior="large"))
    assert gpu[0]["measured"] == 20.0 and gpu[0]["batch"] == 8 and gpu[0]["met"] is True  # 160 ms / 8 images
    assert goals(rows[:1], "cpu", BenchConfig(prior="large"))[0]["met"] is None


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
