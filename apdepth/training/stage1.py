"""Stage 1: feature alignment (paper Sec. 3.3, Eq. 7-11; docs/reference.md section 2).

The UNet's mid-block features go through the adapter and are pulled towards the frozen external
encoder's patch features (interpolated bicubically to the adapter's grid) by the cosine loss. The
release variant adds the masked latent MSE and feeds ``cat([rgb, prior])``.

With the alignment loss alone, the layers after the mid block (up blocks, output convolution) get no
gradient; they are frozen so that distributed data parallel does not wait for their gradients and
the optimizer holds no state for them. They still run in the forward pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import cosine_alignment_loss, masked_mse
from ..modules import ExternalEncoder
from .config import Stage1Config
from .inputs import StepInputs
from .stage import TrainingStage

logger = logging.getLogger(__name__)

AFTER_TAP = ("up_blocks", "conv_norm_out", "conv_out")  # UNet parts downstream of the mid block


class Stage1(TrainingStage):
    """Computes ``{"loss", "align"[, "latent_mse"]}`` for one micro-batch; trains the adapter with the UNet."""

    name = "stage1"

    def __init__(self, cfg: Stage1Config, encoder: ExternalEncoder | None, adapter: nn.Module | None):
        if (encoder is None) != (adapter is None):
            raise ValueError("Stage 1 needs both an external encoder and an adapter, or neither")
        if encoder is None and cfg.latent_mse_weight == 0:
            raise ValueError("Stage 1 without an external encoder needs latent_mse_weight > 0")
        self.cfg = cfg
        self.encoder = encoder
        self.adapter = adapter

    @property
    def needs_depth_latent(self) -> bool:
        return self.cfg.latent_mse_weight > 0

    def prepare_unet(self, unet: nn.Module) -> None:
        """Freeze what the loss cannot reach."""
        if self.cfg.latent_mse_weight == 0:
            for name in AFTER_TAP:
                module = getattr(unet, name, None)
                if module is not None:
                    module.requires_grad_(False)
            logger.info("Stage 1 (alignment only): %s frozen (no gradient reaches them)", ", ".join(AFTER_TAP))

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"adapter": self.adapter} if self.adapter is not None else {}

    def frozen_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder} if self.encoder is not None else {}

    def phase(self, step: int) -> int:
        return 1  # one loss throughout

    def log_values(self, step: int) -> dict[str, float]:
        return {}

    def export(self, folder: Path) -> None:
        """``<folder>/adapter``: the trained adapter (:func:`apdepth.modules.load_adapter` reads it)."""
        if self.adapter is not None:
            self.adapter.save_pretrained(folder / "adapter")

    def losses(self, model: nn.Module, inputs: StepInputs, step: int) -> dict[str, torch.Tensor]:
        """``step``: the optimizer step being computed (1-based); stage 1 has no schedule."""
        out = model(inputs.condition(self.cfg.condition_order))
        terms: dict[str, torch.Tensor] = {}
        loss = out["latent"].new_zeros(())
        if self.encoder is not None and self.cfg.align_weight > 0:
            features = out["features"]  # [B, C, h64, w64]
            target = self.encoder(inputs.rgb)  # [B, C, gh, gw]
            if target.shape[1] != features.shape[1]:
                raise ValueError(f"adapter gives {features.shape[1]} channels but the encoder {target.shape[1]}")
            target = F.interpolate(target.float(), size=features.shape[-2:], mode="bicubic", align_corners=False)
            terms["align"] = cosine_alignment_loss(features, target)
            loss = loss + self.cfg.align_weight * terms["align"]
        if self.cfg.latent_mse_weight > 0:
            terms["latent_mse"] = masked_mse(out["latent"], inputs.depth_latent, inputs.latent_mask)
            loss = loss + self.cfg.latent_mse_weight * terms["latent_mse"]
        return {"loss": loss, **terms}
