"""int8 weight-only quantisation (apdepth.quantization, torchao): the weights really are int8 with per-row
scales, the depth stays near the float pipeline's, unsupported requests fail clearly, and `apdepth predict
--quantize int8` runs end to end. Skipped without the optional library (the `quant` extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image

from apdepth.quantization import (
    QuantizationUnavailable,
    check_request,
    is_quantized,
    quantize_module,
    quantize_pipeline,
    quantized_linear_names,
    torchao_available,
)

needs_torchao = pytest.mark.skipif(not torchao_available(),
                                   reason='torchao is not installed (pip install "apdepth[quant]")')

# The tiny untrained pipeline at 64x48 (torchao 0.18, CPU, fp32), the difference from the float depth in its
# [0, 1] range over five seeds, measured with UNet + VAE and with the prior too: int8-weight max |d| 0.006-0.012,
# mean 0.0005-0.0008; int8-dynamic max 0.010-0.028, mean 0.0010-0.0015. Allowed: about twice the largest
# (hand-chosen). The embedded model measures less (docs/benchmarks/README.md, "int8 quantisation").
TOL = {"int8-weight": (0.03, 0.002), "int8-dynamic": (0.06, 0.004)}  # (max, mean)
MAX_ABS_TOL, MEAN_ABS_TOL = TOL["int8-weight"]


def _fresh(tiny_pipeline_dir):
    """A pipeline of its own: quantisation is in place, the session's `pipe` must stay float."""
    from apdepth import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _depth(pipe, image) -> torch.Tensor:
    with torch.no_grad():
        return pipe(image, output_type="pt").prediction  # [1, 1, H, W]


@needs_torchao
def test_weights_are_int8_with_per_row_scales(tiny_pipeline_dir):
    pipe = _fresh(tiny_pipeline_dir)
    linears = {name: m.weight.detach().clone() for name, m in pipe.unet.named_modules()
               if isinstance(m, torch.nn.Linear)}
    counts = quantize_pipeline(pipe)  # default: UNet and VAE
    assert counts["unet"] == len(linears) > 0 and counts["vae"] > 0
    assert sorted(quantized_linear_names(pipe.unet)) == sorted(linears)
    assert quantized_linear_names(pipe.prior) == []  # not asked for
    for name, original in linears.items():
        weight = pipe.unet.get_submodule(name).weight
        assert is_quantized(weight) and weight.qdata.dtype == torch.int8 and weight.qdata.shape == original.shape
        scale = weight.scale.float().reshape(-1, 1)  # [out, 1]: one scale per output row
        # symmetric per row: the row's largest |w| maps to the int8 range's end, every weight within half a step
        row_max = original.abs().amax(dim=1, keepdim=True)
        assert torch.all(row_max / scale >= 127 - 1e-3) and torch.all(row_max / scale <= 128 + 1e-3)
        assert torch.all((weight.qdata.float() * scale - original).abs() <= scale / 2 + 1e-6)
    # convolutions stay float (torchao has no int8 convolution)
    conv = next(m for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.dtype == torch.float32 and not is_quantized(conv.weight)


@needs_torchao
@pytest.mark.parametrize("mode", ["int8", "int8-dynamic"])
def test_quantised_depth_stays_near_the_float_depth(tiny_pipeline_dir, mode):
    pipe = _fresh(tiny_pipeline_dir)
    image = random_image(48, 64, seed=5)
    exact = _depth(pipe, image)
    counts = quantize_pipeline(pipe, components=("unet", "vae", "prior"), mode=mode)
    assert counts["prior"] == len(quantized_linear_names(pipe.prior)) > 0
    weight = next(m.weight for m in pipe.unet.modules() if isinstance(m, torch.nn.Linear))
    # int8-dynamic quantises the activations at each call too: the weight says how
    assert (weight.act_quant_kwargs is not None) == (mode == "int8-dynamic")
    approx = _depth(pipe, image)
    diff = (approx - exact).abs()
    max_tol, mean_tol = TOL["int8-weight" if mode == "int8" else mode]
    assert 0 < float(diff.max()) <= max_tol  # not 0: the int8 weights are what ran
    assert float(diff.mean()) <= mean_tol
    assert float(approx.min()) >= 0 and float(approx.max()) <= 1


def test_unsupported_requests_are_explained(tiny_pipeline_dir):
    with pytest.raises(ValueError, match="int4.*choose among int8-weight, int8-dynamic, fp8-dynamic, int8, fp8"):
        check_request("int4", ("unet",))
    with pytest.raises(ValueError, match="text_encoder.*unet, vae, prior"):
        check_request("int8", ("unet", "text_encoder"))
    with pytest.raises(ValueError, match="choose one or more"):
        check_request("int8", ())
    assert check_request("int8", ["vae"]) == ("int8-weight", ("vae",))
    with pytest.raises(TypeError, match="torch ApDepthPipeline"):
        quantize_pipeline(object())
    pipe = _fresh(tiny_pipeline_dir)
    pipe.prior = None
    with pytest.raises(ValueError, match="no prior"):
        quantize_pipeline(pipe, components=("unet", "prior"))
    assert quantized_linear_names(pipe.unet) == []  # checks run before any weight changes
    with torch.device("meta"):
        meta = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="meta device"):
        quantize_module(meta)


@needs_torchao
def test_a_second_quantisation_is_refused(tiny_pipeline_dir):
    pipe = _fresh(tiny_pipeline_dir)
    quantize_pipeline(pipe, components=("vae",))
    with pytest.raises(ValueError, match="vae: already quantised"):
        quantize_pipeline(pipe, components=("unet", "vae"))
    assert quantized_linear_names(pipe.unet) == []


def test_missing_torchao_names_the_extra(monkeypatch, tiny_pipeline_dir):
    import builtins

    real_import = builtins.__import__

    def no_torchao(name, *args, **kwargs):
        if name.startswith("torchao"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchao)
    with pytest.raises(QuantizationUnavailable, match=r"apdepth\[quant\]"):
        quantize_pipeline(_fresh(tiny_pipeline_dir))


def test_predict_flag_without_torchao_is_a_usage_error(monkeypatch, tmp_path, capsys):
    from apdepth import quantization
    from apdepth.apps.cli import main

    monkeypatch.setattr(quantization, "torchao_available", lambda: False)
    random_image(24, 32).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--quantize", "int8"]) == 2
    assert "apdepth[quant]" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--quantize", "int8",
                 "--backend", "onnxruntime", "--onnx", str(tmp_path)]) == 2
    assert "--backend onnxruntime runs an export" in capsys.readouterr().err


@needs_torchao
def test_predict_quantize_end_to_end(tiny_pipeline_dir, tmp_path):
    from apdepth.apps.cli import main

    random_image(48, 64, seed=5).save(tmp_path / "a.png")
    args = [str(tmp_path / "a.png"), "--model", tiny_pipeline_dir, "--device", "cpu", "--formats", "npy"]
    assert main(["predict", *args, "-o", str(tmp_path / "float")]) == 0
    exact = np.load(tmp_path / "float" / "a_depth.npy")
    for flag, mode in (("int8", "int8-weight"), ("int8-dynamic", "int8-dynamic")):
        assert main(["predict", *args, "-o", str(tmp_path / flag), "--quantize", flag]) == 0
        approx = np.load(tmp_path / flag / "a_depth.npy")
        assert approx.shape == exact.shape == (48, 64)
        diff = np.abs(approx - exact)
        assert 0 < diff.max() <= TOL[mode][0] and diff.mean() <= TOL[mode][1]


def test_bench_rows_off_and_on(monkeypatch):
    """`apdepth bench`'s fast-path pair, and the pipeline's float weights back afterwards; without torchao one
    row says why."""
    from apdepth.benchmark import quantization as bq
    from apdepth.benchmark.runner import BenchConfig, Benchmark

    bench = Benchmark(BenchConfig(arch="tiny", resolution=(48, 64), repeats=1, warmup=0))
    before = {name: p for name, p in bench.pipe.unet.named_parameters()}
    if torchao_available():
        bq.int8_rows(bench, "fp32")
        off, *on = bench.rows
        assert [r.setting for r in bench.rows] == [bq.INT8_OFF, *bq.INT8_ON.values()]
        for row, (max_tol, mean_tol) in zip(on, TOL.values()):
            assert row.timing.n == off.timing.n == 1
            assert 0 < row.extra["max_abs"] <= max_tol and row.extra["mean_abs"] <= mean_tol
        assert dict(bench.pipe.unet.named_parameters()) == before  # the same Parameter objects, float again
        assert quantized_linear_names(bench.pipe.unet) == []
        bench.rows.clear()
    monkeypatch.setattr(bq, "torchao_available", lambda: False)
    bq.int8_rows(bench, "fp32")
    (row,) = bench.rows
    assert row.timing is None and "apdepth[quant]" in row.note
