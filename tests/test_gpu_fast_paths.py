"""The CUDA fast paths against the exact path, on the tiny model (``gpu`` marker: skipped without CUDA).

Tolerances (docs/benchmarks/README.md, "Tolerances of the fast paths"), on the [0, 1] depth against the
same pipeline in eager mode: the whole-pipeline CUDA graph 1e-3 max (inductor's own kernels, TF32 off in
both), the RGB encode on a side stream exact (the same kernels, only the stream differs), fp8 0.1 max and
0.01 mean against the unquantised bf16 pipeline, ``--fast`` 0.05 mean against fp32 eager (what bf16 itself
moves, as in ``test_gpu_and_weights.test_cuda_matches_cpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image

from apdepth import ApDepthPipeline
from apdepth.compilation import apply_fast_preset

IMG = random_image(48, 64, seed=21)


@pytest.fixture()
def exact_matmuls():
    """TF32 off in eager and compiled code alike, so that both compute in fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _cuda_pipe(folder, dtype=torch.float32):
    pipe = ApDepthPipeline.from_pretrained(folder, dtype=dtype).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.gpu
@pytest.mark.parametrize("scope", ["pipeline", "modules"])
def test_cuda_graph_compile_equals_eager(tiny_pipeline_dir, exact_matmuls, scope, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    pipe = _cuda_pipe(tiny_pipeline_dir)
    ref = pipe(IMG).depth
    torch._dynamo.reset()
    pipe.compile_models("reduce-overhead", scope=scope)
    first, second = pipe(IMG).depth, pipe(IMG).depth  # the second call replays the captured graph
    np.testing.assert_allclose(first, ref, atol=1e-3)
    np.testing.assert_allclose(second, ref, atol=1e-3)
    other = random_image(48, 64, seed=22)  # a replay reads the new input, not the captured one
    pipe.compile_models(None)
    ref_other = pipe(other).depth
    pipe.compile_models("reduce-overhead", scope=scope)
    np.testing.assert_allclose(pipe(other).depth, ref_other, atol=1e-3)


@pytest.mark.gpu
def test_rgb_encode_on_a_side_stream_equals_serial(tiny_pipeline_dir):
    pipe = _cuda_pipe(tiny_pipeline_dir)
    ref = pipe(IMG).depth
    pipe.overlap_prior = True
    assert pipe._overlaps_prior(torch.zeros(1, 3, 8, 8, device="cuda"))
    np.testing.assert_allclose(pipe(IMG).depth, ref, atol=1e-6)


@pytest.mark.gpu
def test_fp8_stays_near_the_bf16_depth(tiny_pipeline_dir):
    pytest.importorskip("torchao")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("torchao float8 needs compute capability 8.9 or later")
    from apdepth.quantization import quantize_pipeline

    pipe = _cuda_pipe(tiny_pipeline_dir, torch.bfloat16)
    ref = pipe(IMG).depth
    assert quantize_pipeline(pipe, mode="fp8")["unet"] > 0
    diff = np.abs(pipe(IMG).depth - ref)
    assert diff.max() < 0.1 and diff.mean() < 0.01


@pytest.mark.gpu
def test_fast_preset_on_cuda_stays_near_fp32_eager(tiny_pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    ref = _cuda_pipe(tiny_pipeline_dir)(IMG).depth
    pipe = _cuda_pipe(tiny_pipeline_dir, torch.bfloat16)
    torch._dynamo.reset()
    preset = apply_fast_preset(pipe, torch.device("cuda"))
    assert pipe.compiled_scope == "pipeline" and pipe.overlap_prior, preset.describe()
    out = pipe(IMG).depth
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < 0.05
