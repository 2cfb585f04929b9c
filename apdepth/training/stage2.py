"""Stage 2: depth with the iteration-based loss schedule (paper Sec. 3.4, Eq. 12-18; docs/reference.md section 3).

Phase 1 (optimizer steps ``1 .. phase1_steps``): ``MSE(z_pred, z_gt)`` over latent cells whose 8x8 block
is valid, plus ``L1(y_hat, y_gt)`` over valid pixels, ``y_hat`` decoded from ``z_pred`` by the frozen VAE
decoder with the gradient flowing through it. Phase 2 (later steps): ``freq_weight * L_freq`` alone,
on decoded depth (the paper) or on the latents (the release), invalid pixels / cells zeroed first.

``freq_mean`` decides what a sample without a single valid pixel / cell adds: ``"valid"`` leaves it
out of the mean; ``"batch"`` (the release) averages its spectra, all zeros on both sides (so a zero
difference), into the mean like any other sample, which scales the batch's loss by
``valid samples / batch size``. The release's phase boundary is ``effective_iter <= 20000`` with
``effective_iter`` counting finished steps, so phase 1 runs 20,001 steps (``phase1_steps=20001``).

``l1_crop`` (``"HxW"`` in pixels) computes phase 1's pixel L1 on one random crop per sample: the latent
crop (H/8 x W/8 cells) is decoded on its own and compared with the same pixels of the target; the decode's
cost falls with the crop's area. Uniform crop positions cover the image's centre more often than its
border, so each pixel is weighted by the inverse of its chance to be in the crop: the weighted mean then
estimates the whole image's L1 without a bias towards the centre (what remains: near the crop's border
the decoder sees less context than in a full decode). A crop as large as the image is the exact path.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..diffusion import decode_depth
from ..losses import frequency_loss, masked_l1, masked_mse
from ..pipeline import ApDepthPipeline
from .config import Stage2Config
from .inputs import StepInputs
from .prior_degrade import degrade_prior
from .stage import TrainingStage


class Stage2(TrainingStage):
    """Computes ``{"loss", ...terms}`` for one micro-batch; the terms depend on the phase."""

    name = "stage2"

    def __init__(self, cfg: Stage2Config, vae: nn.Module, generator: torch.Generator | None = None,
                 pipe: ApDepthPipeline | None = None):
        """``generator`` (CPU) draws the L1 crops' positions and the prior degradations; ``None``: torch's
        global generator. ``pipe`` runs the prior and encodes its degraded maps (needed when
        ``cfg.prior_degrade > 0``)."""
        self.cfg = cfg
        self.vae = vae
        self.generator = generator
        self.l1_crop = cfg.l1_crop_size()
        if cfg.prior_degrade > 0 and (pipe is None or not pipe.config.use_prior):
            raise ValueError("stage2.prior_degrade needs a pipeline with a prior (model.use_prior=true)")
        self.pipe = pipe

    def prepare_inputs(self, inputs: StepInputs) -> StepInputs:
        """With ``prior_degrade > 0``: the prior latent of the micro-batch recomputed from a degraded copy
        of the prior's map (:func:`~.prior_degrade.degrade_prior`), each sample with that probability;
        RGB and depth latents (cached or not) stay as they are."""
        if self.cfg.prior_degrade <= 0:
            return inputs
        disp = self.pipe.run_prior(inputs.rgb)  # [B, 1, H, W] in [-1, 1]
        disp = degrade_prior(disp, self.cfg.prior_degrade, self.generator)
        condition = self.pipe.encode_condition(inputs.rgb, disp, inputs.rgb_latent)  # [B, 8, h, w]
        return replace(inputs, prior_latent=condition[:, :4].float())

    def prepare_unet(self, unet: nn.Module) -> None:
        pass  # every loss reaches the whole UNet

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {}

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae} if self.vae is not None else {}  # its decoder: the pixel losses

    @property
    def needs_depth_latent(self) -> bool:
        return True  # phase 1's latent MSE, the latent FFT loss

    def log_values(self, step: int) -> dict[str, float]:
        return {"train/phase": self.phase(step)}

    def export(self, folder: Path) -> None:
        pass  # the pipeline is the whole model

    def phase(self, step: int) -> int:
        """Phase of optimizer step ``step`` (1-based): 1 up to ``phase1_steps``, then 2."""
        return 1 if step <= self.cfg.phase1_steps else 2

    def losses(self, model: nn.Module, inputs: StepInputs, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        latent = model(inputs.condition())["latent"]  # [B, 4, h, w]
        terms: dict[str, torch.Tensor] = {}
        if self.phase(step) == 1:  # terms with weight 0 are skipped (the pixel L1 costs a VAE decode)
            loss = latent.new_zeros(())
            if cfg.latent_mse_weight > 0:
                terms["latent_mse"] = masked_mse(latent, inputs.depth_latent, inputs.latent_mask)
                loss = loss + cfg.latent_mse_weight * terms["latent_mse"]
            if cfg.pixel_l1_weight > 0:
                target, mask, weight = inputs.depth_norm, inputs.valid_mask, None
                if self.l1_crop is not None:
                    latent, target, mask, weight = random_crops(latent, target, mask, self.l1_crop, self.generator)
                depth = decode_depth(self.vae, latent)  # [B, 1, H, W] (or the crop's), differentiable
                terms["pixel_l1"] = (masked_l1(depth, target, mask) if weight is None
                                     else weighted_l1(depth, target, mask, weight))
                loss = loss + cfg.pixel_l1_weight * terms["pixel_l1"]
        else:
            if cfg.freq_space == "pixel":
                pred, target, mask = decode_depth(self.vae, latent), inputs.depth_norm, inputs.valid_mask
            else:
                pred, target, mask = latent, inputs.depth_latent, inputs.latent_mask
            if cfg.freq_mean == "batch":  # zero the invalid elements here: every sample stays in the mean
                zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
                mask = mask.expand_as(pred)
                pred, target, mask = torch.where(mask, pred, zero), torch.where(mask, target, zero.to(target.dtype)), None
            terms["freq"] = frequency_loss(pred, target, mask, strength=cfg.freq_strength, p=cfg.freq_p,
                                           eps=cfg.freq_eps)
            loss = cfg.freq_weight * terms["freq"]
        return {"loss": loss, **terms}


def coverage_weights(length: int, crop: int) -> torch.Tensor:
    """``[length]``: ``1 / P(cell i is inside a crop of ``crop`` cells)`` for offsets uniform over the
    ``length - crop + 1`` positions; all ones when the crop is the whole length."""
    positions = length - crop + 1
    i = torch.arange(length)
    covered = torch.minimum(i, torch.full_like(i, positions - 1)) - torch.clamp(i - crop + 1, min=0) + 1
    return positions / covered.double()


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    """``sum(w |pred - target|) / sum(w)`` over the elements where ``mask`` is true; ``weight`` broadcasts."""
    keep = torch.ones_like(pred, dtype=torch.bool) if mask is None else mask.expand_as(pred)
    w = torch.where(keep, weight.to(pred.device, torch.float32).expand_as(pred), 0.0)
    total = w.sum()
    if total == 0:
        return (pred.float() - target.float()).abs().sum() * 0.0  # keeps the graph, as masked_l1 does
    return (w * (pred.float() - target.float()).abs()).sum() / total


def random_crops(latent: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int],
                 generator: torch.Generator | None = None):
    """One random crop per sample: latent ``[B, 4, h, w]`` -> ``[B, 4, hc, wc]`` and the matching pixels of
    ``target`` and ``mask`` ``[B, 1, 8h, 8w]`` -> ``[B, 1, 8hc, 8wc]``, plus each crop pixel's coverage
    weight ``[B, 1, 8hc, 8wc]`` (:func:`coverage_weights`). ``size`` is ``(H, W)`` in pixels (multiples of 8),
    clipped to the image; offsets are uniform over the positions on the latent grid. A crop as large as the
    image returns the inputs and ``None`` for the weight."""
    b, _, h, w = latent.shape
    if target.shape[-2:] != (8 * h, 8 * w):
        raise ValueError(f"l1_crop needs targets 8x the latent: latent {h}x{w}, target {tuple(target.shape[-2:])}")
    hc, wc = min(size[0] // 8, h), min(size[1] // 8, w)
    if (hc, wc) == (h, w):
        return latent, target, mask, None
    top = torch.randint(0, h - hc + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - wc + 1, (b,), generator=generator).tolist()
    lat = torch.stack([latent[i, :, y:y + hc, x:x + wc] for i, (y, x) in enumerate(zip(top, left))])
    tgt = torch.stack([target[i, :, 8 * y:8 * (y + hc), 8 * x:8 * (x + wc)] for i, (y, x) in enumerate(zip(top, left))])
    msk = None if mask is None else torch.stack(
        [mask[i, :, 8 * y:8 * (y + hc), 8 * x:8 * (x + wc)] for i, (y, x) in enumerate(zip(top, left))])
    wy, wx = coverage_weights(h, hc).repeat_interleave(8), coverage_weights(w, wc).repeat_interleave(8)  # per pixel
    weight = torch.stack([(wy[8 * y:8 * (y + hc), None] * wx[None, 8 * x:8 * (x + wc)])[None]
                          for y, x in zip(top, left)]).float()  # [B, 1, 8hc, 8wc]
    return lat, tgt, msk, weight.to(latent.device)
