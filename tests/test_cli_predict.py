"""`apdepth predict`: inputs of every kind, per-file failures, formats, skip-existing, atomic outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from apdepth.apps.cli import main
from apdepth.io import save_npy


@pytest.fixture()
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    random_image(37, 51, seed=1).save(root / "a.jpg", quality=90)
    random_image(40, 30, seed=2, mode="RGBA").save(root / "sub" / "rgba.png")
    random_image(33, 45, seed=3, mode="P").save(root / "sub" / "palette.png")
    random_image(29, 31, seed=4, mode="L").save(root / "sub" / "deeper" / "gray.bmp")
    g16 = (np.linspace(0, 65535, 27 * 35).reshape(27, 35)).astype(np.uint16)
    Image.fromarray(g16).save(root / "sub" / "g16.png")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "notes.md").write_text("not an image, not an image extension: ignored")
    return root


EXPECTED = {"a": (37, 51), "sub/rgba": (40, 30), "sub/palette": (33, 45), "sub/deeper/gray": (29, 31),
            "sub/g16": (27, 35)}


def run_predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


def names(folder) -> list[str]:
    """The files in ``folder`` (not apdepth's hidden output-folder marker)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_folder_all_formats_and_failure_report(tiny_pipeline_dir, photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_predict(photo_folder, "-o", out, "--model", tiny_pipeline_dir, "--batch-size", "2")
    err = capsys.readouterr().err
    assert rc == 1  # one bad file -> non-zero exit, the others done
    assert "5 done, 0 skipped, 1 failed" in err
    assert "broken.jpg" in err and "not a readable image" in err
    for stem, shape in EXPECTED.items():
        depth = np.load(out / f"{stem}_depth.npy")
        assert depth.shape == shape and depth.dtype == np.float32
        assert 0 <= depth.min() and depth.max() <= 1
        png16 = np.asarray(Image.open(out / f"{stem}_depth.png"))
        assert png16.dtype == np.uint16
        np.testing.assert_array_equal(png16, np.round(depth * 65535).astype(np.uint16))
        color = Image.open(out / f"{stem}_depth_color.png")
        assert color.mode == "RGB" and color.size == shape[::-1]
    assert not list(out.rglob("*broken*")) and not list(out.rglob("*.tmp"))


def test_list_file_single_file_and_missing_path(tiny_pipeline_dir, photo_folder, tmp_path, capsys):
    listing = photo_folder / "list.txt"
    listing.write_text("# images to process\na.jpg\nsub/g16.png\n\nsub/missing.png\n")
    out = tmp_path / "out"
    rc = run_predict(listing, photo_folder / "sub" / "rgba.png", tmp_path / "nope.jpg", "-o", out,
                     "--model", tiny_pipeline_dir, "--formats", "npy")
    err = capsys.readouterr().err
    assert rc == 1
    assert "3 done, 0 skipped, 2 failed" in err
    assert "missing.png" in err and "nope.jpg" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == [
        "a_depth.npy", "rgba_depth.npy", "sub/g16_depth.npy"]
    assert not list(out.rglob("*.png"))  # only the requested format


def test_skip_existing_and_processing_resolution(tiny_pipeline_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    random_image(30, 50, seed=5).save(src / "x.png")
    random_image(30, 50, seed=6).save(src / "y.png")
    out = tmp_path / "out"
    args = [src, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy", "--processing-res", "20",
            "--no-match-input-res"]
    assert run_predict(*args) == 0
    assert np.load(out / "x_depth.npy").shape == (8, 16)  # 12 x 20, as the release's VAE returns it (floor to 8)
    (out / "y_depth.npy").unlink()
    capsys.readouterr()
    assert run_predict(*args, "--skip-existing") == 0
    assert "1 done, 1 skipped, 0 failed" in capsys.readouterr().err


def test_same_stem_different_extensions_both_kept(tiny_pipeline_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    random_image(16, 16, seed=1).save(src / "a.jpg")
    random_image(16, 16, seed=2).save(src / "a.png")
    out = tmp_path / "out"
    assert run_predict(src, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy") == 0
    assert names(out) == ["a_depth.npy", "a_png_depth.npy"]
    assert not np.array_equal(np.load(out / "a_depth.npy"), np.load(out / "a_png_depth.npy"))


def test_bad_formats_flag_is_explained(tiny_pipeline_dir, tmp_path, capsys):
    assert run_predict(tmp_path, "-o", tmp_path / "o", "--model", tiny_pipeline_dir, "--formats", "npy,bogus") == 2
    assert "--formats: unknown 'bogus'; choose among npy, png16, color, ply, exr, tiff32, png16mm" in capsys.readouterr().err


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "d" / "x_depth.npy"

    def crash(f, array):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. the user hits Ctrl-C mid-write

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_npy(target, np.zeros(3))
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "apdepth", "predict", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for flag in ("--model", "--prior", "--processing-res", "--batch-size", "--dtype", "--device", "--colormap",
                 "--formats", "--skip-existing"):
        assert flag in done.stdout


def test_a_failure_inside_the_model_fails_only_that_image(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """A batch that raises is retried image by image: the poisoned image fails, its batch-mates succeed."""
    from apdepth import ApDepthPipeline

    src = tmp_path / "in"
    src.mkdir()
    for i, width in enumerate((20, 13, 20)):
        random_image(20, width, seed=i).save(src / f"{i}.png")
    original = ApDepthPipeline.__call__

    def poisoned(self, image, *args, **kwargs):
        images = image if isinstance(image, list) else [image]
        if any(im.size[0] == 13 for im in images):
            raise RuntimeError("simulated CUDA error")
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(ApDepthPipeline, "__call__", poisoned)
    out = tmp_path / "out"
    assert run_predict(src, "-o", out, "--model", tiny_pipeline_dir, "--batch-size", "3", "--formats", "npy") == 1
    err = capsys.readouterr().err
    assert "2 done, 0 skipped, 1 failed" in err and "1.png: prediction failed (RuntimeError: simulated CUDA error)" in err
    assert names(out) == ["0_depth.npy", "2_depth.npy"]


def test_two_processes_split_the_inputs(tiny_pipeline_dir, tmp_path):
    """torchrun with 2 CPU processes: each takes a share, no output missing or written twice."""
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for i in range(5):
        random_image(24, 32, seed=i).save(src / f"{i}.png")
    out = tmp_path / "out"
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not found")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "apdepth", "predict", str(src), "-o", str(out),
           "--model", tiny_pipeline_dir, "--formats", "npy", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "process 0 of 2: 3 of 5 images" in done.stderr and "process 1 of 2: 2 of 5 images" in done.stderr
    assert done.stderr.count("apdepth predict: 5 done, 0 skipped, 0 failed") == 1  # one merged report
    assert names(out) == [f"{i}_depth.npy" for i in range(5)]
    (out / "3_depth.npy").unlink()
    again = subprocess.run(cmd + ["--skip-existing"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("apdepth predict: 1 done, 4 skipped, 0 failed") == 1


def test_outputs_get_the_usual_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        save_npy(tmp_path / "x.npy", np.zeros(2))
    finally:
        os.umask(old)
    assert (tmp_path / "x.npy").stat().st_mode & 0o777 == 0o644
