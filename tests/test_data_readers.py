"""Each reader on fixtures in its data set's exact on-disk format, from a folder and from a tar:
decoding and units, valid range, crops, masks, the sample contract, and split-list errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import apdepth.data
from apdepth.data import (
    DATASETS,
    EVAL_DATASETS,
    TRAIN_DATASETS,
    get_dataset,
    kitti_eval_mask,
    nyu_eigen_mask,
    sobel_edge_mask,
)
from apdepth.testing.fixtures import make_tar, write_fixture

ALL = ("nyu", "kitti", "eth3d", "scannet", "diode", "hypersim", "vkitti")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    work = tmp_path_factory.mktemp("readers")
    out = {}
    for name in ALL:
        fx = write_fixture(name, work / name, num_samples=2, seed=3)
        out[name] = (fx, make_tar(fx.root, work / f"{name}.tar"))
    return out


def test_data_set_names_without_the_readers():
    """The names are importable without torch (the command line uses them); every name has its reader and
    every public name of the package resolves."""
    probe = "import sys\nfrom apdepth.data import EVAL_DATASETS\nprint('torch' in sys.modules, EVAL_DATASETS)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "('nyu',", "'kitti',", "'eth3d',", "'scannet',", "'diode')"]
    assert sorted(DATASETS) == sorted((*EVAL_DATASETS, *TRAIN_DATASETS))
    for name in apdepth.data.__all__:
        assert getattr(apdepth.data, name) is not None


def expected_valid(name: str, depth: np.ndarray) -> np.ndarray:
    """The valid mask written out by hand from docs/reference.md section 5 for the (cropped) metric depth."""
    cls = DATASETS[name]
    with np.errstate(invalid="ignore"):
        if name == "diode":
            inside = (depth >= 0.6) & (depth <= 350)
        else:
            inside = (depth > cls.min_depth) & (depth < cls.max_depth)
    return inside & np.isfinite(depth)


@pytest.mark.parametrize("name", ALL)
def test_folder_and_tar_give_identical_samples(fixtures, name):
    fx, tar = fixtures[name]
    from_folder, from_tar = get_dataset(name, fx.root, fx.split), get_dataset(name, tar, fx.split)
    assert len(from_folder) == len(from_tar) == 2
    for i in range(2):
        a, b = from_folder[i], from_tar[i]
        assert a["rgb_path"] == b["rgb_path"] and a["index"] == b["index"] == i
        for key in set(a) - {"rgb_path", "index"}:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", ALL)
def test_sample_contract(fixtures, name):
    fx, _ = fixtures[name]
    ds = get_dataset(name, fx.root, fx.split)
    s = ds[1]
    extra = {"edge_valid_mask"} if name == "diode" else set()
    assert set(s) == {"rgb", "depth", "valid_mask", "rgb_path", "index"} | extra
    _, height, width = s["rgb"].shape
    assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape[0] == 3
    assert s["depth"].dtype == torch.float32 and s["depth"].shape == (1, height, width)
    assert s["valid_mask"].dtype == torch.bool and s["valid_mask"].shape == (1, height, width)
    assert s["rgb_path"] == ds.entries[1][0] and s["index"] == 1
    assert torch.isfinite(s["depth"]).all() and (s["depth"] >= 0).all()
    assert (s["depth"][s["valid_mask"]] > 0).all()
    assert 0 < s["valid_mask"].sum() < s["valid_mask"].numel()  # the fixtures hold invalid pixels
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("name", ["nyu", "scannet", "hypersim", "eth3d"])
def test_uncropped_decoding_and_mask(fixtures, name):
    fx, _ = fixtures[name]
    ds = get_dataset(name, fx.root, fx.split)
    for i in range(2):
        s = ds[i]
        truth = fx.depth[s["rgb_path"]]
        depth = s["depth"][0].numpy()
        np.testing.assert_allclose(depth, np.where(np.isfinite(truth), truth, 0), rtol=0, atol=1e-6)
        valid = expected_valid(name, truth)
        if name == "nyu":
            valid &= nyu_eigen_mask(480, 640)
        assert np.array_equal(s["valid_mask"][0].numpy(), valid)


def test_units(fixtures):
    """Millimetres (NYU, ScanNet, Hypersim), 1/256 m (KITTI), centimetres (VKITTI), metres (ETH3D, DIODE)."""
    for name, units in (("nyu", 1000), ("scannet", 1000), ("hypersim", 1000), ("kitti", 256), ("vkitti", 100)):
        fx, _ = fixtures[name]
        ds = get_dataset(name, fx.root, fx.split)
        rel = ds.entries[0][1]
        raw = np.asarray(ds.read_image(rel)).astype(np.float64)
        assert raw.max() > 255  # really 16-bit
        np.testing.assert_allclose(ds.read_png_depth(rel, units), raw / units, rtol=1e-6)


def test_nyu_eigen_crop_and_range(fixtures):
    fx, _ = fixtures["nyu"]
    s = get_dataset("nyu", fx.root, fx.split)[0]
    valid = s["valid_mask"][0]
    assert not valid[:45].any() and not valid[471:].any() and not valid[:, :41].any() and not valid[:, 601:].any()
    assert valid[45:471, 41:601][10:, :].all()  # rows 0-5 hold no measurement; the rest is in range
    assert not valid[-3:, -40:].any()  # 12 m > 10 m: outside the range (and the crop)
    no_crop = get_dataset("nyu", fx.root, fx.split, eigen_crop=False)[0]["valid_mask"][0]
    assert no_crop[:, :41].any() and not no_crop[-3:, -40:].any() and not no_crop[:6].any()


def test_kitti_crops_and_none_lines(fixtures):
    fx, tar = fixtures["kitti"]
    assert sum(1 for line in fx.lines if " None " in line) == 1 and len(fx.lines) == 3
    ds = get_dataset("kitti", tar, fx.split)
    assert len(ds) == 2 and ds.num_without_gt == 1
    s = ds[0]
    truth = fx.depth[s["rgb_path"]]  # 375x1242 -> top 23, left 13
    assert s["rgb"].shape == (3, 352, 1216)
    crop = truth[23:375, 13:1229]
    np.testing.assert_allclose(s["depth"][0].numpy(), crop, atol=1e-6)
    rgb_full = np.asarray(ds.read_image(s["rgb_path"]))
    assert np.array_equal(s["rgb"].permute(1, 2, 0).numpy(), rgb_full[23:375, 13:1229])
    valid = expected_valid("kitti", crop) & kitti_eval_mask(352, 1216, "eigen")
    assert np.array_equal(s["valid_mask"][0].numpy(), valid)
    garg = get_dataset("kitti", tar, fx.split, eval_crop="garg")[0]["valid_mask"][0].numpy()
    assert np.array_equal(garg, expected_valid("kitti", crop) & kitti_eval_mask(352, 1216, "garg"))
    with pytest.raises(ValueError, match="eval_crop"):
        get_dataset("kitti", tar, fx.split, eval_crop="middle")


def test_vkitti_crop_and_sky(fixtures):
    fx, _ = fixtures["vkitti"]
    s = get_dataset("vkitti", fx.root, fx.split)[0]
    crop = fx.depth[s["rgb_path"]][23:375, 13:1229]
    assert s["depth"].shape == (1, 352, 1216)
    np.testing.assert_allclose(s["depth"][0].numpy(), crop, atol=1e-6)
    assert np.array_equal(s["valid_mask"][0].numpy(), (crop > 1e-5) & (crop < 80))
    assert not s["valid_mask"][0, :100].any()  # the sky band (655.35 m) is invalid


def test_eth3d_inf_and_size_check(fixtures, tmp_path):
    fx, _ = fixtures["eth3d"]
    ds = get_dataset("eth3d", fx.root, fx.split)
    s = ds[0]
    assert s["depth"].shape == (1, 40, 60)
    assert (s["depth"][0, :8] == 0).all() and not s["valid_mask"][0, :8].any()  # inf rows
    assert s["valid_mask"][0, 8:].all()
    # a depth file of the wrong size is an error naming it
    bad = fx.root / ds.entries[1][1]
    keep = bad.read_bytes()
    try:
        bad.write_bytes(keep[:-4])
        with pytest.raises(ValueError) as info:
            ds[1]
        assert ds.entries[1][1] in str(info.value) and "40x60" in str(info.value)
    finally:
        bad.write_bytes(keep)


def test_diode_masks(fixtures):
    fx, _ = fixtures["diode"]
    ds = get_dataset("diode", fx.root, fx.split)
    for i in range(2):
        s = ds[i]
        depth = fx.depth[s["rgb_path"]]
        provided = np.ones_like(depth, dtype=bool)
        provided[-4:, :] = False
        expected = provided & sobel_edge_mask(depth) & (depth >= 0.6) & (depth <= 350)
        got = s["valid_mask"][0].numpy()
        assert np.array_equal(got, expected)
        # the box edge and the band next to the provided mask's hole are removed by the Sobel mask
        assert not got[12, 15:17].any() and not got[-5, :].any() and got[30, 40]
        # ... but kept for the edge metrics, which need the discontinuities
        edges = s["edge_valid_mask"][0].numpy()
        assert np.array_equal(edges, provided & (depth >= 0.6) & (depth <= 350)) and edges[12, 15:17].all()
    plain = get_dataset("diode", fx.root, fx.split, edge_mask=False)[0]
    assert plain["valid_mask"][0, 12, 15:17].all() and "edge_valid_mask" not in plain
    assert get_dataset("diode", fx.root, fx.split, edge_mask=False).settings() == {"mask": "range"}
    with pytest.raises(ValueError, match="DIODE mask must be one of"):
        get_dataset("diode", fx.root, fx.split, mask="sobel")


def write_diode_sample(root, depth: np.ndarray, mask: np.ndarray) -> str:
    """One DIODE sample in the released format (PNG, [H, W, 1] float32 depth .npy, [H, W] mask .npy);
    returns its split line."""
    import io

    from PIL import Image

    stem = "outdoor/scene_00022/scan_00193/00022_00193_outdoor_000_010"
    (root / stem).parent.mkdir(parents=True, exist_ok=True)
    rgb = np.full((*depth.shape, 3), 128, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    (root / f"{stem}.png").write_bytes(buf.getvalue())
    np.save(root / f"{stem}_depth.npy", depth.astype(np.float32)[..., None])
    np.save(root / f"{stem}_depth_mask.npy", mask.astype(np.float32))
    return f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy"


def test_diode_mask_protocols(tmp_path):
    """paper (the authors' code), marigold (Marigold's code) and range, on a frame with pixels inside the
    provided mask that are nearer than 0.6 m, farther than 350 m, 0 or NaN."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(7)
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = (5.0 + 0.02 * xx + 0.01 * yy + rng.normal(0, 0.01, (h, w))).astype(np.float32)
    depth[6:12, 8:16] = 2.0  # an occluding box: Sobel >> 0.3 on its border
    depth[2, 2], depth[2, 20] = 0.4, 420.0  # measured, in the provided mask, outside 0.6..350
    depth[20, 5], depth[20, 25] = 0.0, np.nan  # in the provided mask too (Marigold's metrics: inf / NaN)
    provided = np.ones((h, w), dtype=bool)
    provided[-2:, :] = False
    provided[0, :] = False
    line = write_diode_sample(tmp_path / "diode", depth, provided)
    split = tmp_path / "split.txt"
    split.write_text(line + "\n")
    valid = {m: get_dataset("diode", tmp_path / "diode", split, mask=m)[0]["valid_mask"][0].numpy()
             for m in ("paper", "marigold", "range")}
    with np.errstate(invalid="ignore"):
        in_range = (depth >= 0.6) & (depth <= 350) & ~np.isnan(depth) & ~np.isinf(depth)
        grad = np.abs(ndimage.sobel(depth, 0)) + np.abs(ndimage.sobel(depth, 1))  # as the authors' code
        edge = grad <= 0.3
    assert np.array_equal(valid["paper"], provided & edge & in_range)
    assert np.array_equal(valid["range"], provided & in_range)
    # Marigold: the provided mask only; 0 and NaN drop out because its metrics are undefined there
    assert np.array_equal(valid["marigold"], provided & np.isfinite(depth) & (depth > 0))
    assert valid["marigold"][2, 2] and valid["marigold"][2, 20] and not valid["range"][2, 2]
    assert not valid["marigold"][20, 5] and not valid["marigold"][20, 25]
    assert not valid["paper"][6, 8:16].any() and valid["marigold"][6, 8:16].all()
    assert valid["marigold"].sum() - valid["range"].sum() == 2


def test_missing_entries(fixtures, tmp_path):
    fx, tar = fixtures["scannet"]
    split = tmp_path / "split.txt"
    split.write_text(fx.split.read_text() + "scene0999_00/color/000999.jpg scene0999_00/depth/000999.png\n")
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("scannet", tar, split)
    message = str(info.value)
    assert "scene0999_00/color/000999.jpg" in message and "1 of 3" in message and str(tar) in message
    ds = get_dataset("scannet", tar, split, missing="skip")
    assert len(ds) == 2 and ds.missing_entries == [("scene0999_00/color/000999.jpg",
                                                   "scene0999_00/depth/000999.png")]


def test_split_errors(fixtures, tmp_path):
    fx, _ = fixtures["diode"]
    short = tmp_path / "short.txt"
    short.write_text("\n# comment\nindoors/a.png indoors/a_depth.npy\n")
    with pytest.raises(ValueError, match=r"short.txt:3: diode split lines need 3"):
        get_dataset("diode", fx.root, short)
    with pytest.raises(FileNotFoundError, match="split list"):
        get_dataset("diode", fx.root, tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="Unknown data set 'nyu2'"):
        get_dataset("nyu2", fx.root, short)
    with pytest.raises(ValueError, match="missing must be one of"):
        get_dataset("diode", fx.root, fx.split, missing="ignore")


def test_transform_hook(fixtures):
    fx, _ = fixtures["hypersim"]

    def flip(sample):
        return {**sample, "rgb": sample["rgb"].flip(-1), "flipped": True}

    plain = get_dataset("hypersim", fx.root, fx.split)[0]
    flipped = get_dataset("hypersim", fx.root, fx.split, transform=flip)[0]
    assert flipped["flipped"] and torch.equal(flipped["rgb"], plain["rgb"].flip(-1))


def test_evaluation_defaults():
    assert {n: DATASETS[n].processing_resolution for n in ("nyu", "kitti", "eth3d", "scannet", "diode")} == {
        "nyu": 0, "kitti": 0, "eth3d": 756, "scannet": 0, "diode": 640}
    assert {n: DATASETS[n].expected_samples for n in ("nyu", "kitti", "eth3d", "scannet", "diode")} == {
        "nyu": 654, "kitti": 652, "eth3d": 454, "scannet": 800, "diode": 771}
    assert DATASETS["eth3d"].alignment_max_resolution == 1024
    assert DATASETS["nyu"].alignment_max_resolution is None
    ranges = {n: (DATASETS[n].min_depth, DATASETS[n].max_depth) for n in DATASETS}
    assert ranges == {"nyu": (1e-3, 10), "kitti": (1e-5, 80), "eth3d": (1e-5, float("inf")),
                      "scannet": (1e-3, 10), "diode": (0.6, 350), "hypersim": (1e-5, 65), "vkitti": (1e-5, 80),
                      "folder": (0, float("inf"))}  # folder: set per data set (data.folder.min_depth / max_depth)
