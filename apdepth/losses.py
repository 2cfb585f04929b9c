"""ApDepth's training losses (paper Eq. 10-18, docs/reference.md sections 2-3). Stateless functions.

Shapes: features ``[B, C, h, w]``, latents ``[B, 4, h, w]``, depth ``[B, 1, H, W]``, masks bool and
broadcastable to the tensor they mask (a ``[B, 1, ...]`` mask covers every channel).

Every masked loss averages over the valid elements of the whole batch; with no valid element it
returns ``0 * pred.sum()``, a zero that keeps the autograd graph (so every parameter still gets a
gradient, as distributed data parallel requires).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LATENT_FACTOR = 8  # the VAE's downsampling factor


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: prediction {tuple(a.shape)} and target {tuple(b.shape)} differ in shape")


def _zero(pred: torch.Tensor) -> torch.Tensor:
    return pred.sum() * 0.0


def cosine_alignment_loss(features: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Feature alignment loss (Eq. 10-11): ``1 - mean_{b,i,j} sum_c F_hat * F_ext_hat``.

    Args:
        features: adapted UNet features ``[B, C, h, w]``.
        target: external encoder features on the same grid ``[B, C, h, w]``.
        eps: floor of the channel norm (a zero vector stays zero instead of dividing by zero).

    Returns a scalar in [0, 2]; 0 when every feature vector points along its target.
    """
    _check_same_shape("cosine_alignment_loss", features, target)
    if features.ndim != 4:
        raise ValueError(f"cosine_alignment_loss expects [B, C, h, w] features, got {tuple(features.shape)}")
    f = F.normalize(features.float(), dim=1, eps=eps)
    t = F.normalize(target.float(), dim=1, eps=eps)
    return 1.0 - (f * t).sum(dim=1).mean()


def latent_valid_mask(valid_mask: torch.Tensor, factor: int = LATENT_FACTOR) -> torch.Tensor:
    """Latent cells whose whole ``factor x factor`` pixel block is valid.

    Args:
        valid_mask: bool ``[B, 1, H, W]``, H and W multiples of ``factor``.

    Returns bool ``[B, 1, H/factor, W/factor]``.
    """
    if valid_mask.dtype != torch.bool:
        raise TypeError(f"latent_valid_mask expects a bool mask, got {valid_mask.dtype}")
    height, width = valid_mask.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"latent_valid_mask: mask size {height}x{width} is not a multiple of {factor}")
    invalid = F.max_pool2d((~valid_mask).float(), kernel_size=factor, stride=factor)
    return invalid == 0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the elements where ``mask`` is true (all elements without a mask)."""
    _check_same_shape("masked_mse", pred, target)
    return _masked_mean((pred.float() - target.float()) ** 2, mask)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over the elements where ``mask`` is true (all elements without a mask)."""
    _check_same_shape("masked_l1", pred, target)
    return _masked_mean((pred.float() - target.float()).abs(), mask)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    count = mask.sum()
    if count == 0:
        return _zero(values)
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count


def radial_highpass_weight(height: int, width: int, strength: float, eps: float = 1e-8,
                           device: torch.device | None = None) -> torch.Tensor:
    """``W(u, v) = 1 + strength * r(u, v) / (sqrt(u_c^2 + v_c^2) + eps)`` (Eq. 17), ``[height, width]``.

    ``r`` is the distance to the spectrum centre ``(u_c, v_c) = (height // 2, width // 2)``, where
    ``fftshift`` puts the zero frequency. W is 1 at the centre and ``1 + strength`` (up to ``eps``) at
    the far corner ``(0, 0)``.
    """
    u = torch.arange(height, dtype=torch.float32, device=device).view(-1, 1)
    v = torch.arange(width, dtype=torch.float32, device=device).view(1, -1)
    uc, vc = height // 2, width // 2
    radius = torch.sqrt((u - uc) ** 2 + (v - vc) ** 2)
    return 1.0 + strength * radius / (float(uc**2 + vc**2) ** 0.5 + eps)


def magnitude_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Centred magnitude spectrum ``|fftshift(fft2(x))|`` over the last two dims (Eq. 14-15)."""
    spectrum = torch.fft.fft2(x.float(), dim=(-2, -1))
    return torch.fft.fftshift(spectrum, dim=(-2, -1)).abs()


def frequency_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   strength: float = 0.6, p: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Frequency-domain loss (Eq. 14-18): ``mean(W * |M_pred - M_gt|^p)``.

    Args:
        pred, target: ``[B, C, H, W]``: depth maps (``C = 1``, the paper) or latents (``C = 4``,
            the release); each channel is transformed separately.
        mask: optional bool mask broadcastable to ``pred``; masked-out elements are set to 0 in both
            maps before the transform (the release zeroes invalid latent cells). Samples whose mask
            is entirely false are left out of the mean.
        strength: lambda of the radial high-pass weight (Eq. 17); 0 gives a plain spectrum loss.
        p: 1 or 2 (Eq. 16).
        eps: the weight's stabiliser (Eq. 17).

    The mean runs over batch, channels and all ``H x W`` frequencies (``1/N`` in Eq. 18).
    """
    _check_same_shape("frequency_loss", pred, target)
    if p not in (1, 2):
        raise ValueError(f"frequency_loss: p must be 1 or 2, got {p!r}")
    if pred.ndim != 4:
        raise ValueError(f"frequency_loss expects [B, C, H, W], got {tuple(pred.shape)}")
    if mask is not None:
        mask = mask.expand_as(pred)
        keep = mask.flatten(1).any(dim=1)  # [B]
        if not keep.any():
            return _zero(pred)
        zeros = torch.zeros((), dtype=pred.dtype, device=pred.device)
        pred = torch.where(mask, pred, zeros)[keep]
        target = torch.where(mask, target, zeros.to(target.dtype))[keep]
    diff = (magnitude_spectrum(pred) - magnitude_spectrum(target)).abs()
    if p == 2:
        diff = diff**2
    weight = radial_highpass_weight(*pred.shape[-2:], strength=strength, eps=eps, device=pred.device)
    return (weight * diff).mean()
