"""Nothing surprising, nothing lost (docs/reliability.md): the default model with a partial hub cache, inputs
and outputs that never collide, outputs checked before the model loads, nothing to do, Ctrl-C, stale
temporary files, and what reading an image silently lost."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import struct
import time
import zlib

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from apdepth import hub
from apdepth.apps.cli import main
from apdepth.apps.commands import common
from apdepth.io import clean_stale_temp_files, conversion_notes, read_image


def run_predict(*args) -> int:
    return main(["predict", *map(str, args), "--device", "cpu"])


def files_under(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                  and not p.name.startswith("."))


@pytest.fixture()
def no_model(monkeypatch):
    """Fails the test if anything tries to load a model (the checks must come first)."""
    monkeypatch.setattr(common, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))


# ---------------------------------------------------------------------------- default model, partial hub cache


def _hub_cache(root, repo_id: str, source) -> os.PathLike:
    """``source``'s files laid out as the Hugging Face cache stores a downloaded snapshot of ``repo_id``."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_partial_hub_cache_falls_back_to_the_embedded_model(tiny_pipeline_dir, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    from apdepth import ApDepthPipeline
    from apdepth.embedded import embedded_model_path

    cache = tmp_path / "hub"
    snapshot = _hub_cache(cache, hub.DEFAULT_MODEL, tiny_pipeline_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    # complete: the default, and what the check calls complete does load from the cache alone
    args = common.argparse.Namespace(model=None)
    assert common.resolve_model(args) == hub.DEFAULT_MODEL
    ApDepthPipeline.from_pretrained(hub.DEFAULT_MODEL, cache_dir=str(cache), local_files_only=True)

    # an interrupted download: a scheduler config and the UNet's weights missing
    (snapshot / "scheduler" / "scheduler_config.json").unlink()
    (snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert hub.cached_snapshot_missing(hub.DEFAULT_MODEL) == [
        "scheduler/scheduler_config.json", "unet/ weights (*.safetensors)"]
    with pytest.raises(OSError):  # what a plain `apdepth predict` used to crash on
        ApDepthPipeline.from_pretrained(hub.DEFAULT_MODEL, cache_dir=str(cache), local_files_only=True)
    args = common.argparse.Namespace(model=None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="apdepth.hub"):
        assert common.resolve_model(args) == str(embedded_model_path())
    assert args.model == hub.EMBEDDED
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("apdepth")]
    assert len(lines) == 1
    assert "only partly in the Hugging Face cache" in lines[0] and "scheduler/scheduler_config.json" in lines[0]
    assert f"hf download {hub.DEFAULT_MODEL}" in lines[0]


def test_release_layout_needs_its_prior_cached_too(tiny_pipeline_dir, tmp_path, monkeypatch):
    """The release records no prior: the pipeline then fetches DA2-Large, which must be cached as well."""
    import huggingface_hub

    cache = tmp_path / "hub"
    snapshot = _hub_cache(cache, hub.DEFAULT_MODEL, tiny_pipeline_dir)
    shutil.rmtree(snapshot / "prior")
    index = json.loads((snapshot / "model_index.json").read_text())
    index["prior"] = [None, None]
    (snapshot / "model_index.json").write_text(json.dumps(index))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    large = "depth-anything/Depth-Anything-V2-Large-hf"
    assert hub.cached_snapshot_missing(hub.DEFAULT_MODEL) == [f"{large}: not cached"]
    _hub_cache(cache, large, tiny_pipeline_dir + "/prior/depth_anything")  # the transformers model inside
    assert hub.cached_snapshot_missing(hub.DEFAULT_MODEL) == []


# ---------------------------------------------------------------------------- inputs and outputs never collide


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "my dir").mkdir(parents=True)
    random_image(20, 28, seed=1).save(root / "a.png")
    random_image(24, 20, seed=2).save(root / "my dir" / "cat pic.jpg")
    return root


def test_output_folder_inside_the_input_folder_is_not_read_back(tiny_pipeline_dir, photos, capsys):
    expected = ["a_depth.npy", "a_depth.png", "a_depth_color.png", "my dir/cat pic_depth.npy",
                "my dir/cat pic_depth.png", "my dir/cat pic_depth_color.png"]
    for _ in range(2):
        assert run_predict(photos, "-o", photos / "depth", "--model", tiny_pipeline_dir) == 0
        assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().err
        assert files_under(photos / "depth") == expected
    # a later run with another -o leaves the earlier output folder out too (it is marked)
    assert run_predict(photos, "-o", photos / "depth2", "--model", tiny_pipeline_dir, "--formats", "npy") == 0
    assert files_under(photos / "depth2") == ["a_depth.npy", "my dir/cat pic_depth.npy"]
    # outputs written beside the inputs: the originals are read again, the depth maps are not
    for _ in range(2):
        assert run_predict(photos / "my dir", "-o", photos / "my dir", "--model", tiny_pipeline_dir) == 0
        assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().err


def test_an_input_list_naming_an_output_is_an_error(tiny_pipeline_dir, photos, tmp_path, capsys, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".apdepth-output").write_text("")
    random_image(8, 8).save(out / "a_depth_color.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'a.png'}\n{out / 'a_depth_color.png'}\n")
    assert run_predict(listing, "-o", tmp_path / "elsewhere", "--model", tiny_pipeline_dir) == 2
    err = capsys.readouterr().err
    assert f"input {out / 'a_depth_color.png'}: an output of apdepth" in err and "remove it from the inputs" in err


def test_list_files_take_paths_with_spaces(tiny_pipeline_dir, photos, tmp_path, capsys):
    listing = photos / "list.txt"
    listing.write_text("# one path per line\n  my dir/cat pic.jpg  \r\n\n" + f"{photos / 'a.png'}\t\n")
    out = tmp_path / "out"
    assert run_predict(listing, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy") == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().err
    assert files_under(out) == ["a_depth.npy", "my dir/cat pic_depth.npy"]


# ---------------------------------------------------------------------------- checked before the model loads


@pytest.mark.parametrize("case", ["under a file", "names a file", "subfolder is a file", "read-only"])
def test_unwritable_outputs_fail_before_the_model_loads(case, photos, tmp_path, capsys, no_model):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"under a file": blocker / "out", "names a file": blocker}.get(case, tmp_path / "out")
    if case == "subfolder is a file":
        out.mkdir()
        (out / "my dir").write_text("a file where a folder must go")
    if case == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o555)
    assert run_predict(photos, "-o", out, "--model", "embedded") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("apdepth predict: error:")
    expected = {"under a file": f"{blocker} is a file, not a folder", "names a file": f"-o {blocker}: a file",
                "subfolder is a file": f"{out / 'my dir'} is a file", "read-only": f"cannot write to the output "
                f"folder {out}"}[case]
    assert expected in err


def test_processing_resolution_has_a_configurable_bound(photos, tmp_path, capsys, no_model):
    assert run_predict(photos, "-o", tmp_path / "o", "--processing-res", "100000") == 2
    err = capsys.readouterr().err
    assert "--processing-res 100000 is above the limit of 4096 pixels" in err
    assert "pass --max-processing-res 100000 to allow it" in err
    # raised: the option passes, and the run goes on to the next check (here: no inputs exist)
    assert run_predict(tmp_path / "none", "-o", tmp_path / "o", "--processing-res", "100000",
                       "--max-processing-res", "100000") == 2
    assert "nothing to do" in capsys.readouterr().err


def test_nothing_to_do_is_an_error(tmp_path, capsys, no_model):
    (tmp_path / "empty").mkdir()
    assert run_predict(tmp_path / "empty", "-o", tmp_path / "o") == 2
    assert "nothing to do: no images found in" in capsys.readouterr().err
    assert run_predict(tmp_path / "missing.jpg", tmp_path / "gone", "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "missing.jpg: no such file or folder" in err and "nothing to do" in err


# ---------------------------------------------------------------------------- Ctrl-C and litter


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_at_an_image_boundary_with_a_summary(presses, tiny_pipeline_dir, tmp_path, monkeypatch,
                                                           capsys):
    """One Ctrl-C during the second image: it is finished, the rest is not started; two: the second image is
    abandoned at once. Either way: the summary, exit 130, no traceback and no partial file."""
    from apdepth import ApDepthPipeline

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        random_image(16, 20, seed=i).save(src / f"{i}.png")
    original, calls = ApDepthPipeline.__call__, []

    def press_ctrl_c(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # let the handler run
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ApDepthPipeline, "__call__", press_ctrl_c)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a job started in the background
    assert run_predict(src, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy") == 130
    err = capsys.readouterr().err
    done = 2 if presses == 1 else 1
    assert f"{done} done, 0 skipped, 0 failed, {4 - done} not processed (interrupted)" in err
    assert "Traceback" not in err and "--skip-existing" in err
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir()) == [".apdepth-output"] + [f"{i}_depth.npy" for i in range(done)]
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler restored


def test_ctrl_c_in_any_command_exits_130_without_a_traceback(tmp_path, monkeypatch, capsys):
    from apdepth.apps.commands import synth

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "run", interrupted)
    assert main(["synth", "nyu", "-o", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "apdepth synth: interrupted" in err and "Traceback" not in err


def _temp(folder, name: str, age_s: float):
    path = folder / name
    path.write_bytes(b"partial")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    import fcntl

    (tmp_path / "sub").mkdir()
    stale = _temp(tmp_path / "sub", ".a_depth.npy.k3j_x9Qz.tmp", 600)
    young = _temp(tmp_path, ".b_depth.npy.Ab12Cd34.tmp", 0)  # its writer may have just created it
    locked = _temp(tmp_path, ".c_depth.npy.Zz99Yy88.tmp", 600)  # a live writer holds its lock
    other = _temp(tmp_path, ".notes.tmp", 600)  # not a name atomic_open makes
    with open(locked, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert clean_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and young.exists() and locked.exists() and other.exists()


def test_predict_removes_what_a_killed_run_left(tiny_pipeline_dir, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = _temp(out, ".a_depth.npy.Q1w2E3r4.tmp", 3600)
    assert run_predict(photos, "-o", out, "--model", tiny_pipeline_dir, "--formats", "npy") == 0
    assert not stale.exists() and not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------------------- said once, in one line


def _png16_rgb(path, rgb16: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG (PIL cannot write one) straight from the PNG specification."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_what_reading_loses_is_named(tmp_path):
    rgb16 = (np.arange(6 * 5 * 3).reshape(6, 5, 3) * 1000).astype(np.uint16)
    _png16_rgb(tmp_path / "deep.png", rgb16)
    image = read_image(tmp_path / "deep.png")
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), (rgb16 >> 8).astype(np.uint8))
    assert conversion_notes(image) == ["16-bit colour read as 8 bits per channel"]
    random_image(6, 5, mode="RGBA").save(tmp_path / "alpha.png")
    assert conversion_notes(read_image(tmp_path / "alpha.png")) == [
        "alpha channel dropped (depth is predicted from the colours only)"]
    Image.fromarray(rgb16[..., 0]).save(tmp_path / "gray16.png")  # 16-bit gray keeps its 16 bits: nothing lost
    assert read_image(tmp_path / "gray16.png").mode.startswith("I") and conversion_notes(
        read_image(tmp_path / "gray16.png")) == []
    random_image(6, 5).save(tmp_path / "plain.jpg")
    assert conversion_notes(read_image(tmp_path / "plain.jpg")) == []


def test_predict_says_each_loss_once(tiny_pipeline_dir, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        random_image(12, 12, seed=i, mode="RGBA").save(src / f"alpha{i}.png")
        _png16_rgb(src / f"deep{i}.png", np.full((12, 12, 3), 4000 * (i + 1), np.uint16))
    with caplog.at_level(logging.INFO):
        assert run_predict(src, "-o", tmp_path / "out", "--model", tiny_pipeline_dir, "--formats", "npy") == 0
    said = [r.getMessage() for r in caplog.records if "said once" in r.getMessage()]
    assert len(said) == 2
    assert "alpha0.png: alpha channel dropped" in said[0] and "deep0.png: 16-bit colour read as 8 bits" in said[1]


def test_fp16_on_cpu_is_said_once_in_one_line(tiny_pipeline_dir, caplog):
    """diffusers warns "cannot run with cpu" at every fp16 module moved to the CPU (four times), though it
    runs; apdepth says what is true once."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    parser = common.argparse.ArgumentParser()
    common.add_model_arguments(parser)
    try:
        with caplog.at_level(logging.WARNING, logger="apdepth.apps.commands.common"):
            pipe = common.load_pipeline(parser.parse_args(["--model", tiny_pipeline_dir, "--device", "cpu",
                                                           "--dtype", "fp16"]))
    finally:
        diffusers_logger.removeHandler(handler)
    assert pipe.unet.dtype == pipe.vae.dtype == np.float16 or str(pipe.unet.dtype) == "torch.float16"
    assert not [r for r in records if "cannot run with `cpu`" in r.getMessage()]
    ours = [r.getMessage() for r in caplog.records if "fp16" in r.getMessage()]
    assert len(ours) == 1 and "--dtype fp16 on the CPU: it runs, but slowly" in ours[0]
