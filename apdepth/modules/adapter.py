"""Stage-1 feature adapters: project UNet mid-block features onto the external encoder's channels.

:class:`ConvFeatureAdapter` is the paper's (Eq. 7-9): ``Conv1x1 -> GN -> SiLU -> Conv3x3 -> GN -> SiLU
-> Conv1x1``; it sees a 3x3 neighbourhood. :class:`MLPFeatureAdapter` is the Table 3 ablation: the
same depth of layers applied to each position alone (``Linear -> SiLU -> Linear -> SiLU -> Linear``).
Both map ``[B, C_in, h, w]`` to ``[B, C_out, h, w]`` and save/load as diffusers models
(``config.json`` + safetensors).
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

ADAPTER_KINDS = ("conv", "mlp")


class ConvFeatureAdapter(ModelMixin, ConfigMixin):
    """Spatial-preserving adapter (Eq. 7-9).

    Args:
        in_channels: UNet feature width (1280 for SD2's mid block).
        out_channels: external encoder width (e.g. 1024 for DINOv2 ViT-L, 1536 for ViT-g).
        hidden_channels: width of the two inner convolutions (default: ``out_channels``).
        num_groups: GroupNorm groups; must divide ``hidden_channels``.
    """

    @register_to_config
    def __init__(self, in_channels: int = 1280, out_channels: int = 1536, hidden_channels: int | None = None,
                 num_groups: int = 32):
        super().__init__()
        hidden = hidden_channels or out_channels
        _check_groups(hidden, num_groups)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1),  # Eq. 7
            nn.GroupNorm(num_groups, hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),  # Eq. 8
            nn.GroupNorm(num_groups, hidden),
            nn.SiLU(),
            nn.Conv2d(hidden, out_channels, kernel_size=1),  # Eq. 9
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, h, w]`` -> ``[B, C_out, h, w]``."""
        return self.net(features)


class MLPFeatureAdapter(ModelMixin, ConfigMixin):
    """Point-wise adapter (Table 3 ablation): a 3-layer MLP applied at every position."""

    @register_to_config
    def __init__(self, in_channels: int = 1280, out_channels: int = 1536, hidden_channels: int | None = None):
        super().__init__()
        hidden = hidden_channels or out_channels
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, out_channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, h, w]`` -> ``[B, C_out, h, w]``."""
        x = features.permute(0, 2, 3, 1)  # [B, h, w, C_in]
        return self.net(x).permute(0, 3, 1, 2)  # [B, C_out, h, w]


def _check_groups(channels: int, groups: int) -> None:
    if groups < 1 or channels % groups:
        raise ValueError(f"GroupNorm: {groups} groups do not divide {channels} channels")


def build_adapter(kind: str, in_channels: int, out_channels: int, hidden_channels: int | None = None,
                  num_groups: int = 32) -> ModelMixin:
    """An adapter of ``kind`` (``"conv"``: the paper's, ``"mlp"``: the Table 3 ablation)."""
    if kind == "conv":
        return ConvFeatureAdapter(in_channels, out_channels, hidden_channels, num_groups)
    if kind == "mlp":
        return MLPFeatureAdapter(in_channels, out_channels, hidden_channels)
    raise ValueError(f"Unknown adapter {kind!r}; expected one of {ADAPTER_KINDS}")


def load_adapter(path) -> ModelMixin:
    """Load an adapter saved with ``save_pretrained`` (either kind, recognised from its config)."""
    import json
    import os

    config_file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path}: no config.json; not a saved feature adapter")
    with open(config_file) as f:
        name = json.load(f).get("_class_name")
    classes = {cls.__name__: cls for cls in (ConvFeatureAdapter, MLPFeatureAdapter)}
    if name not in classes:
        raise ValueError(f"{path}: config.json describes {name!r}, not one of {sorted(classes)}")
    return classes[name].from_pretrained(path)
