"""Depth Anything V2 as ApDepth's feed-forward prior (M_FFD).

``DepthAnythingPrior`` wraps transformers' ``DepthAnythingForDepthEstimation`` and owns its input
preprocessing. It is a diffusers ``ModelMixin`` so that it saves and loads as a pipeline component
(``prior/config.json`` + safetensors) next to the UNet and VAE.

Two preprocessing modes exist; a checkpoint records which one its UNet was trained with:

``"compat"`` (the authors' release, and the default)
    The [-1, 1] RGB itself (no ImageNet normalisation) is resized bilinearly (``align_corners=True``)
    to the next multiple of 14 per side, run through DA2 (ReLU output), resized back to H x W the
    same way. The relative inverse depth is returned **unnormalised**.
``"normalized"``
    ImageNet-normalised [0, 1] RGB, resized (bicubic) so the short side is at least 518 and both
    sides are multiples of 14, as DA2's own inference does; the output disparity is min-max
    normalised to [-1, 1] per image.

Position embeddings: DINOv2 learned them on a fixed grid (37 x 37 patches for 518 x 518) and
interpolates them to other grids. transformers resizes the grid to the target size; the original
DINOv2 / Depth Anything V2 code (which the authors' release runs) resizes by a scale factor of
``(patches + 0.1) / grid`` (the "interpolate offset") and bicubic sampling follows that factor, so the
two differ at every size except the trained one (about 1e-3 relative in the prior's output).
``position_embedding="original"`` (the default) gives the original code's embeddings to transformers'
model; ``"transformers"`` keeps transformers' own.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile

import torch
import torch.nn.functional as F
import transformers
from accelerate import init_empty_weights
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from .._compat import pop_dtype, transformers_dtype
from ..image_utils import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

PREPROCESSING_MODES = ("compat", "normalized")
POSITION_EMBEDDINGS = ("original", "transformers")
INTERPOLATE_OFFSET = 0.1  # the original DINOv2's work-around offset (0.0 only in its register models)

_PATCH = 14
TRANSFORMERS_SUBFOLDER = "depth_anything"  # the network in transformers' own layout, inside a saved prior/
_NORMALIZED_SIZE = 518


def check_preprocessing(mode: str) -> str:
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"Unknown prior preprocessing {mode!r}; expected one of {PREPROCESSING_MODES}.")
    return mode


def check_position_embedding(mode: str) -> str:
    if mode not in POSITION_EMBEDDINGS:
        raise ValueError(f"Unknown position_embedding {mode!r}; expected one of {POSITION_EMBEDDINGS}.")
    return mode


def original_position_embeddings(position_embeddings: torch.Tensor, grid: tuple[int, int], square: bool,
                                 offset: float = INTERPOLATE_OFFSET) -> torch.Tensor:
    """Position embeddings ``[1, 1 + N, C]`` (class token first, ``N`` a square) for a ``grid = (gh, gw)``
    patch grid, interpolated as the original DINOv2 code (``interpolate_pos_encoding``) does: bicubic,
    no antialias, with ``scale_factor = ((gh + offset) / sqrt(N), (gw + offset) / sqrt(N))`` rather than a
    target size (the sampling positions differ from a plain resize to ``grid``). As there, the embeddings
    are returned unchanged only when the grid has ``N`` cells and the image is ``square`` (its height in
    pixels equals its width). Returns ``[1, 1 + gh*gw, C]``."""
    grid = (int(grid[0]), int(grid[1]))  # python ints, also while an exporter traces sizes
    count = position_embeddings.shape[1] - 1
    side = int(math.isqrt(count))
    if side * side != count:
        raise ValueError(f"{count} position embeddings do not form a square grid")
    if grid[0] * grid[1] == count and square:
        return position_embeddings
    dtype, channels = position_embeddings.dtype, position_embeddings.shape[-1]
    patch = position_embeddings[:, 1:].float().reshape(1, side, side, channels).permute(0, 3, 1, 2)
    scale = (float(grid[0] + offset) / side, float(grid[1] + offset) / side)
    patch = F.interpolate(patch, scale_factor=scale, mode="bicubic", antialias=False)  # [1, C, gh, gw]
    if tuple(patch.shape[-2:]) != tuple(grid):
        raise ValueError(f"position embeddings interpolated to {tuple(patch.shape[-2:])}, not the grid {grid}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], channels)
    return torch.cat([position_embeddings[:, :1].float(), patch], dim=1).to(dtype)


class OriginalDinov2Embeddings(Dinov2Embeddings):
    """transformers' DINOv2 embeddings with the original DINOv2 position-embedding interpolation.

    Only :meth:`interpolate_pos_encoding` differs; parameters and state-dict keys are transformers'.
    Installed on a loaded model by :func:`set_position_embedding` (no copy of the model is made).
    """

    interpolate_offset = INTERPOLATE_OFFSET

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        patch = self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
        grid = (height // patch, width // patch)
        pos = original_position_embeddings(self.position_embeddings, grid, height == width, self.interpolate_offset)
        return pos.to(embeddings.dtype)


def set_position_embedding(model: DepthAnythingForDepthEstimation, mode: str) -> None:
    """Switch ``model``'s DINOv2 between the original (``"original"``) and transformers'
    (``"transformers"``) position-embedding interpolation, in place."""
    check_position_embedding(mode)
    embeddings = model.backbone.embeddings
    if not isinstance(embeddings, Dinov2Embeddings) or type(embeddings) not in (
            Dinov2Embeddings, OriginalDinov2Embeddings):
        raise TypeError(f"Expected a DINOv2 backbone with transformers' Dinov2Embeddings; got "
                        f"{type(embeddings).__name__}.")
    embeddings.__class__ = OriginalDinov2Embeddings if mode == "original" else Dinov2Embeddings


def _normalized_input_size(height: int, width: int) -> tuple[int, int]:
    """DA2's own resize: keep aspect, short side >= 518, both sides multiples of 14."""
    scale = max(_NORMALIZED_SIZE / height, _NORMALIZED_SIZE / width)

    def fit(x: float) -> int:
        y = round(x / _PATCH) * _PATCH
        return int(y if y >= _NORMALIZED_SIZE else math.ceil(x / _PATCH) * _PATCH)

    return fit(height * scale), fit(width * scale)


class DepthAnythingPrior(ModelMixin, ConfigMixin):
    """Frozen Depth Anything V2: maps RGB ``[B, 3, H, W]`` in [-1, 1] to disparity ``[B, 1, H, W]``.

    The output is relative inverse depth (large = near), affine-invariant; its range depends on
    ``preprocessing`` (see the module docstring).
    """

    output_kind = "disparity"
    affine_invariant = True
    config_name = "config.json"

    @register_to_config
    def __init__(self, depth_anything_config: dict | None = None, preprocessing: str = "compat",
                 variant: str | None = None, position_embedding: str = "original"):
        super().__init__()
        check_preprocessing(preprocessing)
        config = DepthAnythingConfig.from_dict(depth_anything_config or {})
        self.model = DepthAnythingForDepthEstimation(config)
        set_position_embedding(self.model, position_embedding)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_model(cls, model: DepthAnythingForDepthEstimation, preprocessing: str = "compat",
                   variant: str | None = None, position_embedding: str = "original") -> DepthAnythingPrior:
        """Wrap an already loaded transformers model without re-initialising any weights (the model's
        DINOv2 embeddings are switched to ``position_embedding`` in place)."""
        with init_empty_weights():
            prior = cls(model.config.to_dict(), preprocessing=preprocessing, variant=variant,
                        position_embedding=position_embedding)
        set_position_embedding(model, position_embedding)
        prior.model = model
        prior.requires_grad_(False)
        return prior.eval()

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Write ``config.json`` (this wrapper's settings) and the network with transformers' own
        ``save_pretrained`` in ``depth_anything/``, so that a newer transformers renames old weight names
        when loading it (its checkpoint conversions apply; a diffusers-layout file would bypass them)."""
        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        self.save_config(save_directory)
        self.model.save_pretrained(os.path.join(save_directory, TRANSFORMERS_SUBFOLDER), safe_serialization=True)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> DepthAnythingPrior:
        """Load a prior saved by :meth:`save_pretrained` (or by earlier apdepth versions, which stored the
        network as diffusers weights named ``model.<transformers name>``: those names go through transformers'
        conversions too). A weight the installed transformers cannot place is an error naming it."""
        dtype = pop_dtype(kwargs)
        path = _local_folder(pretrained_model_name_or_path, kwargs)
        config = cls.load_config(path)
        sub = os.path.join(path, TRANSFORMERS_SUBFOLDER)
        if os.path.isdir(sub):
            model, info = DepthAnythingForDepthEstimation.from_pretrained(
                sub, output_loading_info=True, **transformers_dtype(dtype))
        else:
            model, info = _load_diffusers_layout(path, config, dtype)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            unexpected = sorted(info.get("unexpected_keys") or [])
            raise ValueError(
                f"{path}: the prior's weights {missing} are not in the checkpoint under any name this transformers "
                f"({transformers.__version__}) knows"
                + (f"; it holds unrecognised weights {unexpected}" if unexpected else "")
                + ". Refusing to run with uninitialised weights."
            )
        return cls.from_model(model, preprocessing=config.get("preprocessing", "compat"),
                              variant=config.get("variant"),
                              position_embedding=config.get("position_embedding", "original"))

    @property
    def preprocessing(self) -> str:
        return self.config.preprocessing

    @property
    def position_embedding(self) -> str:
        return self.config.get("position_embedding", "original")

    def set_position_embedding(self, mode: str) -> None:
        """Use the original DINOv2 (``"original"``) or transformers' (``"transformers"``) position-embedding
        interpolation from now on (recorded in the config, so a saved prior keeps it)."""
        set_position_embedding(self.model, mode)
        self.register_to_config(position_embedding=mode)

    def train(self, mode: bool = True) -> DepthAnythingPrior:
        # The prior is frozen: it stays in eval mode whatever its parent does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: ``[B, 3, H, W]`` in [-1, 1]. Returns disparity ``[B, 1, H, W]`` in the input's dtype."""
        return self.disparity(rgb)

    def disparity(self, rgb: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with autograd (pre-training a small prior, see :mod:`apdepth.embedded.pretraining`)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"DepthAnythingPrior expects [B, 3, H, W], got {tuple(rgb.shape)}")
        _, _, height, width = rgb.shape
        param = next(self.model.parameters())
        x = rgb.to(device=param.device, dtype=param.dtype)
        if self.preprocessing == "compat":
            size = (math.ceil(height / _PATCH) * _PATCH, math.ceil(width / _PATCH) * _PATCH)
            if size != (height, width):  # the release resizes only when a side is not a multiple of 14
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        else:
            size = _normalized_input_size(height, width)
            x = F.interpolate((x + 1.0) / 2.0, size=size, mode="bicubic", align_corners=False)
            mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        disp = self.model(pixel_values=x).predicted_depth.unsqueeze(1)  # [B, 1, h14, w14]
        disp = F.interpolate(disp, size=(height, width), mode="bilinear", align_corners=True)
        if self.preprocessing == "normalized":
            flat = disp.flatten(1)
            lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
            hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
            disp = (disp - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0
        return disp.to(rgb.dtype)


def _local_folder(spec: str | os.PathLike, kwargs: dict) -> str:
    """A saved prior's local folder: ``spec`` itself (plus ``subfolder``), or its files fetched from the hub."""
    subfolder = kwargs.get("subfolder") or ""
    path = os.path.join(os.fspath(spec), subfolder)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    root = snapshot_download(
        os.fspath(spec), allow_patterns=[f"{subfolder}/*" if subfolder else "*"], revision=kwargs.get("revision"),
        cache_dir=kwargs.get("cache_dir"), local_files_only=kwargs.get("local_files_only", False),
        token=kwargs.get("token"),
    )
    return os.path.join(root, subfolder)


def _load_diffusers_layout(path: str, config: dict, dtype):
    """The network from a prior saved as diffusers weights (``diffusion_pytorch_model.safetensors`` with keys
    ``model.<name>``): rewritten as a transformers checkpoint in a temporary folder and loaded from there, so
    transformers' own renaming of older weight names applies."""
    from safetensors.torch import load_file, save_file

    weights = os.path.join(path, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{path}: neither {TRANSFORMERS_SUBFOLDER}/ nor diffusion_pytorch_model.safetensors")
    state = {k.removeprefix("model."): v for k, v in load_file(weights).items()}
    logger.info("%s: prior in the diffusers layout of earlier apdepth versions; converting its weight names", path)
    with tempfile.TemporaryDirectory() as tmp:
        DepthAnythingConfig.from_dict(config.get("depth_anything_config") or {}).save_pretrained(tmp)
        save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        model, info = DepthAnythingForDepthEstimation.from_pretrained(
            tmp, output_loading_info=True, **transformers_dtype(dtype))
        for t in [*model.parameters(), *model.buffers()]:  # own memory, not a view of the temporary file
            t.data = t.data.clone()
    model.config._name_or_path = ""  # not the temporary folder: a later save_pretrained would record it
    return model, info
