"""What a training stage is: the one interface the loop (:mod:`.loop`) trains through.

A stage says what it builds, what it reads, what it computes and what it logs; the loop does the rest
(devices, accumulation, optimizer, EMA, checkpoints, validation, export) the same way for every stage
and never asks which one it runs. :class:`~.stage1.Stage1` (feature alignment) and
:class:`~.stage2.Stage2` (depth) are the two implementations; :func:`~.build.build_stage` makes the
one a config names.

=====================  ==========================================  ============================================
                       stage 1                                     stage 2
=====================  ==========================================  ============================================
trains (beside UNet)   ``adapter`` (mid block -> encoder width)    nothing
runs frozen            the external encoder (DINOv2 ...)           the VAE (its decoder, for the pixel losses)
UNet parts frozen      after the mid block (alignment alone)       none
reads                  RGB / prior latents (+ depth latent with    RGB / prior / depth latents
                       ``latent_mse_weight > 0``)
losses                 ``align`` [+ ``latent_mse``]                phase 1: ``latent_mse`` + ``pixel_l1``;
                                                                   phase 2: ``freq``
phases                 one                                         two: the FFT loss after ``phase1_steps``
logs (beside losses)   nothing                                     ``train/phase``
exports (in final/)    ``adapter/``                                nothing
=====================  ==========================================  ============================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from .inputs import StepInputs


class TrainingStage(ABC):
    """One stage of ApDepth training, as the loop sees it.

    Steps are optimizer steps, 1-based: ``step`` is the optimizer step being computed.
    """

    name: str  # "stage1", "stage2"

    # ------------------------------------------------------------------ what it builds
    @abstractmethod
    def prepare_unet(self, unet: nn.Module) -> None:
        """Freeze the UNet parts no loss of this stage reaches (so neither DDP nor Adam waits for them)."""

    @abstractmethod
    def trainable_modules(self) -> dict[str, nn.Module]:
        """The stage's own trained modules beside the UNet, by name (checkpoints store them under it);
        :class:`~.inputs.TrainModule` takes them as keyword arguments."""

    @abstractmethod
    def frozen_modules(self) -> dict[str, nn.Module]:
        """Modules the losses run but never train; the loop puts them on the training device."""

    # ------------------------------------------------------------------ what it reads (and the cache holds)
    @property
    @abstractmethod
    def needs_depth_latent(self) -> bool:
        """Whether the losses read the ground-truth depth latent (VAE-encoded each step, or read from the
        latent cache, which always holds it) besides the RGB and prior latents of the condition."""

    def prepare_inputs(self, inputs: StepInputs) -> StepInputs:
        """The micro-batch the losses see, from what :func:`~.inputs.encode_inputs` (or the cache) gave;
        runs under ``no_grad``. The default passes it on unchanged."""
        return inputs

    # ------------------------------------------------------------------ what it computes
    @abstractmethod
    def phase(self, step: int) -> int:
        """The loss phase of optimizer step ``step`` (1, 2, ...)."""

    @abstractmethod
    def losses(self, model: nn.Module, inputs: StepInputs, step: int) -> dict[str, torch.Tensor]:
        """``{"loss": the total to backpropagate, <term>: each weighted term}`` for one micro-batch;
        ``model`` is the (possibly distributed) :class:`~.inputs.TrainModule`."""

    # ------------------------------------------------------------------ what it logs and exports
    @abstractmethod
    def log_values(self, step: int) -> dict[str, float]:
        """Scalars logged with the loss terms at ``step`` (TensorBoard tag -> value)."""

    @abstractmethod
    def export(self, folder: Path) -> None:
        """Write what the stage adds to the exported pipeline folder ``folder`` (after the pipeline)."""
