"""Input conversion: every image form users hand us becomes float [3, H, W] in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from apdepth.image_utils import colorize_depth, depth_to_uint16, to_rgb_images


def test_uint16_grayscale_png_uses_the_full_range(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    (img,) = to_rgb_images(Image.open(tmp_path / "g16.png"))
    assert img.pixels.shape == (3, 2, 2) and img.bits is None
    torch.testing.assert_close(img.pixels[0], torch.from_numpy(arr / 65535.0).float())
    torch.testing.assert_close(img.pixels[1], img.pixels[0])


def test_rgba_drops_alpha_and_palette_and_gray_convert():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red
    (img,) = to_rgb_images(Image.fromarray(rgba, "RGBA"))
    torch.testing.assert_close(img.pixels[0], torch.full((2, 3), 200 / 255))
    assert img.bits == 8

    gray = Image.fromarray(np.full((4, 5), 51, dtype=np.uint8), "L")
    (img,) = to_rgb_images(gray)
    torch.testing.assert_close(img.pixels, torch.full((3, 4, 5), 0.2))

    rgb = Image.fromarray((np.arange(60).reshape(4, 5, 3) * 4).astype(np.uint8))
    pal = rgb.convert("P")
    (a,), (b,) = to_rgb_images(pal), to_rgb_images(pal.convert("RGB"))
    torch.testing.assert_close(a.pixels, b.pixels)


def test_numpy_and_tensor_forms():
    arr = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    ref = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    for x in (arr, arr[None], torch.from_numpy(arr).permute(2, 0, 1), arr.astype(np.float64) / 255):
        imgs = to_rgb_images(x)
        assert len(imgs) == 1
        torch.testing.assert_close(imgs[0].pixels, ref)
    assert len(to_rgb_images([arr, arr[..., 0]])) == 2
    assert len(to_rgb_images(torch.rand(4, 3, 5, 5))) == 4
    (u16,) = to_rgb_images(np.full((2, 2), 65535, dtype=np.uint16))
    torch.testing.assert_close(u16.pixels, torch.ones(3, 2, 2))


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (np.full((4, 4, 3), 2.0, dtype=np.float32), ValueError, "must lie in [0, 1]"),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError, "C in 1/3/4"),
        (np.zeros((4, 4), dtype=bool), TypeError, "Unsupported numpy image dtype"),
        ("image.png", TypeError, "Unsupported image type str"),
        ([], ValueError, "empty list"),
    ],
)
def test_bad_inputs_are_explained(bad, error, message):
    with pytest.raises(error) as err:
        to_rgb_images(bad)
    assert message in str(err.value)


def test_colorize_and_uint16():
    depth = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    img = colorize_depth(depth, "gray")
    np.testing.assert_array_equal(np.asarray(img)[0, :, 0], [0, 128, 255])  # 256-entry LUT: 0.5 -> 128
    np.testing.assert_array_equal(depth_to_uint16(np.array([0.0, 0.5, 1.0, 1.5])), [0, 32768, 65535, 65535])
    with pytest.raises(ValueError, match="Unknown matplotlib colormap"):
        colorize_depth(depth, "no-such-map")
