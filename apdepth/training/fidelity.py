"""Measure where apdepth's paper-default training differs from the authors' release (docs/fidelity.md).

``python -m apdepth.training.fidelity`` prints every number of the "Stage 1, stage 2 and training
data" table: the two learning-rate schedules at the boundary steps, the phase lengths, the FFT loss
of one fixed batch under both means, the stage-1 alignment targets of the two DINOv2 inputs (on the
embedded demo model's prior backbone, a miniature DA2) and the Hypersim quantile shift of normalising
after the resize instead of before (on a synthetic 768x1024 frame). CPU, under a minute.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import PACKAGED_CONFIGS, build_config

STEPS = (0, 1, 100, 101, 20_000, 20_001, 25_000)


def _schedule(cfg):
    from .schedule import LRSchedule

    return LRSchedule.from_config(cfg.optim)


def schedules(configs: Path) -> list[str]:
    paper, release = build_config(None, ["stage=2"]), build_config(configs / "stage2_release.yaml")
    f, g = _schedule(paper), _schedule(release)
    lines = ["LR factor after n optimizer steps (LambdaLR index; step n+1 runs at lr x factor), lr = 3e-5:",
             "| n | paper factor | paper lr | release factor | release lr |", "| --- | --- | --- | --- | --- |"]
    for n in STEPS:
        lines.append(f"| {n:,} | {f(n):.6g} | {paper.optim.lr * f(n):.4g} | {g(n):.6g} | {release.optim.lr * g(n):.4g} |")
    total = sum(f(n) for n in range(paper.max_steps)), sum(g(n) for n in range(release.max_steps))
    lines.append(f"sum of factors over 21,000 steps: paper {total[0]:.2f}, release {total[1]:.2f} "
                 f"(release/paper {total[1] / total[0]:.4f})")
    phases = []
    for cfg in (paper, release):
        ones = min(cfg.stage2.phase1_steps, cfg.max_steps)
        phases.append(f"{ones:,} + {cfg.max_steps - ones:,}")
    lines.append(f"stage-2 phases (latent MSE + L1 steps + FFT steps): paper {phases[0]}, release {phases[1]}")
    return lines


def fft_mean(configs: Path) -> list[str]:
    from .inputs import StepInputs
    from .stage2 import Stage2

    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 60, 80, generator=gen), torch.randn(2, 4, 60, 80, generator=gen)
    valid = torch.rand(2, 1, 480, 640, generator=gen) > 0.001
    valid[1] = False  # sample 1 of the micro-batch has no valid pixel
    inputs = StepInputs(torch.zeros(2, 3, 480, 640), torch.zeros(2, 1, 480, 640), valid, pred, pred, target)
    release = build_config(configs / "stage2_release.yaml")
    own = build_config(configs / "stage2_release.yaml", ["stage2.freq_mean=valid"])
    out = [Stage2(c.stage2, vae=None).losses(lambda _: {"latent": pred}, inputs, 20_002)["freq"].item()
           for c in (own, release)]
    return [f"FFT loss (latent, strength 1, p 1) of a fixed 2-sample batch, one sample all-invalid: "
            f"freq_mean=valid {out[0]:.5f}, freq_mean=batch (release) {out[1]:.5f}, ratio {out[1] / out[0]:.4f}"]


def encoder_inputs() -> list[str]:
    from ..embedded import embedded_model_path, has_embedded_model
    from ..modules import DINOv2Encoder
    from ..priors import load_prior
    from ..synth.datasets import render_scene

    if not has_embedded_model():
        return ["(the embedded demo model is not installed: encoder measurements skipped)"]
    prior = load_prior(embedded_model_path() / "prior")
    backbone = prior.model.backbone
    image = render_scene("hypersim", seed=3, scene=0, frames=[0], size=(480, 640)).files[0][1]
    rgb = _decode_png(image)  # [1, 3, 480, 640] in [-1, 1]
    grid = (8, 10)  # SD2's mid-block grid at 480x640 (latent 60x80, three stride-2 downsamples)

    def target(mode: str, original: bool = True) -> torch.Tensor:
        enc = DINOv2Encoder.from_backbone(backbone, input_mode=mode)
        if mode == "release" and not original:  # release input, transformers' position interpolation
            with torch.no_grad():
                x = enc.release_input(rgb)
                tokens = enc.model(pixel_values=x).last_hidden_state[:, 1:]
                out = tokens.transpose(1, 2).reshape(1, -1, x.shape[-2] // 14, x.shape[-1] // 14)
        else:
            out = enc(rgb)
        return out, F.interpolate(out.float(), size=grid, mode="bicubic", align_corners=False)

    (paper_grid, paper), (release_grid, release), (_, release_hf) = (
        target("paper"), target("release"), target("release", original=False))
    cos = F.cosine_similarity(paper, release, dim=1).mean().item()
    cos_hf = F.cosine_similarity(release_hf, release, dim=1).mean().item()
    rel = ((release_hf - release).abs().max() / release.abs().max()).item()
    return [f"stage-1 DINOv2 grid at 480x640: paper {tuple(paper_grid.shape[-2:])}, release "
            f"{tuple(release_grid.shape[-2:])} (embedded demo prior, width {backbone.config.hidden_size})",
            f"alignment targets on the 8x10 adapter grid: mean cosine(paper, release) {cos:.4f} "
            f"(1 - cos = {1 - cos:.4f})",
            f"release input, transformers' vs the original position-embedding interpolation: mean cosine "
            f"{cos_hf:.6f}, max abs difference {rel:.2e} of the largest target value"]


def _decode_png(data: bytes) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255 * 2 - 1


def hypersim_size() -> list[str]:
    from ..data import HypersimDataset
    from ..data.training import TrainingView, normalize_depth
    from ..synth.datasets import SPLIT_NAME, generate

    with tempfile.TemporaryDirectory() as tmp:
        generate("hypersim", tmp, 2, seed=0, size=(768, 1024), progress=False)
        reader = HypersimDataset(tmp, Path(tmp) / SPLIT_NAME["hypersim"])
        view = TrainingView([reader])
        worst = 0.0
        for i in range(len(reader)):
            marigold = view[(0, i, False)]["depth_norm"]
            small = reader[i]
            after = normalize_depth(small["depth"], small["valid_mask"])
            worst = max(worst, (marigold - after).abs().max().item())
    return [f"Hypersim 768x1024 -> 480x640: {768 * 1024 / (480 * 640):.2f}x fewer pixels; normalising the "
            f"resized frame instead of the full one (Marigold's order) moves depth_norm by up to {worst:.2e} "
            "(2 synthetic frames)"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, default=PACKAGED_CONFIGS, help="folder with stage2_release.yaml")
    args = parser.parse_args(argv)
    for section in (schedules(args.configs), fft_mean(args.configs), encoder_inputs(), hypersim_size()):
        print("\n".join(section), end="\n\n")


if __name__ == "__main__":
    main()
