"""The whole-pipeline compiled region, the compile cache, the RGB encode beside the prior, fp8's requirement and
``--fast``: each gives the eager output within float tolerance, or says why it cannot run here."""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import pytest
import torch
from conftest import random_image

from apdepth import ApDepthPipeline
from apdepth.compilation import apply_fast_preset, default_compile_cache_dir, enable_compile_cache
from apdepth.diffusion import decode_depth

IMG = random_image(48, 64, seed=11)


@pytest.fixture()
def fresh(tiny_pipeline_dir):
    pipe = ApDepthPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def cache_env(monkeypatch, tmp_path):
    """No user-set inductor cache folder, a private home for the default one."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("APDEPTH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_one_region_equals_the_steps_and_the_side_stream_is_cuda_only(fresh):
    """The compiled region (_forward: prior, padding, encodes, UNet, decode, clamp) is the steps composed as
    before, exactly; the RGB latent handed in (as the side stream does on CUDA) gives the same condition; on
    the CPU, overlap_prior changes nothing."""
    rgb = torch.rand(1, 3, 45, 61) * 2 - 1  # not multiples of 8: both size modes pad or stretch
    with torch.no_grad():
        for size_mode in ("release", "pad"):
            depth, prior = fresh._run_forward(rgb, None, size_mode)
            np.testing.assert_array_equal(prior, fresh.run_prior(rgb))
            np.testing.assert_array_equal(depth, fresh._predict_raw(rgb, prior, size_mode))
        padded = torch.nn.functional.pad(rgb, (0, 3, 0, 3), mode="replicate")
        prior = torch.nn.functional.pad(fresh.run_prior(rgb), (0, 3, 0, 3), mode="replicate")
        steps = fresh.encode_condition(padded, prior)
        from apdepth.diffusion import encode_latent

        given = fresh.encode_condition(padded, prior, rgb_latent=encode_latent(fresh.vae, padded))
        np.testing.assert_array_equal(given, steps)
        latent = fresh.predict_latent(steps)
        by_hand = ((decode_depth(fresh.vae, latent).float().clamp(-1, 1) + 1) / 2)[:, :, :45, :61]
        np.testing.assert_array_equal(fresh._run_forward(rgb, None, "pad")[0], by_hand)
    ref = fresh(IMG).depth
    fresh.overlap_prior = True
    assert not fresh._overlaps_prior(torch.zeros(1, 3, 8, 8))  # CUDA only
    np.testing.assert_array_equal(fresh(IMG).depth, ref)


def test_whole_pipeline_compile_is_one_graph_and_equals_eager(fresh, cache_env):
    """Traced by dynamo as one graph from the prior to the clamp (no graph break, so reduce-overhead captures
    one CUDA graph), run without code generation (a counting backend): the depth equals eager's."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    ref = fresh(IMG).depth
    fresh.set_empty_text_embedding(None)  # computed at the first compiled call, outside the region
    torch._dynamo.reset()
    fresh.compile_models("default", scope="pipeline", backend=counting)
    assert fresh.compiled_scope == "pipeline"
    assert fresh.unet._compiled_call_impl is None  # one region, not per-module ones
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-6)
    assert len(graphs) == 1
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-6)
    assert len(graphs) == 1  # same size: no recompilation
    fresh.compile_models(None)
    assert fresh.compiled_scope is None
    np.testing.assert_array_equal(fresh(IMG).depth, ref)
    fresh.compile_models("default", backend=counting)
    assert fresh.compiled_scope == "modules"
    with pytest.raises(ValueError, match="scope"):
        fresh.compile_models("default", scope="everything")
    with pytest.raises(ValueError, match="mode"):
        fresh.compile_models("fastest")


@pytest.mark.slow
def test_whole_pipeline_inductor_equals_eager_and_fills_the_cache(fresh, cache_env):
    """Inductor on the CPU (minutes on 2 cores): the compiled region's depth equals eager's within float
    tolerance, and the compiled artefacts land in the per-user cache folder."""
    ref = fresh(IMG).depth
    fresh.compile_models("default", scope="pipeline")
    folder = default_compile_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-4)
    assert any(folder.rglob("*")), "nothing cached"


@pytest.mark.slow
def test_frozen_weights_compile_equals_eager(fresh, cache_env):
    """Inductor freezing on the CPU (weights as constants, prepacked for oneDNN): the depth equals eager's
    within float tolerance, in fp32 and in bf16 against bf16 eager."""
    ref = fresh(IMG).depth
    torch._dynamo.reset()
    fresh.compile_models("default", scope="pipeline", freezing=True)
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-4)
    fresh.compile_models(None)
    fresh.to(dtype=torch.bfloat16)
    ref16 = fresh(IMG).depth
    torch._dynamo.reset()
    fresh.compile_models("default", scope="pipeline", freezing=True)
    assert np.abs(fresh(IMG).depth - ref16).mean() < 0.01


def test_freezing_makes_the_weights_constants_of_the_generated_code(cache_env):
    """with_inductor_freezing: the generated code holds the weights as frozen constants (on CPUs the
    convolution prepacked for oneDNN) and computes what eager does. A small GroupNorm -> SiLU -> conv block,
    compiled for real (seconds)."""
    from torch._inductor.utils import run_and_get_code

    from apdepth.compilation import with_inductor_freezing

    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.GroupNorm(4, 16), torch.nn.SiLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
    block = block.eval().requires_grad_(False)
    x = torch.randn(1, 16, 12, 12)  # [B, C, h, w]
    torch._dynamo.reset()
    with torch.no_grad():
        out, code = run_and_get_code(with_inductor_freezing(torch.compile(block)), x)
        torch.testing.assert_close(out, block(x), atol=1e-5, rtol=1e-5)
    assert "_frozen_param" in "\n".join(code)
    torch._dynamo.reset()


def test_compile_cache_folder(cache_env, monkeypatch):
    assert default_compile_cache_dir() == cache_env / "xdg" / "apdepth" / "inductor"
    assert enable_compile_cache() == str(cache_env / "xdg" / "apdepth" / "inductor")
    assert (cache_env / "xdg" / "apdepth" / "inductor").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache_env / "mine"))  # the user's choice wins
    assert enable_compile_cache() == str(cache_env / "mine")
    monkeypatch.setenv("APDEPTH_CACHE_DIR", str(cache_env / "ap"))
    assert default_compile_cache_dir() == cache_env / "ap" / "inductor"


def test_fp8_names_its_requirement_here(fresh):
    """torchao float8 needs CUDA compute capability >= 8.9: on the CPU the error says so, before torchao is
    imported (so it holds with or without the quant extra) and before any weight changes."""
    from apdepth.quantization import check_request, quantize_pipeline

    assert check_request("fp8", ("unet",)) == ("fp8-dynamic", ("unet",))
    weight = fresh.unet.conv_in.weight.clone()
    with pytest.raises(ValueError, match=r"compute capability 8\.9 or later.*on cpu"):
        quantize_pipeline(fresh, mode="fp8")
    assert torch.equal(fresh.unet.conv_in.weight, weight)


def test_fast_preset_sets_sdpa_and_says_what_it_set(fresh):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    fresh.unet.set_attn_processor(AttnProcessor())
    ref = fresh(IMG).depth
    preset = apply_fast_preset(fresh, "cpu", compile_mode=None)
    assert all(type(p) is AttnProcessor2_0 for p in fresh.unet.attn_processors.values())
    assert "SDPA attention" in preset.settings and "channels_last" in preset.settings
    assert fresh.overlap_prior is False and fresh.compiled_scope is None  # CPU: no side stream
    np.testing.assert_allclose(fresh(IMG).depth, ref, atol=1e-5)
    assert preset.describe().startswith("--fast: dtype float32")


def _parser():
    from apdepth.apps.commands import common

    parser = argparse.ArgumentParser()
    common.add_model_arguments(parser)
    common.add_fast_argument(parser)
    return parser


def test_fast_flag_of_the_command_line(monkeypatch, caplog, cache_env):
    """--fast: --dtype auto unless a dtype is named, the rest of the preset, and one line saying what it set;
    a named --compile wins over the device's choice and compiles the whole pipeline."""
    import apdepth.devices as devices
    from apdepth.apps.commands import common

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    parser = _parser()
    base = ["--model", "embedded", "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="apdepth.apps.commands.common"):
        pipe = common.load_pipeline(parser.parse_args([*base, "--fast"]))
    assert pipe.unet.dtype == torch.bfloat16
    assert "--fast: dtype bfloat16 (not fp32: the depth moves beyond float tolerance" in caplog.text
    assert "channels_last, SDPA attention" in caplog.text
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    pipe = common.load_pipeline(parser.parse_args([*base, "--fast", "--dtype", "fp32", "--memory-format",
                                                   "contiguous"]))
    assert pipe.unet.dtype == torch.float32
    assert pipe.unet.conv_in.weight.is_contiguous()
    assert common.load_pipeline(parser.parse_args(base)).unet.dtype == torch.float32  # no --fast: fp32
    pipe = common.load_pipeline(parser.parse_args([*base, "--fast", "--compile"]))
    assert pipe.compiled_scope == "pipeline"
    pipe = common.load_pipeline(parser.parse_args([*base, "--compile", "--compile-scope", "pipeline"]))
    assert pipe.compiled_scope == "pipeline"


def test_quantize_fp8_on_the_cpu_is_a_usage_error(capsys, tmp_path):
    from apdepth.apps.cli import main

    assert main(["predict", "x.png", "-o", str(tmp_path / "out"), "--quantize", "fp8", "--device", "cpu"]) == 2
    assert "compute capability >= 8.9" in capsys.readouterr().err
    assert main(["predict", "x.png", "-o", str(tmp_path / "out"), "--fast", "--backend", "onnxruntime"]) == 2
    assert "--fast sets up the torch pipeline" in capsys.readouterr().err


def test_bench_compile_and_fast_rows(monkeypatch):
    """The bench's compile rows (UNet + VAE, whole pipeline) and --fast off / on, each with its depth's difference
    from fp32 eager; torch.compile's eager backend stands in for inductor (minutes here)."""
    import functools

    from apdepth.benchmark.runner import BenchConfig, Benchmark

    original = ApDepthPipeline.compile_models
    monkeypatch.setattr(ApDepthPipeline, "compile_models", functools.partialmethod(original, backend="eager"))
    bench = Benchmark(BenchConfig(arch="tiny", resolution=(32, 48), dtypes=("fp32",), repeats=1, warmup=0))
    bench.compiled("fp32", "default")
    rows = {r.setting: r for r in bench.rows}
    from apdepth.devices import auto_dtype

    fast_dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}[auto_dtype(torch.device("cpu"))]
    assert list(rows) == ["torch.compile(UNet + VAE, default)", "torch.compile(whole pipeline, default)",
                          "--fast off (fp32 eager)", f"--fast ({fast_dtype}, compile none)"]  # CPU: no compile
    for setting in ("torch.compile(UNet + VAE, default)", "torch.compile(whole pipeline, default)"):
        assert rows[setting].timing is not None and rows[setting].extra["max_abs"] < 1e-5, rows[setting].note
    assert bench.pipe.compiled_scope is None and bench.pipe.overlap_prior is False  # restored


def test_rgb_encode_beside_the_prior_follows_the_stream_protocol(fresh, monkeypatch):
    """The CUDA side-stream path run on the CPU with stand-in streams (no GPU here; the real one is unverified
    on this machine): the side stream waits for the current one before the RGB encode, the RGB encode is issued
    on it before the prior runs, the current stream waits for it before the latent is used, each tensor is
    recorded on the stream that reads it, and the depth is the one-stream depth exactly."""
    events = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def wait_stream(self, other):
            events.append(f"{self.name} waits {other.name}")

    main, side = Stream("main"), Stream("side")
    current = [main]

    class StreamContext:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            current.append(self.stream)

        def __exit__(self, *exc):
            current.pop()

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: side)
    monkeypatch.setattr(torch.cuda, "stream", StreamContext)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: events.append(f"{tuple(t.shape)} on {s.name}"),
                        raising=False)
    import apdepth.pipeline as pipeline_module

    encode = pipeline_module.encode_latent

    def spy_encode(vae, x):
        events.append(f"encode {x.shape[0]}x{x.shape[1]} on {current[-1].name}")
        return encode(vae, x)

    monkeypatch.setattr(pipeline_module, "encode_latent", spy_encode)
    prior_forward = fresh.prior.forward
    monkeypatch.setattr(fresh.prior, "forward", lambda x: events.append(f"prior on {current[-1].name}")
                        or prior_forward(x))
    rgb = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        ref, _ = fresh._forward(rgb, None, "release")
        events.clear()
        fresh.overlap_prior = True
        monkeypatch.setattr(fresh, "_overlaps_prior", lambda x: True)  # as on CUDA
        depth, _ = fresh._forward(rgb, None, "release")
    assert events == ["side waits main", "encode 1x3 on side", "(1, 3, 48, 64) on side", "prior on main",
                      "main waits side", "(1, 4, 6, 8) on main", "encode 1x3 on main"]
    np.testing.assert_array_equal(depth, ref)
