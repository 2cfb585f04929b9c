"""`apdepth export` and the onnxruntime / OpenVINO backends, on the embedded demo model at small sizes.

Tolerance: exported fp32 networks reproduce the eager pipeline's [0, 1] depth to 1e-4 (measured: about
2e-6 max, 1e-7 mean, see docs/features.md); fp16 is compared against fp16 eager to 1e-2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from apdepth.apps.cli import main  # noqa: E402
from apdepth.export import compare_backends, example_image, export_onnx, load_exported_pipeline  # noqa: E402
from apdepth.export.components import TorchRunner, networks, pipeline_manifest, stub_pipeline  # noqa: E402
from tests.conftest import random_image  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def dynamic_export(embedded_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "dynamic"
    # 64x128: latents 8x16, multiples of the UNet's up factor (8), so the export traces at 64x136 instead
    manifest = export_onnx(embedded_pipe, folder, 64, 128, dynamic=True)
    return folder, manifest


def test_stub_pipeline_runs_the_same_networks_as_eager(embedded_pipe):
    """The mechanism under every backend: the pipeline with its networks swapped for runner-backed stand-ins
    (here running the same torch modules) gives the eager result exactly."""
    stub = stub_pipeline(TorchRunner(networks(embedded_pipe)), pipeline_manifest(embedded_pipe, torch.float32))
    image = random_image(90, 118, seed=3)
    a = embedded_pipe(image, processing_resolution=0).depth
    b = stub(image, processing_resolution=0).depth
    np.testing.assert_array_equal(a, b)


def test_dynamic_export_matches_eager(embedded_pipe, dynamic_export):
    folder, manifest = dynamic_export
    assert manifest["dynamic"] and manifest["dtype"] == "float32"
    for name, file in manifest["files"].items():
        onnx.checker.check_model(str(folder / file))
        assert name in ("prior", "vae_encoder", "unet", "vae_decoder")
    assert {"vae_encoder", "unet", "vae_decoder"} <= set(manifest["files"])
    # the prior is either an ONNX file or (when its graph cannot change size) a saved torch module
    assert ("prior" in manifest["files"]) != ("prior" in manifest["torch_networks"])
    if "prior" in manifest["torch_networks"]:
        assert (folder / "prior" / "config.json").is_file()
    assert json.loads((folder / "apdepth_onnx.json").read_text())["processing_size"] == [64, 128]
    assert manifest["input_shapes"]["unet"][0] == [2, 8, 8, 17]  # traced at 64x136

    exported = load_exported_pipeline(folder, backend="onnxruntime")
    # the export size, sizes that are not multiples of 8 (padding), odd latents, portrait; a batch of two
    for height, width in [(64, 128), (90, 122), (128, 72), (96, 128)]:
        check = compare_backends(embedded_pipe, exported, height, width)
        assert check["max_abs_diff"] < TOL, (height, width, check)
    images = [random_image(80, 104, seed=s) for s in range(2)]
    a = embedded_pipe(images, processing_resolution=0, batch_size=2).depth
    b = exported(images, processing_resolution=0, batch_size=2).depth
    assert a.shape == b.shape == (2, 80, 104)
    assert np.abs(a - b).max() < TOL
    # the whole call (resize to the processing resolution and back) is the pipeline's own
    image = random_image(150, 200, seed=5)
    a = embedded_pipe(image, processing_resolution=128).depth[0]
    b = exported(image, processing_resolution=128).depth[0]
    assert b.shape == (150, 200) and np.abs(a - b).max() < TOL


def test_openvino_backend(embedded_pipe, dynamic_export):
    pytest.importorskip("openvino")
    exported = load_exported_pipeline(dynamic_export[0], backend="openvino")
    for height, width in [(96, 128), (90, 122)]:
        check = compare_backends(embedded_pipe, exported, height, width)
        assert check["max_abs_diff"] < TOL, (height, width, check)


def test_export_command_fixed_size(embedded_pipe, tmp_path):
    out = tmp_path / "fixed"
    assert main(["export", "-o", str(out), "--height", "64", "--width", "96"]) == 0
    manifest = json.loads((out / "apdepth_onnx.json").read_text())
    assert not manifest["dynamic"] and manifest["torch_networks"] == []
    assert set(manifest["files"]) == {"prior", "vae_encoder", "unet", "vae_decoder"}
    assert manifest["check"]["max_abs_diff"] < TOL  # written by the command's own check
    # the prior's input is the pipeline's choice for 64x96: multiples of 14 above
    assert manifest["input_shapes"]["prior"] == [[1, 3, 70, 98]]
    exported = load_exported_pipeline(out)
    assert compare_backends(embedded_pipe, exported, 64, 96)["max_abs_diff"] < TOL
    with pytest.raises(ValueError) as err:
        exported(example_image(48, 96), processing_resolution=0)
    assert "fixed processing size 64x96" in str(err.value) and "--dynamic" in str(err.value)


def test_predict_backend_matches_torch(dynamic_export, tmp_path):
    folder, _ = dynamic_export
    image = tmp_path / "img.png"
    random_image(75, 100, seed=7).save(image)
    common = [str(image), "--formats", "npy", "--processing-res", "96", "--device", "cpu"]
    assert main(["predict", *common, "-o", str(tmp_path / "torch"), "--model", "embedded"]) == 0
    for backend in ("onnxruntime",):
        assert main(["predict", *common, "-o", str(tmp_path / backend), "--backend", backend,
                     "--onnx", str(folder)]) == 0
        a, b = np.load(tmp_path / "torch" / "img_depth.npy"), np.load(tmp_path / backend / "img_depth.npy")
        assert a.shape == b.shape == (75, 100)
        assert np.abs(a - b).max() < 3e-4  # the torch command runs channels_last on CPUs: float rounding


def test_predict_backend_errors(tmp_path, capsys):
    image = tmp_path / "img.png"
    random_image(32, 32).save(image)
    cases = [(["--backend", "onnxruntime"], "--onnx DIR"),
             (["--backend", "onnxruntime", "--onnx", str(tmp_path)], "apdepth_onnx.json"),
             (["--backend", "onnxruntime", "--onnx", str(tmp_path), "--vae-tiling"], "--vae-tiling"),
             (["--onnx", str(tmp_path)], "--onnx needs --backend")]
    for flags, message in cases:
        assert main(["predict", str(image), "-o", str(tmp_path / "o"), *flags]) == 2  # a usage error
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_fp16_export(tmp_path):
    """fp16 graphs: onnxruntime's CPU build runs them here (slowly); compared with fp16 eager torch."""
    from apdepth import ApDepthPipeline
    from apdepth.embedded import embedded_model_path

    pipe16 = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float16)
    manifest = export_onnx(pipe16, tmp_path / "fp16", 64, 96)
    assert manifest["dtype"] == "float16"
    model = onnx.load(str(tmp_path / "fp16" / "unet.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    check = compare_backends(pipe16, load_exported_pipeline(tmp_path / "fp16"), 64, 96)
    assert check["max_abs_diff"] < 1e-2 and check["min_correlation"] > 0.999
