"""The synthetic data sets on disk: names, encodings and split lists per docs/reference.md sections 4 and 5,
determinism, the command line, and acceptance by the project's own readers (``apdepth.data``)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from apdepth.synth import encode as en
from apdepth.synth.datasets import generate, plan, render_scene

SMALL = (48, 64)


def read_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img)


def files_of(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


# ---------------------------------------------------------------------------- encodings


def test_depth_encodings_by_hand():
    depth = np.array([[2.5, 0.0, np.inf, -1.0, 700.0, np.nan]], np.float32)
    np.testing.assert_array_equal(en.metres_to_uint16(depth, 1000.0), [[2500, 0, 0, 0, 0, 0]])  # Hypersim/NYU: mm
    np.testing.assert_array_equal(en.metres_to_uint16(depth, 256.0), [[640, 0, 0, 0, 0, 0]])  # KITTI: x256
    vkitti = en.metres_to_uint16(depth, 100.0, invalid=65535)  # cm; sky and beyond 655.35 m -> 65535
    np.testing.assert_array_equal(vkitti, [[250, 65535, 65535, 65535, 65535, 65535]])
    filled = en.metres_to_uint16(np.array([[70.0, 1.2345]]), 1000.0, overflow=65535)
    np.testing.assert_array_equal(filled, [[65535, 1234]])  # round half to even: 1234.5 -> 1234
    assert en.focal_text(721.53771) == "721.5377"


def test_plan_splits_images_into_scenes():
    assert plan("hypersim", 10, 4) == [(0, [0, 1, 2, 3]), (1, [0, 1, 2, 3]), (2, [0, 1])]
    assert plan("nyu", 5, 2) == [(0, [0, 1]), (1, [2, 3]), (2, [4])]  # NYU numbers images globally
    with pytest.raises(ValueError) as err:
        plan("scannet", 3)
    assert "hypersim" in str(err.value) and "scannet" in str(err.value)


# ---------------------------------------------------------------------------- layouts


def test_hypersim_layout_and_determinism(tmp_path):
    a = generate("hypersim", tmp_path / "a", 3, seed=5, size=SMALL, frames_per_scene=2, progress=False)
    generate("hypersim", tmp_path / "b", 3, seed=5, size=SMALL, frames_per_scene=2, progress=False, workers=2)
    generate("hypersim", tmp_path / "c", 3, seed=6, size=SMALL, frames_per_scene=2, progress=False)
    fa, fb, fc = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert a["images"] == 3 and a["scenes"] == 2
    lines = (tmp_path / "a" / "filename_list_train.txt").read_text().splitlines()
    assert lines == ["ai_001_001/rgb_cam_00_fr0000.png ai_001_001/depth_plane_cam_00_fr0000.png",
                     "ai_001_001/rgb_cam_00_fr0001.png ai_001_001/depth_plane_cam_00_fr0001.png",
                     "ai_001_002/rgb_cam_00_fr0000.png ai_001_002/depth_plane_cam_00_fr0000.png"]
    for key in set(fa) - {"synth_meta.json"}:  # same seed: identical bytes, whatever the number of workers
        assert fa[key] == fb[key], key
    assert fa["ai_001_001/rgb_cam_00_fr0000.png"] != fc["ai_001_001/rgb_cam_00_fr0000.png"]
    rgb, depth = read_png(fa["ai_001_001/rgb_cam_00_fr0000.png"]), read_png(fa["ai_001_001/depth_plane_cam_00_fr0000.png"])
    assert rgb.shape == (*SMALL, 3) and rgb.dtype == np.uint8
    assert depth.shape == SMALL and depth.dtype == np.uint16
    # planar depth in millimetres, exactly the rendered depth rounded
    expected = render_scene("hypersim", 5, 0, [0], SMALL, keep_depth=True).depths[0]
    np.testing.assert_array_equal(depth, np.round(expected.astype(np.float64) * 1000).astype(np.uint16))
    assert 300 < depth.min() and depth.max() < 15000  # indoors: 0.3 .. 15 m


def test_vkitti_layout_and_sky_encoding(tmp_path):
    info = generate("vkitti", tmp_path, 2, seed=1, size=(40, 132), frames_per_scene=2, progress=False)
    lines = (tmp_path / "vkitti_train.txt").read_text().splitlines()
    assert lines == [f"rgb/Scene01/clone/frames/rgb/Camera_0/rgb_{k:05d}.jpg "
                     f"depth/Scene01/clone/frames/depth/Camera_0/depth_{k:05d}.png" for k in range(2)]
    rgb = Image.open(tmp_path / lines[0].split()[0])
    assert rgb.format == "JPEG" and rgb.size == (132, 40) and rgb.mode == "RGB"
    depth = read_png((tmp_path / lines[0].split()[1]).read_bytes())
    assert depth.dtype == np.uint16 and depth.shape == (40, 132)
    expected = render_scene("vkitti", 1, 0, [0], (40, 132), keep_depth=True).depths[0]
    sky = ~np.isfinite(expected) | (expected > 655.35)
    assert sky.any() and (depth[sky] == 65535).all()  # the sky: beyond any valid range (80 m)
    np.testing.assert_array_equal(depth[~sky], np.round(expected[~sky].astype(np.float64) * 100).astype(np.uint16))
    assert info["root"] == str(tmp_path)


def test_nyu_archive_layout(tmp_path):
    info = generate("nyu", tmp_path, 3, seed=2, size=SMALL, frames_per_scene=2, progress=False)
    assert info["root"] == str(tmp_path / "nyu_labeled_extracted.tar")
    lines = (tmp_path / "filename_list_test.txt").read_text().splitlines()
    assert lines[0] == "test/bathroom_0001/rgb_0000.png test/bathroom_0001/depth_0000.png test/bathroom_0001/filled_0000.png"
    assert lines[2].startswith("test/bedroom_0001/rgb_0002.png ")
    with tarfile.open(info["root"]) as tar:
        names = tar.getnames()
    assert all(n == "." or n.startswith("./") for n in names)  # Marigold's archives: ./test/...
    members = tar_members(info["root"])
    for line in lines:
        for rel in line.split():
            assert "./" + rel in members
    raw, filled = (read_png(members["./" + rel]) for rel in lines[0].split()[1:])
    assert raw.dtype == filled.dtype == np.uint16 and raw.shape == SMALL
    assert (filled > 0).all()  # filled: everywhere
    assert ((raw == filled) | (raw == 0)).all()  # raw: the same millimetres, with sensor holes


def test_kitti_archive_layout_sparse_gt_and_none_lines(tmp_path):
    size = (40, 132)
    info = generate("kitti", tmp_path, 9, seed=3, size=size, frames_per_scene=9, progress=False)
    lines = (tmp_path / "eigen_test_files_with_gt.txt").read_text().splitlines()
    fields = [line.split() for line in lines]
    assert [len(f) for f in fields] == [3] * 9
    assert fields[0][0] == "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png"
    assert fields[0][1] == "2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000000.png"
    assert [f[1] for f in fields].count("None") == 1 and fields[7][1] == "None"  # frame 7: no ground truth
    focal = float(fields[0][2])
    assert focal == pytest.approx(float(en.focal_text(focal))) and 73.3 < focal < 78.7  # 690..740 px at 1242 wide, scaled to 132
    members = tar_members(info["root"])
    assert "./" + fields[7][0] in members and not any(n.endswith("0000000007.png") and "groundtruth" in n
                                                       for n in members)
    gt = read_png(members["./" + fields[0][1]])
    assert gt.dtype == np.uint16 and gt.shape == size
    assert 0.0 < (gt > 0).mean() < 0.5  # sparse, like projected LiDAR
    expected = render_scene("kitti", 3, 0, [0], size, keep_depth=True).depths[0]
    have = gt > 0
    np.testing.assert_array_equal(gt[have], np.round(expected[have].astype(np.float64) * 256).astype(np.uint16))
    rgb = read_png(members["./" + fields[0][0]])
    assert rgb.shape == (*size, 3)


def test_cli_synth_all_writes_four_data_sets(tmp_path):
    from apdepth.apps.cli import main

    code = main(["synth", "all", "-o", str(tmp_path), "--size", "32x48", "--counts",
                 "hypersim=2,vkitti=1,nyu=1,kitti=1", "--seed", "9"])
    assert code == 0
    for rel in ("hypersim/filename_list_train.txt", "vkitti/vkitti_train.txt", "nyuv2/nyu_labeled_extracted.tar",
                "nyuv2/filename_list_test.txt", "kitti/kitti_eigen_split_test.tar",
                "kitti/eigen_test_files_with_gt.txt", "hypersim/synth_meta.json"):
        assert (tmp_path / rel).is_file(), rel
    assert len((tmp_path / "hypersim/filename_list_train.txt").read_text().splitlines()) == 2


def test_cli_rejects_bad_size(capsys):
    from apdepth.apps.cli import main

    with pytest.raises(SystemExit):
        main(["synth", "nyu", "-o", "x", "--size", "640"])
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


# ---------------------------------------------------------------------------- reader acceptance

data = pytest.importorskip("apdepth.data", reason="apdepth.data (the evaluation branch's readers) is not merged")

NATIVE = {"hypersim": (480, 640), "vkitti": (375, 1242), "nyu": (480, 640), "kitti": (375, 1242)}
VALID_RANGE = {"hypersim": (1e-5, 65.0), "vkitti": (1e-5, 80.0), "nyu": (1e-3, 10.0), "kitti": (1e-5, 80.0)}
UNITS = {"hypersim": 1000.0, "vkitti": 100.0, "nyu": 1000.0, "kitti": 256.0}


@pytest.mark.parametrize("kind", ["hypersim", "vkitti", "nyu", "kitti"])
def test_readers_load_synthetic_data_unchanged(tmp_path, kind):
    """The project's readers accept the native-size output and recover the rendered depth to the unit's step."""
    info = generate(kind, tmp_path, 1, seed=4, progress=False)
    ds = data.get_dataset(kind, info["root"], info["split"])
    assert len(ds) == 1
    sample = ds[0]
    rendered = render_scene(kind, 4, 0, [0], keep_depth=True).depths[0]
    if kind in ("vkitti", "kitti"):  # readers crop to the KITTI benchmark region 352x1216 (bottom, centred)
        assert sample["rgb"].shape == (3, 352, 1216)
        rendered = data.kitti_benchmark_crop(rendered)
    else:
        assert sample["rgb"].shape == (3, *NATIVE[kind])
    depth, valid = sample["depth"][0].numpy(), sample["valid_mask"][0].numpy()
    assert valid.sum() > (0.02 if kind == "kitti" else 0.5) * valid.size
    np.testing.assert_allclose(depth[valid], rendered[valid], atol=0.5 / UNITS[kind] + 1e-6)
    lo, hi = VALID_RANGE[kind]
    assert depth[valid].min() > lo and depth[valid].max() < hi
    if kind == "vkitti":  # sky (65535 -> 655.35 m) is outside the valid range
        sky = ~np.isfinite(rendered)
        assert sky.any() and not valid[sky].any()
    assert sample["rgb"].dtype.is_floating_point is False


def test_kitti_reader_skips_frames_without_ground_truth(tmp_path):
    info = generate("kitti", tmp_path, 9, seed=3, size=(40, 132), frames_per_scene=9, progress=False)
    ds = data.get_dataset("kitti", info["root"], info["split"], benchmark_crop=False, eval_crop=None)
    assert len(ds) == 8 and ds.num_without_gt == 1
    assert all("0000000007.png" not in e[0] for e in ds.entries)
