"""Point clouds: intrinsics (flag, fov, EXIF), back-projection to known points, flying pixels, PLY files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from apdepth.postprocessing.pointcloud import (
    backproject,
    depth_to_ply,
    flying_pixel_mask,
    focal_from_exif,
    focal_from_fov,
    resolve_focal,
    write_ply,
)


def read_ply(path):
    """A minimal independent PLY reader: header lines and the vertex table."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    props = [line.split() for line in header if line.startswith("property")]
    dtype = [(name, {"float": "<f4", "uchar": "u1"}[kind]) for _, kind, name in props]
    if header[1] == "format binary_little_endian 1.0":
        assert len(raw) - end == count * np.dtype(dtype).itemsize  # nothing missing, nothing extra
        data = np.frombuffer(raw[end:], dtype=dtype, count=count)
    else:
        rows = np.loadtxt(raw[end:].decode().splitlines(), ndmin=2)
        assert rows.shape == (count, len(props))
        data = np.empty(count, dtype=dtype)
        for i, (name, _) in enumerate(dtype):
            data[name] = rows[:, i]
    return header, data


def test_focal_from_fov_and_exif(tmp_path):
    assert focal_from_fov(640, 480, 90.0) == pytest.approx(320.0)  # tan(45) = 1
    assert focal_from_fov(640, 480, 60.0, axis="vertical") == pytest.approx(240 / math.tan(math.radians(30)))
    with pytest.raises(ValueError) as e:
        focal_from_fov(640, 480, 190)
    assert "190" in str(e.value)

    img = Image.new("RGB", (300, 400), (10, 20, 30))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm: a phone's main camera
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    from apdepth.io import read_image

    loaded = read_image(tmp_path / "phone.jpg")
    expected = 26 * math.hypot(300, 400) / math.hypot(36, 24)  # 35 mm equivalent via the diagonal
    assert focal_from_exif(loaded) == pytest.approx(expected)
    assert focal_from_exif(loaded, 150, 200) == pytest.approx(expected / 2)  # for a half-size depth map
    assert resolve_focal(loaded, 300, 400) == (pytest.approx(expected), "EXIF focal length")
    assert resolve_focal(loaded, 150, 200, focal=500.0)[0] == pytest.approx(250.0)  # input pixels -> depth pixels
    assert focal_from_exif(Image.new("RGB", (8, 8))) is None
    assert resolve_focal(Image.new("RGB", (8, 8)), 8, 8)[1] == "assumed horizontal fov 60 degrees"


def test_backproject_known_points():
    depth = np.array([[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])  # H=2, W=3: cx = 1, cy = 0.5
    pts = backproject(depth, focal=2.0)
    assert pts.shape == (2, 3, 3)
    # pixel (u=0, v=0), z=2: x = (0-1)*2/2 = -1, y = (0-0.5)*2/2 = -0.5
    np.testing.assert_allclose(pts[0, 0], [-1.0, -0.5, 2.0])
    # pixel (u=2, v=1), z=4: x = (2-1)*4/2 = 2, y = (1-0.5)*4/2 = 1
    np.testing.assert_allclose(pts[1, 2], [2.0, 1.0, 4.0])
    np.testing.assert_allclose(pts[1, 1], [0.0, 1.0, 4.0])
    # explicit principal point and fy
    np.testing.assert_allclose(backproject(depth, 2.0, principal_point=(0, 0), focal_y=4.0)[1, 2], [4.0, 1.0, 4.0])
    # the points project back onto their pixels
    v, u = np.mgrid[0:2, 0:3]
    np.testing.assert_allclose(pts[..., 0] / pts[..., 2] * 2.0 + 1.0, u)
    np.testing.assert_allclose(pts[..., 1] / pts[..., 2] * 2.0 + 0.5, v)


def test_flying_pixel_mask_drops_depth_edges():
    depth = np.full((6, 8), 2.0)
    depth[:, 4:] = 5.0  # a step edge between columns 3 and 4
    depth[0, 0] = 0.0  # invalid
    keep = flying_pixel_mask(depth, threshold=0.05)
    assert not keep[:, 3].any() and not keep[:, 4].any()  # both sides of the edge fly
    assert keep[:, :3].sum() == 6 * 3 - 1 and keep[:, 5:].all() and not keep[0, 0]
    assert keep[0, 1] and keep[1, 0]  # an invalid neighbour is no reason to drop a pixel
    assert flying_pixel_mask(depth, threshold=2.0)[:, 3:5].all()  # a large threshold keeps the edge


@pytest.mark.parametrize("binary", [True, False])
def test_ply_header_count_colours_and_points(tmp_path, binary):
    depth = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])  # H=3, W=4
    rgb = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7
    path = tmp_path / "cloud.ply"
    n = depth_to_ply(path, depth, rgb, focal=10.0, edge_threshold=None, binary=binary, comments=["hello world"])
    assert n == 12
    header, data = read_ply(path)
    assert header[0] == "ply"
    assert header[1] == f"format {'binary_little_endian' if binary else 'ascii'} 1.0"
    assert "comment hello world" in header and any("focal 10 px" in line for line in header)
    assert "element vertex 12" in header
    assert [line for line in header if line.startswith("property")] == [
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue"]
    assert header[-1] == "end_header"
    np.testing.assert_array_equal(np.stack([data["red"], data["green"], data["blue"]], 1), rgb.reshape(-1, 3))
    # pixel (u=3, v=2): z = 3, x = (3 - 1.5) * 3 / 10 = 0.45, y = (2 - 1) * 3 / 10 = 0.3; row-major order
    last = data[-1]
    assert (last["x"], last["y"], last["z"]) == pytest.approx((0.45, 0.3, 3.0), abs=1e-6)
    first = data[0]
    assert (first["x"], first["y"], first["z"]) == pytest.approx((-0.15, -0.1, 1.0), abs=1e-6)
    # an independent maintained parser agrees
    plyfile = pytest.importorskip("plyfile")
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    assert vertex.count == 12
    np.testing.assert_allclose(vertex["z"], depth.ravel())

    # with flying-pixel removal the rows at the 1 -> 3 step go
    assert depth_to_ply(path, depth, rgb, focal=10.0, edge_threshold=0.05, binary=binary) == 4
    assert "element vertex 4" in read_ply(path)[0]


def test_write_ply_checks_inputs(tmp_path):
    with pytest.raises(ValueError) as e:
        write_ply(tmp_path / "x.ply", np.zeros((3, 3)), np.zeros((2, 3), np.uint8))
    assert "one row per point (3)" in str(e.value) and "got 2" in str(e.value)
    write_ply(tmp_path / "plain.ply", np.ones((2, 3)))  # colours are optional
    header, data = read_ply(tmp_path / "plain.ply")
    assert "property uchar red" not in header and len(data) == 2
    assert not list(tmp_path.glob("*.tmp"))
