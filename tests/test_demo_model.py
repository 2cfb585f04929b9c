"""The embedded demo model: its recipe runs end to end, it ships inside the package within budget, it is the
default without network, it beats trivial baselines on held-out synthetic scenes, and `apdepth evaluate`
reproduces the numbers on its model card."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from apdepth import hub
from apdepth.apps.cli import main
from apdepth.apps.commands import common
from apdepth.data import get_dataset
from apdepth.embedded import MODEL_CARD, WEIGHTS_DIR, embedded_model_path
from apdepth.embedded.evaluate import ResampledGroundTruth, constant_depth, ground_plane_ramp
from apdepth.embedded.recipe import PROCESSING_RES, Recipe, RecipeConfig
from apdepth.evaluation.protocol import Protocol
from apdepth.evaluation.runner import evaluate_dataset
from apdepth.pipeline import ApDepthPipeline
from apdepth.synth.datasets import ARCHIVE_NAME, SPLIT_NAME, generate

PREFIX = 12  # held-out NYU images regenerated in CI (4 rooms of 3 views; the card's archive starts with them)


def test_recipe_runs_end_to_end_and_installs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo-model", "-o", str(out), "--smoke", "--stage2-degraded", "0.5", "--outdoor", "0.7",
                 "--prior-focus-steps", "2", "--stage2-restart-steps", "2"]) == 0
    degraded = out / "data" / "hypersim_stage2_degraded"
    assert (degraded / "filename_list_train.txt").read_text() == (out / "data" / "hypersim" / "filename_list_train.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"nyu", "kitti"}
    assert set(metrics["nyu"]) == {"apdepth", "prior", "constant", "ramp", "gt_resampled"}
    card = (out / "MODEL_CARD.md").read_text()
    ours = metrics["nyu"]["apdepth"]["metrics"]
    assert f"| {ours['abs_rel']:.4f} | {ours['delta1']:.4f} |" in card  # the card shows what was measured
    whdr = json.loads((out / "eval" / "whdr.json").read_text())
    assert f"| {whdr['whdr']['model']:.3f} |" in card and "| vertical ramp (far at the top) |" in card
    assert whdr["whdr"]["constant"] == pytest.approx(0.5) and whdr["pairs"] >= 400
    assert sorted(p.name for p in (out / "examples").glob("*.png")) == ["bikes_125.png", "cheetah_cub.png",
                                                                        "china.png"]
    assert "](examples/cheetah_cub.png)" in card
    assert "50% of its images photometrically degraded" in card
    assert "then 2 steps on the open-air and close-up scenes only" in card  # the prior's focus phase ran
    assert "then a warm restart: 2 more steps from its weights" in card
    # the warm restart started from the first stage-2 run's weights, and its weights are the ones exported
    restart = out / "stage2_restart" / "final"
    assert (restart / "model_index.json").is_file()
    from safetensors.torch import load_file as load

    unet = "unet/diffusion_pytorch_model.safetensors"
    exported, first, second = (load(d / unet) for d in (out / "export", out / "stage2" / "final", restart))
    changed = [k for k in second if not torch.equal(second[k], first[k])]
    assert changed and all(torch.equal(exported[k], second[k].half()) for k in exported)
    log = json.loads((out / "recipe.json").read_text())
    assert list(log["steps"]) == ["data", "base", "stage1", "stage2", "export", "evaluate", "card"]
    # every trained part is in the export, in fp16, with the recipe's processing resolution
    from safetensors.torch import load_file

    stored = load_file(out / "export" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    pipe = ApDepthPipeline.from_pretrained(out / "export")
    assert pipe.config.default_processing_resolution == PROCESSING_RES["nyu"]
    assert pipe.unet.config.in_channels == 8 and pipe.prior is not None
    # a second run finds every step done and redoes nothing
    before = (out / "stage2" / "final" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main(["demo-model", "-o", str(out), "--smoke", "--steps", "data", "base", "stage1", "stage2"]) == 0
    assert (out / "stage2" / "final" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    from apdepth.embedded.recipe import install

    target = install(out, tmp_path / "installed")
    assert (target / "MODEL_CARD.md").is_file() and (target / "model_index.json").is_file()
    assert (target / "whdr.json").is_file() and (target / "examples" / "cheetah_cub.png").is_file()


def test_degraded_copy_changes_the_chosen_images_only(tmp_path):
    """Stage 2's degraded inputs: the chosen share of RGB images is changed (the geometry is not: same size),
    the rest and every depth file are links to the originals; the same seed gives the same bytes."""
    import numpy as np
    from PIL import Image

    from apdepth.embedded.pretraining import degraded_copy

    src = tmp_path / "src"
    generate("hypersim", src, 6, seed=0, workers=1, size=(32, 48))
    lines = [ln.split() for ln in (src / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
    assert degraded_copy(src, tmp_path / "all", 1.0, seed=3) == len(lines)
    assert degraded_copy(src, tmp_path / "none", 0.0, seed=3) == 0
    assert degraded_copy(src, tmp_path / "again", 1.0, seed=3) == len(lines)
    for rgb, depth, *_ in lines:
        original = np.asarray(Image.open(src / rgb))
        changed = np.asarray(Image.open(tmp_path / "all" / rgb))
        assert changed.shape == original.shape and not np.array_equal(changed, original)
        assert np.array_equal(changed, np.asarray(Image.open(tmp_path / "again" / rgb)))
        assert (tmp_path / "none" / rgb).resolve() == (src / rgb).resolve()
        assert (tmp_path / "all" / depth).resolve() == (src / depth).resolve()
    half = degraded_copy(src, tmp_path / "half", 0.5, seed=1)
    links = sum((tmp_path / "half" / rgb).is_symlink() for rgb, *_ in lines)
    assert half + links == len(lines)
    with pytest.raises(FileNotFoundError, match="not a Hypersim-layout training folder"):
        degraded_copy(tmp_path / "none" / "missing", tmp_path / "x")


def test_card_does_not_import_the_recipe():
    """card.py reads the recipe object it is given; importing it pulls in neither recipe.py nor torch training."""
    import subprocess
    import sys

    code = "import sys, apdepth.embedded.card; print('apdepth.embedded.recipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_recipe_device_governs_accelerate(tmp_path, monkeypatch):
    """Stages 1 and 2 go through accelerate, which would take any visible GPU: on ``cpu`` the recipe tells it
    to stay on the CPU (and restores the environment); on ``cuda`` it lets it use the GPU."""
    import os

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    recipe = Recipe(tmp_path, device="cpu")
    with recipe._accelerate_device():
        assert os.environ["ACCELERATE_USE_CPU"] == "true"
    assert "ACCELERATE_USE_CPU" not in os.environ
    if torch.cuda.is_available():
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
        with Recipe(tmp_path, device="cuda")._accelerate_device():
            assert "ACCELERATE_USE_CPU" not in os.environ
        assert os.environ["ACCELERATE_USE_CPU"] == "true"
    else:
        with pytest.raises(RuntimeError, match="CUDA"):
            Recipe(tmp_path, device="cuda")


def test_embedded_model_runs_in_fp32_by_default():
    """The weights are stored in fp16; loaded without a dtype, every part runs in fp32 (transformers 5
    would otherwise load the prior and the text encoder in their stored fp16)."""
    from apdepth._compat import transformers_dtype

    assert list(transformers_dtype(None).values()) == [torch.float32]
    assert list(transformers_dtype(torch.bfloat16).values()) == [torch.bfloat16]
    pipe = ApDepthPipeline.from_pretrained(embedded_model_path())
    for part in ("unet", "vae", "text_encoder"):
        assert getattr(pipe, part).dtype == torch.float32, part
    assert {p.dtype for p in pipe.prior.parameters()} == {torch.float32}


def test_smoke_recipe_is_small():
    cfg = RecipeConfig.smoke()
    assert sum(cfg.counts.values()) <= 8 and cfg.vae_steps <= 2 and cfg.prior_steps <= 2


def test_embedded_model_ships_in_the_package_within_25_mb(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = embedded_model_path()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 1024 * 1024
    assert MODEL_CARD.is_file() and "trained only on procedural scenes" in MODEL_CARD.read_text()
    pipe = ApDepthPipeline.from_pretrained(folder, dtype=torch.float32)
    for part in ("unet", "vae", "text_encoder", "prior"):
        assert getattr(pipe, part) is not None
    depth = pipe(torch.rand(3, 40, 52), output_type="pt").depth
    assert depth.shape == (1, 1, 40, 52) and 0 <= float(depth.min()) <= float(depth.max()) <= 1


def test_predict_without_model_uses_the_embedded_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(hub, "released_checkpoint_cached", lambda repo_id=hub.DEFAULT_MODEL: False)
    from PIL import Image

    Image.new("RGB", (37, 29), (120, 80, 40)).save(tmp_path / "a.png")
    with caplog.at_level("INFO"):
        assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--formats", "npy"]) == 0
    assert "using the embedded demo model" in caplog.text
    assert (tmp_path / "out" / "a_depth.npy").is_file()


def test_released_checkpoint_is_preferred_when_cached(monkeypatch):
    import argparse

    monkeypatch.setattr(hub, "released_checkpoint_cached", lambda repo_id=hub.DEFAULT_MODEL: True)
    args = argparse.Namespace(model=None)
    assert common.resolve_model(args) == hub.DEFAULT_MODEL == args.model
    assert hub.resolve_model(None) == (hub.DEFAULT_MODEL, hub.DEFAULT_MODEL)
    assert common.resolve_model(argparse.Namespace(model="embedded")) == str(WEIGHTS_DIR)
    assert hub.resolve_model("embedded") == (hub.EMBEDDED, str(WEIGHTS_DIR))


@pytest.fixture(scope="module")
def heldout_nyu(tmp_path_factory):
    """The first PREFIX images of the card's held-out NYU-layout archive, regenerated (synth is deterministic)."""
    cfg = RecipeConfig()
    folder = tmp_path_factory.mktemp("nyu")
    generate("nyu", folder, PREFIX, seed=cfg.seed, progress=False)
    return folder / ARCHIVE_NAME["nyu"], folder / SPLIT_NAME["nyu"]


def _rows(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["rgb_path"]: r for r in csv.DictReader(f)}


def test_evaluate_reproduces_the_model_card(heldout_nyu, tmp_path):
    data, split = heldout_nyu
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "nyu", "--data", str(data), "--split", str(split), "--model", "embedded",
                 "--processing-res", str(PROCESSING_RES["nyu"]), "-o", str(out)]) == 0
    ours = _rows(out / "nyu" / "per_sample.csv")
    shipped = _rows(WEIGHTS_DIR / "per_sample_nyu.csv")
    assert len(ours) == PREFIX
    for path, row in ours.items():
        for key in ("abs_rel", "delta1", "boundary_f1"):
            assert float(row[key]) == pytest.approx(float(shipped[path][key]), abs=1e-4, nan_ok=True), (path, key)


def test_beats_the_trivial_baselines(heldout_nyu, tmp_path):
    """On the first 12 held-out images the card's model has AbsRel 0.168 and delta1 0.79, constant depth
    0.322 / 0.57 and the ground-plane ramp 0.204 / 0.73 (these rooms suit the ramp: the margin over it is small)."""
    data, split = heldout_nyu
    dataset = get_dataset("nyu", data, split)
    shipped = _rows(WEIGHTS_DIR / "per_sample_nyu.csv")
    ours = [shipped[e[0]] for e in dataset.entries]
    mean = {k: sum(float(r[k]) for r in ours) / len(ours) for k in ("abs_rel", "delta1")}
    margins = {"constant": (0.6, 0.15), "ramp": (0.9, 0.02)}  # AbsRel below factor x theirs; delta1 above +margin
    for name, predictor in (("constant", constant_depth), ("ramp", ground_plane_ramp)):
        protocol = Protocol.for_dataset(dataset, processing_resolution=PROCESSING_RES["nyu"])
        base = evaluate_dataset(dataset, predictor, tmp_path / name, protocol, progress=False).summary["metrics"]
        factor, delta_margin = margins[name]
        assert mean["abs_rel"] < factor * base["abs_rel"], (name, mean, base)
        assert mean["delta1"] > base["delta1"] + delta_margin, (name, mean, base)


def test_resampled_ground_truth_reference(heldout_nyu, tmp_path):
    """The card's reference row: at native resolution it is the ground truth (AbsRel 0, every contour found);
    resampled to the processing resolution it keeps AbsRel small but loses pixel-exact contours."""
    data, split = heldout_nyu
    dataset = get_dataset("nyu", data, split)
    result = {}
    for res in (0, PROCESSING_RES["nyu"]):
        protocol = Protocol.for_dataset(dataset, processing_resolution=res)
        result[res] = evaluate_dataset(dataset, ResampledGroundTruth(res), tmp_path / str(res), protocol,
                                       limit=3, progress=False).summary["metrics"]
    assert result[0]["abs_rel"] == pytest.approx(0.0, abs=1e-6) and result[0]["boundary_f1"] == pytest.approx(1.0)
    low = result[PROCESSING_RES["nyu"]]
    assert low["abs_rel"] < 0.05 and low["boundary_f1"] < 0.5


@pytest.mark.slow
def test_evaluate_reproduces_the_whole_card_archive(tmp_path):
    """The card's full NYU-layout archive (60 images: about a minute to render)."""
    cfg = RecipeConfig()
    generate("nyu", tmp_path / "nyu", cfg.counts["nyu"], seed=cfg.seed, progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", "nyu", "--data", str(tmp_path / "nyu" / ARCHIVE_NAME["nyu"]),
                 "--split", str(tmp_path / "nyu" / SPLIT_NAME["nyu"]), "--model", "embedded",
                 "--processing-res", str(PROCESSING_RES["nyu"]), "-o", str(out)]) == 0
    summary = json.loads((out / "nyu" / "summary.json").read_text())["metrics"]
    card = json.loads((WEIGHTS_DIR / "metrics.json").read_text())["nyu"]["apdepth"]["metrics"]
    for key in ("abs_rel", "delta1", "boundary_f1"):
        assert summary[key] == pytest.approx(card[key], abs=1e-4, nan_ok=True)


def test_focus_split_keeps_the_open_air_and_close_up_frames(tmp_path):
    """The prior's focus phase reads the generator's scene kinds: only the open-air and close-up lines of the
    training list are kept, in order; a folder with neither is a clear error, and so is the flag without them."""
    from apdepth.embedded.recipe import focus_split

    frames = [("a/rgb_0.png", "open_air"), ("b/rgb_0.png", "kitchen"), ("c/rgb_0.png", "closeup"),
              ("d/rgb_0.png", "bedroom")]
    (tmp_path / "synth_meta.json").write_text(json.dumps({"frames": [{"rgb": r, "room": k} for r, k in frames]}))
    (tmp_path / "filename_list_train.txt").write_text("".join(f"{r} {r.replace('rgb', 'depth')}\n" for r, _ in frames))
    assert focus_split(tmp_path).read_text() == "a/rgb_0.png a/depth_0.png\nc/rgb_0.png c/depth_0.png\n"
    rooms = tmp_path / "rooms"
    rooms.mkdir()
    (rooms / "synth_meta.json").write_text(json.dumps({"frames": [{"rgb": "b/rgb_0.png", "room": "kitchen"}]}))
    (rooms / "filename_list_train.txt").write_text("b/rgb_0.png b/depth_0.png\n")
    with pytest.raises(ValueError, match="no frame of the kinds open_air, closeup"):
        focus_split(rooms)
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--smoke", "--outdoor", "0", "--closeup", "0",
                 "--prior-focus-steps", "5"]) == 2
    with pytest.raises(ValueError, match="with outdoor 0 and closeup 0 there are none"):  # the library path too
        Recipe(tmp_path / "y", RecipeConfig(outdoor=0.0, closeup=0.0, prior_focus_steps=5))


def test_stage2_steps_and_warm_restart_options(tmp_path, capsys):
    recipe = Recipe(tmp_path / "r", RecipeConfig(stage2_steps=4000))
    # the packaged preset: 2900 steps of latent MSE + L1, then 100 with the FFT loss
    assert recipe.stage2_overrides() == ["optim.max_steps=4000", "optim.decay_steps=4000", "stage2.phase1_steps=3900"]
    assert "4000 steps" in [line for line in recipe.plan(["stage2"])][0]
    assert Recipe(tmp_path / "r", RecipeConfig()).stage2_overrides() == []  # 0: the preset as it is
    with pytest.raises(ValueError, match="stage2_steps .* 100: stage 2 needs more than its 100 FFT steps"):
        Recipe(tmp_path / "r", RecipeConfig(stage2_steps=100))
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--stage2-steps", "50", "--dry-run"]) == 2
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--stage2-steps", "3500", "--dry-run"]) == 0
    assert "3500 steps" in capsys.readouterr().out
    restart = Recipe(tmp_path / "r", RecipeConfig(stage2_restart_steps=400))
    assert restart.plan(["stage2"])[0].startswith(f"stage2   -> {tmp_path / 'r' / 'stage2_restart' / 'final'}")
    assert "then a warm restart of 400 steps" in restart.plan(["stage2"])[0]
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--stage2-restart-steps", "-1", "--dry-run"]) == 2


def test_prior_width_option(tmp_path, capsys):
    """``--prior-width``: 96 builds the shipped prior's architecture exactly; a wider one scales the ViT and the
    DPT neck with it; a width outside the list is an error before any training (library and CLI)."""
    from apdepth.embedded.recipe import build_prior

    shipped = json.loads((WEIGHTS_DIR / "prior" / "config.json").read_text())["depth_anything_config"]
    built = build_prior(96).model.config.to_dict()
    for key in ("neck_hidden_sizes", "fusion_hidden_size", "head_hidden_size", "reassemble_hidden_size",
                "reassemble_factors", "patch_size"):
        assert built[key] == shipped[key], key
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "out_indices", "mlp_ratio"):
        assert built["backbone_config"][key] == shipped["backbone_config"][key], key
    wide = build_prior(144).model
    assert wide.config.backbone_config.hidden_size == 144 and wide.config.backbone_config.num_attention_heads == 4
    assert wide.config.neck_hidden_sizes == [36, 72, 144, 144] and wide.config.fusion_hidden_size == 48
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in build_prior(96).model.parameters())
    with pytest.raises(ValueError, match="prior width 100: choose among 96, 128, 144, 160, 192"):
        build_prior(100)
    with pytest.raises(ValueError, match=r"prior_width \(--prior-width\) 100"):
        Recipe(tmp_path / "r", RecipeConfig(prior_width=100))
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--prior-width", "100", "--dry-run"]) == 2
    assert main(["demo-model", "-o", str(tmp_path / "x"), "--prior-width", "144", "--dry-run"]) == 0
    assert "prior of width 144 600 steps" in capsys.readouterr().out
