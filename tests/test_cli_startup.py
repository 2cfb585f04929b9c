"""An instant command line: nothing heavy at `import apdepth` or while parsing; every option checked before the
model loads (usage errors, exit 2); models and priors that cannot be loaded end in one line (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import random_image

from apdepth.apps.cli import main
from apdepth.apps.commands import common

HEAVY = ("torch", "diffusers", "transformers", "accelerate", "matplotlib")


def _imported_after(code: str) -> list[str]:
    """The heavy modules imported by ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_and_parse_import_nothing_heavy():
    code = """
import apdepth
from apdepth.apps.cli import build_parser, main
parser = build_parser()
for command in ("predict", "evaluate", "video", "serve", "train", "bench", "demo-model", "synth", "export"):
    try:
        parser.parse_args([command, "--help"])
    except SystemExit:
        pass
parser.parse_args(["predict", "x.jpg", "-o", "out", "--formats", "npy", "png16"])
assert main(["predict", "x.jpg", "-o", "out", "--formats", "npy,bogus"]) == 2   # a usage error
assert main(["predict", "x.jpg", "-o", "out", "--model", "./nowhere"]) == 2
"""
    assert _imported_after(code) == []


def test_core_does_not_import_the_command_line():
    """apdepth.hub (which model, which device) is core: light, and with no apdepth.apps under it."""
    assert _imported_after("import apdepth.hub") == []
    probe = ("import sys\nimport apdepth.hf_pipeline, apdepth.hub\n"
             "print(sorted(m for m in sys.modules if m.startswith('apdepth.apps')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_still_import():
    assert _imported_after("import apdepth") == []
    assert "torch" in _imported_after("from apdepth import ApDepthPipeline, load_prior")
    import apdepth
    from apdepth.pipeline import ApDepthPipeline

    assert apdepth.ApDepthPipeline is ApDepthPipeline and "ApDepthPipeline" in dir(apdepth)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        apdepth.Nope  # noqa: B018


def test_help_of_every_command_from_a_fresh_process():
    for argv in ([], ["predict"], ["train"], ["evaluate"]):
        done = subprocess.run([sys.executable, "-m", "apdepth", *argv, "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage: apdepth" in done.stdout, done.stderr


def test_internal_copies_match_their_sources():
    """Names the CLI keeps to avoid heavy imports stay equal to the modules that own them."""
    from apdepth.apps.commands.demo_model import STEPS
    from apdepth.embedded.recipe import STEPS as RECIPE_STEPS
    from apdepth.pipeline import RESAMPLE_MODES
    from apdepth.priors.variants import ALIASES

    assert STEPS == RECIPE_STEPS
    assert common.RESAMPLE_MODES == RESAMPLE_MODES
    assert sorted(common.PRIOR_SIZES) == sorted(ALIASES)


# ---------------------------------------------------------------------------- options checked before the model


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "a.png"
    random_image(16, 20).save(path)
    return path


@pytest.mark.parametrize("flags, message", [
    (["--colormap", "Spectrall"], "--colormap: unknown matplotlib colour map 'Spectrall'"),
    (["--formats", "npy", "bogus"], "--formats: unknown 'bogus'; choose among npy, png16, color, ply, exr, tiff32, png16mm"),
    (["--formats", ""], "--formats: nothing given"),
    (["--processing-res", "-5"], "--processing-res must be >= 0 (0 = native size), got -5"),
    (["--resample", "lanczos9"], "--resample 'lanczos9': choose among bilinear, bicubic, nearest"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--tta", "--tta-res", "9000"], "--tta-res 9000 is above the limit of 4096 pixels"),
    (["--fov", "200"], "--fov must be in (0, 180) degrees, got 200.0"),
    (["--device", "gpu0"], "--device 'gpu0': expected cpu, cuda, cuda:N, mps"),
    (["--model", "no/such/folder"], "--model no/such/folder: no such folder"),
    (["--prior", "hugest"], "--prior hugest: not a size (small, base, large, giant)"),
])
def test_bad_options_are_usage_errors_before_the_model_loads(flags, message, image, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["predict", str(image), "-o", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: apdepth predict") and f"apdepth predict: error: {message}" in err
    assert not (tmp_path / "out").exists()  # nothing written either


def test_formats_take_spaces_and_commas(tiny_pipeline_dir, image, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(image), "-o", str(out), "--model", tiny_pipeline_dir, "--device", "cpu",
                 "--formats", "npy", "png16,color", "npy"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a_depth.npy", "a_depth.png", "a_depth_color.png"]
    # an input after --formats is named as such, not as an unknown format
    assert main(["predict", "-o", str(out), "--formats", "npy", str(image)]) == 2
    assert f"--formats: {image} is an input, not a format" in capsys.readouterr().err


def test_other_commands_check_their_options_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["video", str(tmp_path), "-o", str(tmp_path / "o"), "--formats", "video", "gif"]) == 2
    assert "--formats: unknown 'gif'" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "nyu", "-o", str(tmp_path / "o"), "--processing-res", "50000"]) == 2
    assert "--processing-res 50000 is above the limit" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err


# ---------------------------------------------------------------------------- models that cannot be loaded


def _broken_models(tiny_pipeline_dir, tmp_path) -> dict[str, tuple[list[str], str]]:
    """case -> (flags, what the one line must say)."""
    from apdepth.testing import tiny_unet

    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_pipeline_dir, corrupt)
    weights = corrupt / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    four = tmp_path / "four"
    shutil.copytree(tiny_pipeline_dir, four)
    shutil.rmtree(four / "unet")
    tiny_unet(in_channels=4).save_pretrained(four / "unet")
    no_prior = tmp_path / "prior_folder"
    no_prior.mkdir()
    return {
        "missing": (["--model", str(tmp_path / "nope")], f"--model {tmp_path / 'nope'}: no such folder"),
        "empty": (["--model", str(empty)], f"--model {empty}: not an ApDepth checkpoint folder (empty;"),
        "corrupt": (["--model", str(corrupt)], f"cannot load the model {corrupt}: "),
        "4-channel": (["--model", str(four)], "ApDepth needs an 8-channel UNet (prior latent + RGB latent); got 4"),
        "prior folder": (["--model", tiny_pipeline_dir, "--prior", str(no_prior)],
                         f"--prior {no_prior}: no config.json in this folder"),
        "uncached prior": (["--model", tiny_pipeline_dir, "--prior", "someone/no-such-prior", "--offline"],
                           f"cannot load the model {tiny_pipeline_dir} with --prior someone/no-such-prior: "),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "4-channel", "prior folder", "uncached prior"])
def test_a_model_that_cannot_load_ends_in_one_line(case, tiny_pipeline_dir, image, tmp_path, capsys):
    flags, message = _broken_models(tiny_pipeline_dir, tmp_path)[case]
    rc = main(["predict", str(image), "-o", str(tmp_path / "out"), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("apdepth predict: error:"))
    assert message in line, err
    if case == "corrupt":
        assert "safetensors" in line.lower() or "header" in line.lower() or "deserializ" in line.lower()


def test_verbose_shows_the_traceback(tiny_pipeline_dir, image, tmp_path, capsys):
    flags, _ = _broken_models(tiny_pipeline_dir, tmp_path)["4-channel"]
    assert main(["-v", "predict", str(image), "-o", str(tmp_path / "out"), "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "8-channel UNet" in err
