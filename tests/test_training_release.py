"""The release presets (configs/stage*_release.yaml) against independent computations of the authors'
training code: the stage-1 DINOv2 input and alignment target, the learning-rate schedule, the phase
boundary, the redraw of samples with too few valid pixels, and the FFT loss's batch mean."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apdepth.data.training import TrainingView
from apdepth.losses import cosine_alignment_loss
from apdepth.modules import DINOv2Encoder
from apdepth.training import LRSchedule, build_config
from apdepth.training.inputs import StepInputs
from apdepth.training.stage1 import Stage1
from apdepth.training.stage2 import Stage2

REPO = Path(__file__).resolve().parents[1]
PAPER = build_config(None, ["stage=2"])
RELEASE_S1 = build_config(REPO / "apdepth" / "configs" / "stage1_release.yaml")
RELEASE_S2 = build_config(REPO / "apdepth" / "configs" / "stage2_release.yaml")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


# ------------------------------------------------------------------ an independent bicubic (PyTorch's rules)


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 for fraction ``t``."""
    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _bicubic_matrix(n_in: int, n_out: int, step: float) -> np.ndarray:
    """``[n_out, n_in]`` interpolation matrix: output ``i`` samples source ``(i + 0.5) * step - 0.5``
    (align_corners=False), taps clamped to the border, no antialias."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * step - 0.5
        base = math.floor(src)
        for k, w in zip(range(-1, 3), _cubic_weights(src - base)):
            m[i, min(max(base + k, 0), n_in - 1)] += w
    return m


def bicubic(x: np.ndarray, size: tuple[int, int], scale: tuple[float, float] | None = None) -> np.ndarray:
    """``[..., H, W]`` -> ``[..., h, w]``. With ``scale`` the source step is ``1 / scale`` (F.interpolate
    with ``scale_factor``), otherwise ``H / h``."""
    rows = _bicubic_matrix(x.shape[-2], size[0], 1 / scale[0] if scale else x.shape[-2] / size[0])
    cols = _bicubic_matrix(x.shape[-1], size[1], 1 / scale[1] if scale else x.shape[-1] / size[1])
    return np.einsum("ih,...hw,jw->...ij", rows, x, cols)


# ------------------------------------------------------------------ stage 1: encoder input and target


@pytest.fixture(scope="module")
def dinov2():
    from apdepth.testing import tiny_dinov2

    return tiny_dinov2(seed=3)  # 14-pixel patches, 2x2 position embeddings


def release_tokens(model, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The release's DINOv2 input and patch tokens, computed here: ImageNet normalisation of the [-1, 1]
    RGB, 0.875x bicubic by scale factor, and position embeddings interpolated with the original
    DINOv2 offset (grid + 0.1) / sqrt(N) as a scale factor, fed through the transformers blocks."""
    height, width = rgb.shape[-2:]
    x = (rgb - MEAN[:, None, None]) / STD[:, None, None]
    size = (math.floor(height * 0.875), math.floor(width * 0.875))
    x = bicubic(x, size, scale=(0.875, 0.875))
    grid = (size[0] // 14, size[1] // 14)
    pos = model.embeddings.position_embeddings.detach().double().numpy()  # [1, 1 + N, C]
    side = int(math.isqrt(pos.shape[1] - 1))
    table = pos[0, 1:].reshape(side, side, -1).transpose(2, 0, 1)  # [C, s, s]
    scale = ((grid[0] + 0.1) / side, (grid[1] + 0.1) / side)
    table = bicubic(table, grid, scale=scale).reshape(table.shape[0], -1).T  # [gh*gw, C]
    expected_pos = torch.from_numpy(np.concatenate([pos[0, :1], table])[None]).float()

    embeddings = model.embeddings
    original = embeddings.interpolate_pos_encoding
    embeddings.interpolate_pos_encoding = lambda emb, h, w: expected_pos
    try:
        with torch.no_grad():
            out = model(pixel_values=torch.from_numpy(x[None]).float()).last_hidden_state[0, 1:]
    finally:
        embeddings.interpolate_pos_encoding = original
    return x, out.numpy().T.reshape(-1, *grid)  # [3, h, w], [C, gh, gw]


def test_release_preset_selects_the_release_stage1():
    s1 = RELEASE_S1.stage1
    assert (s1.encoder, s1.encoder_input, s1.latent_mse_weight, s1.condition_order) == (
        "prior", "release", 1.0, "rgb_prior")
    assert RELEASE_S1.data.batch_size == 4 and RELEASE_S1.data.low_valid == "redraw"
    assert build_config(None, ["stage=1"]).stage1.encoder_input == "paper"


def test_release_encoder_input_and_tokens_match_an_independent_computation(dinov2):
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 64, 96, generator=gen) * 2 - 1  # latent grid 8x12 -> DINOv2 grid 4x6
    encoder = DINOv2Encoder(dinov2, input_mode="release")
    x, tokens = release_tokens(dinov2, rgb[0].double().numpy())
    np.testing.assert_allclose(encoder.release_input(rgb)[0].numpy(), x, atol=2e-4)  # fp32 bicubic
    grid = encoder(rgb)
    assert grid.shape == (1, 32, 4, 6)  # half the latent grid
    np.testing.assert_allclose(grid[0].numpy(), tokens, atol=1e-4)
    # the paper's input differs: [0, 1] RGB at the native size rounded to 14
    paper = DINOv2Encoder(dinov2)(rgb)
    assert paper.shape == (1, 32, 5, 7)


def test_release_grid_is_half_the_latent_grid_at_the_training_sizes(dinov2):
    encoder = DINOv2Encoder(dinov2, input_mode="release")
    for height, width in ((480, 640), (352, 1216)):
        assert encoder(torch.zeros(1, 3, height, width)).shape[-2:] == (height // 16, width // 16)


def test_release_alignment_target_and_loss(dinov2):
    """Stage 1's release terms: the DINOv2 grid resized bicubically to the adapter's grid, 1 - cosine,
    plus the masked latent MSE, on the [rgb, prior] input."""
    gen = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 64, 96, generator=gen) * 2 - 1
    latents = [torch.randn(2, 4, 8, 12, generator=gen) for _ in range(3)]
    valid = torch.rand(2, 1, 64, 96, generator=gen) > 0.05
    inputs = StepInputs(rgb, torch.zeros(2, 1, 64, 96), valid, latents[0], latents[1], latents[2])
    features = torch.randn(2, 32, 3, 5, generator=gen)  # the adapter's output on the UNet mid-block grid
    predicted = torch.randn(2, 4, 8, 12, generator=gen)
    seen = []

    def model(condition):
        seen.append(condition)
        return {"latent": predicted, "features": features}

    stage = Stage1(RELEASE_S1.stage1, DINOv2Encoder(dinov2, input_mode="release"), adapter=torch.nn.Identity())
    out = stage.losses(model, inputs, step=1)
    assert torch.equal(seen[0], torch.cat([latents[0], latents[1]], dim=1))  # [rgb, prior]

    targets = np.stack([release_tokens(dinov2, rgb[i].double().numpy())[1] for i in range(2)])  # [2, C, 4, 6]
    target = bicubic(targets, (3, 5))
    f = features.double().numpy()
    cos = (f * target).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(target, axis=1)
    assert out["align"].item() == pytest.approx(1 - cos.mean(), abs=1e-5)
    cells = torch.nn.functional.max_pool2d((~valid).float(), 8) == 0  # [2, 1, 8, 12]
    mask = cells.expand(-1, 4, -1, -1).numpy()
    err = (predicted - latents[2]).double().numpy() ** 2
    assert out["latent_mse"].item() == pytest.approx(err[mask].mean(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["align"].item() + out["latent_mse"].item(), rel=1e-6)
    assert cosine_alignment_loss(features, torch.from_numpy(target).float()).item() == pytest.approx(
        out["align"].item(), abs=1e-5)


def test_prior_encoder_names_its_backbone_and_the_fallback(tmp_path, caplog):
    from apdepth.testing import save_tiny_prior, tiny_pipeline
    from apdepth.training.build import build_stage

    pipe = tiny_pipeline(tmp_path / "pipe")
    cfg = build_config(REPO / "apdepth" / "configs" / "stage1_release.yaml", ["model.prior=small"])
    with caplog.at_level(logging.INFO, logger="apdepth.training.build"):
        stage = build_stage(cfg, pipe)
    assert "falls back" in caplog.text and "model.prior='small'" in caplog.text and "ViT-G" in caplog.text
    assert stage.encoder.model.embeddings is pipe.prior.model.backbone.embeddings
    assert stage.encoder.input_mode == "release"

    save_tiny_prior(tmp_path / "other", seed=5)
    caplog.clear()
    cfg = build_config(REPO / "apdepth" / "configs" / "stage1_release.yaml", [f"stage1.encoder_source={tmp_path / 'other'}"])
    with caplog.at_level(logging.INFO, logger="apdepth.training.build"):
        stage = build_stage(cfg, pipe)
    assert f"the Depth Anything V2 checkpoint {tmp_path / 'other'}" in caplog.text
    assert stage.encoder.model.embeddings is not pipe.prior.model.backbone.embeddings
    # the same checkpoint as the prior: its backbone is shared, not loaded twice
    same = build_config(REPO / "apdepth" / "configs" / "stage1_release.yaml",
                        [f"model.prior={tmp_path / 'other'}", f"stage1.encoder_source={tmp_path / 'other'}"])
    assert build_stage(same, pipe).encoder.model.embeddings is pipe.prior.model.backbone.embeddings


# ------------------------------------------------------------------ schedules


# LRSchedule(n): the factor of optimizer step n + 1 (LambdaLR's index). Hand values (30-digit decimal):
#   paper:   (n + 1) / 100 for n < 100, then 0.01 ** ((n - 100) / 25000), floor 0.01
#   release: n / 100 for n < 100, then exp((n - 100) / 24900 * ln 0.01), 0.01 from n = 25000
SCHEDULE = {
    0: (0.01, 0.0),
    1: (0.02, 0.01),
    100: (1.0, 1.0),
    101: (0.999815810157593, 0.999815070507752),
    20_000: (0.0255858588690565, 0.0252119493344467),
    20_001: (0.0255811462137435, 0.0252072869014577),
    25_000: (0.0101859138805412, 0.01),
}


def _schedule(cfg) -> LRSchedule:
    return LRSchedule.from_config(cfg.optim)  # what the training loop runs


@pytest.mark.parametrize("n", sorted(SCHEDULE))
def test_learning_rate_schedules_at_hand_computed_steps(n):
    paper, release = SCHEDULE[n]
    assert _schedule(PAPER)(n) == pytest.approx(paper, rel=1e-12, abs=1e-15)
    assert _schedule(RELEASE_S1)(n) == pytest.approx(release, rel=1e-12, abs=1e-15)
    assert _schedule(RELEASE_S2)(n) == pytest.approx(release, rel=1e-12, abs=1e-15)


def test_release_first_optimizer_step_runs_at_learning_rate_zero():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=3e-5)
    scheduler = _schedule(RELEASE_S2).scheduler(optimizer)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        before = weight.detach().clone()
        optimizer.step()
        scheduler.step()
        if len(lrs) == 1:
            assert torch.equal(weight.detach(), before)  # step 1 does not move the weights
    assert lrs == pytest.approx([0.0, 3e-7, 6e-7])


def test_phase_boundary_of_the_release_is_20001_plus_999_steps():
    release, paper = Stage2(RELEASE_S2.stage2, vae=None), Stage2(PAPER.stage2, vae=None)
    phases = [release.phase(s) for s in range(1, RELEASE_S2.max_steps + 1)]
    assert phases.count(1) == 20_001 and phases.count(2) == 999 and phases[20_000] == 1 and phases[20_001] == 2
    assert [paper.phase(s) for s in (20_000, 20_001)] == [1, 2]


# ------------------------------------------------------------------ low-valid samples and the FFT mean


class Frames(torch.utils.data.Dataset):
    """In-memory raw samples (the reader contract); ``bad`` indices have ``bad_pixels`` valid pixels."""

    def __init__(self, n: int, bad: set[int], bad_pixels: int = 3):
        gen = torch.Generator().manual_seed(n)
        self.items = []
        for i in range(n):
            depth = torch.rand(1, 8, 16, generator=gen) * 10 + 1
            valid = torch.ones(1, 8, 16, dtype=torch.bool)
            if i in bad:
                valid[:] = False
                valid.view(-1)[:bad_pixels] = True
            rgb = (torch.rand(3, 8, 16, generator=gen) * 255).to(torch.uint8)
            self.items.append({"rgb": rgb, "depth": depth, "valid_mask": valid, "index": i})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


def test_clear_keeps_a_low_valid_sample_and_empties_its_mask():
    view = TrainingView([Frames(6, {2})])
    sample = view[(0, 2, False)]
    assert sample["index"] == 2 and not sample["valid_mask"].any()


def test_redraw_replaces_a_low_valid_sample_deterministically():
    frames = Frames(50, {2, 7, 11})
    view = TrainingView([frames], low_valid="redraw", seed=4)
    sample = view[(0, 2, True)]
    assert sample["index"] not in (2, 7, 11) and sample["valid_mask"].all() and sample["flip"]
    again = TrainingView([frames], low_valid="redraw", seed=4)[(0, 2, True)]
    assert again["index"] == sample["index"]
    same = view[(0, sample["index"], True)]
    assert torch.equal(same["rgb"], sample["rgb"]) and torch.equal(same["depth_norm"], sample["depth_norm"])
    # the redraw sequence is the view's: attempt k draws redraw_index(source, index, k)
    first = view.redraw_index(0, 2, 0)
    expected = first if first not in (2, 7, 11) else None
    if expected is not None:
        assert sample["index"] == expected
    # 10 valid pixels are enough (the release: fewer than 10 is redrawn)
    assert TrainingView([Frames(5, {1}, bad_pixels=10)], low_valid="redraw")[(0, 1, False)]["index"] == 1
    assert TrainingView([Frames(5, {1}, bad_pixels=9)], low_valid="redraw")[(0, 1, False)]["index"] != 1
    with pytest.raises(ValueError, match="redraws from sample 0"):
        TrainingView([Frames(3, {0, 1, 2})], low_valid="redraw")[(0, 0, False)]


def _spectrum_loss(pred: np.ndarray, target: np.ndarray, strength: float) -> np.ndarray:
    """Per-element weighted |M_pred - M_gt| (p = 1) of the release's LatentFrequencyLoss."""
    height, width = pred.shape[-2:]
    mag = [np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))) for x in (pred, target)]
    u, v = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cu, cv = height // 2, width // 2
    weight = 1 + strength * np.sqrt((u - cu) ** 2 + (v - cv) ** 2) / (np.sqrt(cu**2 + cv**2) + 1e-8)
    return weight * np.abs(mag[0] - mag[1])


def test_fft_loss_mean_over_the_batch_includes_an_all_invalid_sample():
    gen = torch.Generator().manual_seed(2)
    predicted = torch.randn(2, 4, 6, 8, generator=gen)
    depth_latent = torch.randn(2, 4, 6, 8, generator=gen)
    valid = torch.ones(2, 1, 48, 64, dtype=torch.bool)
    valid[0, :, :16, :24] = False  # some invalid cells
    valid[1, :, 5, 5] = False
    valid[1, :, 9:, :] = False
    valid[1] = False  # sample 1: no valid pixel at all
    inputs = StepInputs(torch.zeros(2, 3, 48, 64), torch.zeros(2, 1, 48, 64), valid, predicted, predicted, depth_latent)

    def model(condition):
        return {"latent": predicted}

    cells = (torch.nn.functional.max_pool2d((~valid).float(), 8) == 0).expand(-1, 4, -1, -1).numpy()
    per_element = _spectrum_loss(np.where(cells, predicted.double().numpy(), 0),
                                 np.where(cells, depth_latent.double().numpy(), 0), strength=1.0)
    assert np.abs(per_element[1]).max() == 0  # the all-invalid sample: zero spectra on both sides

    release = Stage2(RELEASE_S2.stage2, vae=None).losses(model, inputs, step=20_002)
    assert release["freq"].item() == pytest.approx(per_element.mean(), rel=1e-5)  # both samples in the mean
    assert release["loss"].item() == pytest.approx(0.5 * per_element.mean(), rel=1e-5)
    valid_only = build_config(REPO / "apdepth" / "configs" / "stage2_release.yaml", ["stage2.freq_mean=valid"]).stage2
    own = Stage2(valid_only, vae=None).losses(model, inputs, step=20_002)
    assert own["freq"].item() == pytest.approx(per_element[0].mean(), rel=1e-5)  # twice the batch mean


def test_checkpoints_written_before_the_release_keys_resume_as_they_trained():
    from apdepth.training.build import check_resume
    from apdepth.training.config import ConfigError

    cfg = build_config(None, ["stage=2", "data.hypersim.resize=native"])
    saved = cfg.to_dict()
    for section, key in (("data", "low_valid"), ("stage2", "freq_mean"), ("optim", "warmup_from_zero")):
        del saved[section][key]
    del saved["data"]["hypersim"]["resize"], saved["data"]["vkitti"]["resize"]
    check_resume(cfg, saved, {"stage": 2, "step": 10}, "ckpt")  # filled in as the old run behaved: no change
    with pytest.raises(ConfigError, match="optim.warmup_from_zero"):
        check_resume(build_config(None, ["stage=2", "data.hypersim.resize=native", "optim.warmup_from_zero=true"]),
                     saved, {"stage": 2, "step": 10}, "ckpt")
