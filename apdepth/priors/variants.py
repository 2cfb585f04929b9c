"""The four Depth Anything V2 sizes: architecture numbers and where their weights live."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import DepthAnythingConfig, Dinov2Config


@dataclass(frozen=True)
class DA2Variant:
    """One Depth Anything V2 size.

    ``layer_indices`` are the 0-based DINOv2 blocks the original DPT head reads; transformers counts
    the patch embedding as stage 0, so its ``out_indices`` are these plus one.
    """

    name: str
    encoder: str  # the original code's name: vits / vitb / vitl / vitg
    hidden_size: int
    num_layers: int
    num_heads: int
    features: int  # DPT fusion width
    out_channels: tuple[int, int, int, int]
    layer_indices: tuple[int, int, int, int]
    swiglu: bool
    hub_id: str | None  # transformers checkpoint on the Hugging Face hub, if one was released
    pth_repo: str | None  # hub repository holding the original .pth file, if one was released

    @property
    def pth_filename(self) -> str:
        return f"depth_anything_v2_{self.encoder}.pth"

    def to_config(self) -> DepthAnythingConfig:
        backbone = Dinov2Config(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            mlp_ratio=4,
            image_size=518,
            patch_size=14,
            layerscale_value=1.0,
            use_swiglu_ffn=self.swiglu,
            out_indices=[i + 1 for i in self.layer_indices],
            apply_layernorm=True,
            reshape_hidden_states=False,
        )
        return DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=14,
            reassemble_hidden_size=self.hidden_size,
            reassemble_factors=[4, 2, 1, 0.5],
            neck_hidden_sizes=list(self.out_channels),
            fusion_hidden_size=self.features,
            head_hidden_size=32,
            head_in_index=-1,
            depth_estimation_type="relative",
        )


VARIANTS: dict[str, DA2Variant] = {
    v.name: v
    for v in (
        DA2Variant("small", "vits", 384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11), False,
                   "depth-anything/Depth-Anything-V2-Small-hf", "depth-anything/Depth-Anything-V2-Small"),
        DA2Variant("base", "vitb", 768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11), False,
                   "depth-anything/Depth-Anything-V2-Base-hf", "depth-anything/Depth-Anything-V2-Base"),
        DA2Variant("large", "vitl", 1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23), False,
                   "depth-anything/Depth-Anything-V2-Large-hf", "depth-anything/Depth-Anything-V2-Large"),
        # ViT-G was announced but never officially released: only a local .pth can provide it.
        DA2Variant("giant", "vitg", 1536, 40, 24, 384, (1536, 1536, 1536, 1536), (9, 19, 29, 39), True,
                   None, None),
    )
}

ALIASES = {
    "s": "small", "vits": "small", "small": "small",
    "b": "base", "vitb": "base", "base": "base",
    "l": "large", "vitl": "large", "large": "large",
    "g": "giant", "vitg": "giant", "giant": "giant",
}


def get_variant(name: str) -> DA2Variant:
    key = ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"Unknown Depth Anything V2 size {name!r}; expected one of {sorted(ALIASES)}.")
    return VARIANTS[key]


def variant_for_width(hidden_size: int) -> DA2Variant:
    """The standard size whose ViT width is ``hidden_size`` (used to recognise an original .pth)."""
    for v in VARIANTS.values():
        if v.hidden_size == hidden_size:
            return v
    raise ValueError(
        f"No Depth Anything V2 size has a ViT width of {hidden_size} "
        f"(known: {[v.hidden_size for v in VARIANTS.values()]}); pass config= for a custom architecture."
    )
