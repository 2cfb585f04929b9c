"""Float and metric depth files (`--formats exr,tiff32,png16mm`), read back by independent readers:
FFmpeg's EXR and PNG decoders (through PyAV), tifffile, and a hand-written PNG chunk parser."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from conftest import random_image

from apdepth.apps.cli import main
from apdepth.depth_io import MM_SCALE, read_depth, save_exr, save_png16_mm, save_tiff32

av = pytest.importorskip("av")
tifffile = pytest.importorskip("tifffile")
pytest.importorskip("OpenEXR")


def ffmpeg_decode(path, pixel_format: str) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format=pixel_format)


def png_text_chunks(path) -> dict[str, str]:
    """tEXt chunks of a PNG, parsed by hand (with CRC check)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, text = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            text[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return text


def sample_depth() -> np.ndarray:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0, 1, (23, 31)).astype(np.float32)
    depth[0, :4] = [0.0, 1.0, np.float32(1e-7), np.float32(0.1)]  # values that 16 bits would lose
    return depth


def test_exr_is_lossless_float32(tmp_path):
    depth = sample_depth()
    save_exr(tmp_path / "d.exr", depth, {"apdepth_depth": "test"})
    back = ffmpeg_decode(tmp_path / "d.exr", "grayf32le")
    assert back.dtype == np.float32 and back.shape == depth.shape
    np.testing.assert_array_equal(back, depth)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.exr"), depth)
    assert not list(tmp_path.glob(".*tmp*"))


def test_tiff32_is_lossless_float32(tmp_path):
    depth = sample_depth()
    save_tiff32(tmp_path / "d.tif", depth, description="hello")
    back = tifffile.imread(tmp_path / "d.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, depth)
    with tifffile.TiffFile(tmp_path / "d.tif") as tif:
        page = tif.pages[0]
        assert page.compression.name in ("ADOBE_DEFLATE", "DEFLATE") and page.description == "hello"
    np.testing.assert_array_equal(read_depth(tmp_path / "d.tif"), depth)


def test_png16_mm_values_scale_and_invalid(tmp_path):
    depth = np.array([[1.0, 2.5, 0.0004, 70.0], [np.nan, -1.0, 0.0, 12.3456]], dtype=np.float32)
    info = save_png16_mm(tmp_path / "m.png", depth)
    # by hand: metres -> millimetres, rounded; < 0.5 mm but valid -> 1; beyond 65.535 m -> 65535; invalid -> 0
    expected = np.array([[1000, 2500, 1, 65535], [0, 0, 0, 12346]], dtype=np.uint16)
    np.testing.assert_array_equal(ffmpeg_decode(tmp_path / "m.png", "gray16le"), expected)
    assert info == {"depth_scale": 0.001, "clipped": 1, "invalid": 3}
    text = png_text_chunks(tmp_path / "m.png")
    assert float(text["depth_scale"]) == MM_SCALE and "0 = invalid" in text["depth_unit"]
    np.testing.assert_allclose(read_depth(tmp_path / "m.png"), expected * 0.001, rtol=1e-6)


def test_read_depth_errors(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "plain16.png")
    with pytest.raises(ValueError) as err:
        read_depth(tmp_path / "plain16.png")
    assert "depth_scale" in str(err.value)
    np.testing.assert_array_equal(read_depth(tmp_path / "plain16.png", scale=0.5), np.zeros((4, 4)))
    with pytest.raises(ValueError) as err:
        save_tiff32(tmp_path / "x.tif", np.zeros((2, 3, 3)))
    assert "2-D" in str(err.value)


def test_predict_writes_float_and_metric_formats(tiny_pipeline_dir, tmp_path):
    image = tmp_path / "img.png"
    random_image(40, 52, seed=2).save(image)
    out = tmp_path / "out"
    assert main(["predict", str(image), "-o", str(out), "--model", tiny_pipeline_dir, "--device", "cpu",
                 "--formats", "npy,exr,tiff32"]) == 0
    depth = np.load(out / "img_depth.npy")
    np.testing.assert_array_equal(ffmpeg_decode(out / "img_depth.exr", "grayf32le"), depth)
    np.testing.assert_array_equal(tifffile.imread(out / "img_depth.tif"), depth)

    # sparse depths in metres consistent with metric = 3 * depth + 1: the metric outputs in every format
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, 52, 40), rng.integers(0, 40, 40)
    np.savetxt(tmp_path / "img_sparse.csv", np.stack([u, v, 3.0 * depth[v, u] + 1.0], axis=1), delimiter=",",
               header="u,v,depth", comments="")
    out2 = tmp_path / "metric"
    assert main(["predict", str(image), "-o", str(out2), "--model", tiny_pipeline_dir, "--device", "cpu",
                 "--formats", "npy,exr,tiff32,png16mm", "--sparse-depth", str(tmp_path / "img_sparse.csv")]) == 0
    metric = np.load(out2 / "img_depth_metric.npy")
    np.testing.assert_allclose(metric, 3.0 * depth + 1.0, atol=1e-3)
    np.testing.assert_array_equal(ffmpeg_decode(out2 / "img_depth_metric.exr", "grayf32le"), metric)
    np.testing.assert_array_equal(tifffile.imread(out2 / "img_depth_metric.tif"), metric)
    mm = ffmpeg_decode(out2 / "img_depth_metric_mm.png", "gray16le")
    np.testing.assert_array_equal(mm, np.round(metric.astype(np.float64) * 1000).astype(np.uint16))
    record = json.loads((out2 / "img_depth_metric.json").read_text())
    assert record["png16mm"] == {"file": "img_depth_metric_mm.png", "depth_scale": 0.001, "clipped": 0,
                                 "invalid": 0}
    assert float(png_text_chunks(out2 / "img_depth_metric_mm.png")["depth_scale"]) == 0.001


def test_png16mm_needs_sparse_depth(tmp_path, capsys):
    image = tmp_path / "img.png"
    random_image(16, 16).save(image)
    assert main(["predict", str(image), "-o", str(tmp_path / "o"), "--formats", "png16mm"]) == 2  # a usage error
    assert "--formats png16mm writes metric depth: it needs --sparse-depth" in capsys.readouterr().err
