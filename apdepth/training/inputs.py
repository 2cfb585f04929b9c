"""What a training step feeds the UNet, and the trainable module itself.

:func:`encode_inputs` turns a collated batch into :class:`StepInputs` with the frozen parts of the
model (prior, VAE encoder) run once, under ``no_grad``, through the pipeline's own steps
(:meth:`ApDepthPipeline.encode_condition`, :func:`apdepth.diffusion.encode_latent`), or read from the
latent cache when the batch carries cached latents.

:class:`TrainModule` groups everything that trains (the UNet, and in stage 1 the adapter) into one
module, the unit that accelerate wraps for distributed data parallel. Stage 1 reads the UNet's
mid-block output through a forward hook; the UNet itself is diffusers' own, unmodified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion import encode_latent
from ..losses import latent_valid_mask
from ..pipeline import ApDepthPipeline

CACHED_KEYS = ("rgb_latent", "prior_latent", "depth_latent")


@dataclass
class StepInputs:
    """One micro-batch, on the model's device.

    ``rgb`` ``[B,3,H,W]`` in [-1,1]; ``depth_norm`` ``[B,1,H,W]`` in [-1,1]; ``valid_mask`` bool
    ``[B,1,H,W]``; latents ``[B,4,H/8,W/8]`` (``depth_latent`` is None when not needed).
    """

    rgb: torch.Tensor
    depth_norm: torch.Tensor
    valid_mask: torch.Tensor
    rgb_latent: torch.Tensor
    prior_latent: torch.Tensor
    depth_latent: torch.Tensor | None = None

    def condition(self, order: str = "prior_rgb") -> torch.Tensor:
        """UNet input ``[B, 8, h, w]``: ``cat([prior, rgb])`` (the paper, inference) or ``cat([rgb, prior])``
        (the release's stage 1)."""
        if order == "prior_rgb":
            return torch.cat([self.prior_latent, self.rgb_latent], dim=1)
        if order == "rgb_prior":
            return torch.cat([self.rgb_latent, self.prior_latent], dim=1)
        raise ValueError(f"Unknown condition order {order!r}; expected 'prior_rgb' or 'rgb_prior'")

    @property
    def latent_mask(self) -> torch.Tensor:
        """bool ``[B, 1, h, w]``: latent cells whose 8x8 pixel block is entirely valid."""
        return latent_valid_mask(self.valid_mask)


@torch.no_grad()
def encode_inputs(pipe: ApDepthPipeline, batch: dict, need_depth_latent: bool = True) -> StepInputs:
    """Run the frozen encoders on a collated batch (or take the cached latents it carries)."""
    device = pipe.vae.device
    rgb = batch["rgb"].to(device, non_blocking=True)
    depth_norm = batch["depth_norm"].to(device, non_blocking=True)
    valid = batch["valid_mask"].to(device, non_blocking=True)
    if all(k in batch for k in CACHED_KEYS):
        latents = [batch[k].to(device, dtype=torch.float32, non_blocking=True) for k in CACHED_KEYS]
        return StepInputs(rgb, depth_norm, valid, latents[0], latents[1], latents[2] if need_depth_latent else None)
    condition = pipe.encode_condition(rgb).float()  # [B, 8, h, w] = cat([prior, rgb])
    prior_latent, rgb_latent = condition[:, :4], condition[:, 4:]
    depth_latent = None
    if need_depth_latent:
        depth_latent = encode_latent(pipe.vae, depth_norm.expand(-1, 3, -1, -1)).float()  # [B, 4, h, w]
    return StepInputs(rgb, depth_norm, valid, rgb_latent, prior_latent, depth_latent)


class TrainModule(nn.Module):
    """The trainable parts: ``unet`` and, in stage 1, ``adapter`` fed by the UNet's mid block.

    ``forward(condition)`` returns ``{"latent": [B,4,h,w]}`` plus ``"features"`` ``[B,C_ext,h64,w64]`` (the
    adapted mid-block features) when there is an adapter. The UNet step is the pipeline's
    :meth:`~ApDepthPipeline.predict_latent` (t = 1, cached empty-prompt embedding).
    """

    def __init__(self, pipe: ApDepthPipeline, adapter: nn.Module | None = None):
        super().__init__()
        self.unet = pipe.unet
        self.adapter = adapter
        self._pipe = (pipe,)  # a tuple: not registered as a submodule
        self._features: torch.Tensor | None = None
        self._hook = None
        if adapter is not None:
            self._hook = self.unet.mid_block.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self._features = output  # [B, 1280, h64, w64]

    def remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def forward(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        pipe = self._pipe[0]
        out = {"latent": pipe.predict_latent(condition)}
        if self.adapter is not None:
            features, self._features = self._features, None
            if features is None:
                raise RuntimeError("The UNet mid-block hook captured nothing; is the hook registered?")
            out["features"] = self.adapter(features)
        return out
