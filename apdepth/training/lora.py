"""LoRA fine-tuning of the UNet through peft (``lora.*`` config keys), and its export.

:func:`apply_lora` freezes the UNet and adds low-rank adapters (diffusers' ``add_adapter``, peft's
``LoraConfig``) to the modules named by ``lora.target_modules``: only those adapters train (the rest of
the model is frozen anyway). :func:`merge_lora` folds them into the UNet's weights and removes the peft
layers, so the exported ``final/`` folder is a plain ApDepth pipeline that loads like any other.
:func:`save_lora_adapter` also writes the adapter alone (small), to be applied to the starting checkpoint::

    pipe = ApDepthPipeline.from_pretrained(<model.init_from>)
    pipe.unet.load_lora_adapter("<output_dir>/lora", prefix=None, use_safetensors=True)  # unmerged
    pipe.unet.fuse_lora()                                            # optional: fold it in
"""

from __future__ import annotations

import logging
import os

from torch import nn

from .config import ConfigError, LoraConfig

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ConfigError("lora.rank > 0 needs peft: pip install 'apdepth[finetune]'") from e
    return peft


def apply_lora(unet: nn.Module, cfg: LoraConfig) -> int:
    """Freeze ``unet`` and add trainable LoRA adapters; returns the number of trainable parameters."""
    peft = _peft()
    unet.requires_grad_(False)
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
                             lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                             init_lora_weights="gaussian")
    try:
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"lora.target_modules={cfg.target_modules}: {e}") from e
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    total = sum(p.numel() for p in unet.parameters())
    logger.info("LoRA rank %d (alpha %s) on %s: %d trainable parameters of %d (%.2f%%)", cfg.rank,
                cfg.alpha if cfg.alpha is not None else cfg.rank, ", ".join(cfg.target_modules), trainable, total,
                100.0 * trainable / max(total, 1))
    return trainable


def has_lora(unet: nn.Module) -> bool:
    return bool(getattr(unet, "_hf_peft_config_loaded", False))


def save_lora_adapter(unet: nn.Module, folder: str | os.PathLike) -> None:
    """The adapter alone (``pytorch_lora_weights.safetensors``), in diffusers' format."""
    unet.save_lora_adapter(os.fspath(folder), adapter_name=ADAPTER_NAME)


def merge_lora(unet: nn.Module) -> None:
    """Fold the adapters into the UNet's weights and remove the peft layers (in place)."""
    unet.fuse_lora(adapter_names=[ADAPTER_NAME])
    unet.unload_lora()
