"""Pre-training the parts ApDepth takes ready-made at full scale: the VAE and the Depth Anything V2 prior.

A real ApDepth starts from Stable Diffusion 2 (its VAE frozen throughout) and a pretrained Depth
Anything V2. Neither can be downloaded everywhere, so the embedded demo model (:mod:`apdepth.embedded`)
trains miniature ones on the same training sets first; stages 1 and 2 then run unchanged on top of them.

* VAE: ``AutoencoderKL`` reconstructing the three kinds of image ApDepth encodes: RGB, ground-truth
  depth (normalised to [-1, 1], repeated to 3 channels) and prior disparity (repeated to 3 channels);
  L1 reconstruction plus a small KL term, as in latent-diffusion autoencoders (no adversarial loss).
  Its ``scaling_factor`` is then set so that latents have unit standard deviation, as SD's 0.18215 does.
* Prior: the DA2 architecture supervised with per-image normalised disparity: disparity ``1/depth``
  mapped by its 2% / 98% quantiles onto [0, 1] (clipped), L1 over valid pixels, through the exact
  preprocessing the pipeline uses at inference (:meth:`DepthAnythingPrior.disparity`).

Samples are the training readers' own, resized so their short side is ``resolution`` and cropped at
random to ``resolution x crop_width`` (both flips), so data sets of any size mix in one batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.training import DEFAULT_QUANTILES, MixedBatchSampler, normalize_depth
from ..diffusion import encode_latent
from ..training.schedule import LRSchedule

logger = logging.getLogger(__name__)


@dataclass
class ComponentTrainConfig:
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 50
    final_ratio: float = 0.05  # cosine decay to final_ratio x lr
    resolution: int = 192  # short side after resizing
    crop_width: int = 256  # random crop width (the crop height is the resolution)
    vae_crop: int = 128  # the VAE trains on square crops of this size (fully convolutional)
    kl_weight: float = 1e-6
    seed: int = 0
    num_workers: int = 0
    log_every: int = 50
    photometric: float = 0.0  # probability of photometric augmentation per image (prior only; :func:`photometric`)


def normalized_disparity(depth: torch.Tensor, valid: torch.Tensor,
                         quantiles: tuple[float, float] = DEFAULT_QUANTILES) -> torch.Tensor:
    """``1 / depth`` over valid pixels mapped by its quantiles onto [0, 1] (clipped); 0 elsewhere."""
    disp = torch.where(valid, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
    return ((normalize_depth(disp, valid, quantiles) + 1.0) / 2.0) * valid


class ComponentSamples(Dataset):
    """Training samples for the VAE and the prior: ``rgb`` [3, r, w] in [-1, 1], ``depth_norm`` [1, r, w]
    in [-1, 1], ``disparity`` [1, r, w] in [0, 1], ``valid_mask`` [1, r, w]; keys ``(source, index, flip)``
    as :class:`~apdepth.data.training.MixedBatchSampler` draws them."""

    def __init__(self, datasets, resolution: int, crop_width: int, seed: int = 0,
                 quantiles: tuple[float, float] = DEFAULT_QUANTILES):
        self.datasets = list(datasets)
        self.resolution, self.crop_width = int(resolution), int(crop_width)
        self.seed = int(seed)
        self.quantiles = tuple(quantiles)
        self.gen = torch.Generator().manual_seed(self.seed)  # crop positions: deterministic in a single process

    def __getitem__(self, key) -> dict:
        source, index, flip = key
        raw = self.datasets[source][index]
        valid = raw["valid_mask"].bool()  # [1, H, W]
        depth = raw["depth"].float()
        depth_norm = normalize_depth(depth, valid, self.quantiles)
        disparity = normalized_disparity(depth, valid, self.quantiles)
        rgb = raw["rgb"].float() / 255.0 * 2.0 - 1.0
        height, width = rgb.shape[-2:]
        scale = self.resolution / min(height, width)
        size = (max(self.resolution, round(height * scale)), max(self.crop_width, round(width * scale)))
        stack = torch.cat([rgb, depth_norm, disparity, valid.float()])[None]  # [1, 6, H, W]
        stack = F.interpolate(stack, size=size, mode="bilinear", align_corners=False)[0]
        stack[5] = (stack[5] > 0.999).float()  # a pixel stays valid only if all its sources were
        top = int(torch.randint(0, size[0] - self.resolution + 1, (1,), generator=self.gen))
        left = int(torch.randint(0, size[1] - self.crop_width + 1, (1,), generator=self.gen))
        stack = stack[:, top:top + self.resolution, left:left + self.crop_width]
        if flip:
            stack = stack.flip(-1)
        return {"rgb": stack[:3].contiguous(), "depth_norm": stack[3:4].contiguous(),
                "disparity": stack[4:5].contiguous(), "valid_mask": stack[5:6].bool().contiguous()}


def _batches(samples: ComponentSamples, probs, cfg: ComponentTrainConfig):
    sampler = MixedBatchSampler([len(d) for d in samples.datasets], probs, cfg.batch_size, cfg.seed)
    loader = DataLoader(samples, batch_sampler=sampler, num_workers=cfg.num_workers)
    return iter(loader)


def _optimizer(params, cfg: ComponentTrainConfig):
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    schedule = LRSchedule(cfg.warmup_steps, max(1, cfg.steps - cfg.warmup_steps), cfg.final_ratio, decay="cosine")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _log(name: str, step: int, cfg: ComponentTrainConfig, losses: list[float], start: float) -> None:
    if step % cfg.log_every == 0 or step == cfg.steps:
        window = losses[-cfg.log_every:]
        logger.info("%s step %d/%d: loss %.4f (%.2f s/step)", name, step, cfg.steps, sum(window) / len(window),
                    (time.perf_counter() - start) / step)


def train_vae(vae, samples: ComponentSamples, probs, cfg: ComponentTrainConfig, device=None) -> list[float]:
    """Train ``vae`` (an ``AutoencoderKL``) in place on RGB, depth and disparity crops; returns the losses.

    Each step reconstructs ``batch_size`` square ``vae_crop`` crops of each kind. Afterwards
    ``vae.config.scaling_factor`` is set to ``1 / std`` of the latent means over a few batches.
    """
    device = torch.device(device or "cpu")
    torch.manual_seed(cfg.seed)
    vae.to(device).train().requires_grad_(True)
    optimizer, scheduler = _optimizer(vae.parameters(), cfg)
    batches = _batches(samples, probs, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        images = _vae_images(next(batches), cfg.vae_crop, gen).to(device)  # [3B, 3, c, c]
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample
        loss = (recon - images).abs().mean() + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        _log("VAE", step, cfg, losses, start)
    vae.eval().requires_grad_(False)
    set_latent_scaling_factor(vae, (_vae_images(next(batches), cfg.vae_crop, gen) for _ in range(4)), device)
    return losses


def _vae_images(batch: dict, crop: int, gen: torch.Generator) -> torch.Tensor:
    """RGB, depth and disparity of a batch as 3-channel images in the VAE's [-1, 1] range, square crops."""
    height, width = batch["rgb"].shape[-2:]
    top = int(torch.randint(0, height - crop + 1, (1,), generator=gen))
    left = int(torch.randint(0, width - crop + 1, (1,), generator=gen))
    window = (slice(None), slice(None), slice(top, top + crop), slice(left, left + crop))
    depth = batch["depth_norm"][window].expand(-1, 3, -1, -1)
    disparity = batch["disparity"][window].expand(-1, 3, -1, -1)
    return torch.cat([batch["rgb"][window], depth, disparity])


@torch.no_grad()
def set_latent_scaling_factor(vae, images, device=None) -> float:
    """Set ``vae.config.scaling_factor`` so scaled latent means have unit standard deviation."""
    vae.register_to_config(scaling_factor=1.0)
    latents = torch.cat([encode_latent(vae, x.to(device or "cpu")).flatten() for x in images])
    factor = float(1.0 / latents.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=factor)
    logger.info("VAE scaling factor %.5f", factor)
    return factor


def photometric(rgb: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Random photometric changes of ``rgb`` ``[B, 3, H, W]`` in [-1, 1], each image with probability ``prob``:
    brightness, contrast, saturation, gamma and per-channel gain (white balance), then sometimes greyscale
    or a blur. Geometry (and so the depth target) is untouched: the prior has to read depth from shape and
    layout rather than from the renderer's colours."""
    b = rgb.shape[0]

    def draw(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=gen)).to(rgb)

    x = (rgb + 1.0) / 2.0  # [B, 3, H, W] in [0, 1]
    on = (torch.rand(b, 1, 1, 1, generator=gen) < prob).to(rgb)
    grey = x.mean(1, keepdim=True)
    y = grey + (x - grey) * draw(0.3, 1.6)  # saturation
    y = y * (1.0 + (torch.rand(b, 3, 1, 1, generator=gen).to(rgb) - 0.5) * 0.3)  # white balance
    mean = y.mean((1, 2, 3), keepdim=True)
    y = (mean + (y - mean) * draw(0.6, 1.5)) * draw(0.6, 1.4)  # contrast, brightness
    y = y.clamp(0, 1) ** draw(0.7, 1.4)  # gamma
    to_grey = (torch.rand(b, 1, 1, 1, generator=gen) < 0.1).to(rgb)
    y = y * (1 - to_grey) + y.mean(1, keepdim=True) * to_grey
    blur = (torch.rand(b, 1, 1, 1, generator=gen) < 0.2).to(rgb)
    y = y * (1 - blur) + F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False) * blur
    return (x * (1 - on) + y.clamp(0, 1) * on) * 2.0 - 1.0


def train_prior(prior, samples: ComponentSamples, probs, cfg: ComponentTrainConfig, device=None) -> list[float]:
    """Train a :class:`~apdepth.priors.DepthAnythingPrior` in place: L1 between its disparity and the
    normalised ground-truth disparity over valid pixels. Returns the losses."""
    device = torch.device(device or "cpu")
    torch.manual_seed(cfg.seed)
    prior.to(device)
    prior.model.train().requires_grad_(True)
    optimizer, scheduler = _optimizer(prior.model.parameters(), cfg)
    batches = _batches(samples, probs, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        batch = next(batches)
        valid = batch["valid_mask"].to(device)
        rgb = photometric(batch["rgb"], cfg.photometric, gen) if cfg.photometric > 0 else batch["rgb"]
        pred = prior.disparity(rgb.to(device))  # [B, 1, r, w]
        err = (pred - batch["disparity"].to(device)).abs()
        loss = (err * valid).sum() / valid.sum().clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        _log("Prior", step, cfg, losses, start)
    prior.requires_grad_(False)
    prior.eval()
    return losses


def degraded_copy(src, dst, fraction: float = 1.0, seed: int = 0, noise: float = 0.06) -> int:
    """A copy of the Hypersim-layout training folder ``src`` in ``dst`` whose RGB images went, each with
    probability ``fraction``, through :func:`photometric` (always on) plus Gaussian sensor noise of a random
    standard deviation up to ``noise`` (in [-1, 1] units); the other images and every depth file are linked,
    not copied. Stage 2 trains on it so that the frozen prior sees inputs it was not fitted to, and gives the
    blurrier, noisier maps it gives on photographs: on the WHDR photographs such stage-2 inputs were about
    0.03 better than clean ones (docs/evaluation-whdr.md). Deterministic in ``seed``; the list of training
    files is written last, so a folder without it is incomplete. Returns the number of degraded images."""
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..io import atomic_open

    src, dst = Path(src).resolve(), Path(dst)
    listing = src / "filename_list_train.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing}: not a Hypersim-layout training folder (no filename_list_train.txt)")
    lines = [ln.split() for ln in listing.read_text().splitlines() if ln.strip()]
    gen = torch.Generator().manual_seed(seed)
    degraded = 0
    for rgb_rel, depth_rel, *_ in lines:
        (dst / rgb_rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / depth_rel).parent.mkdir(parents=True, exist_ok=True)
        on = fraction >= 1.0 or float(torch.rand(1, generator=gen)) < fraction  # no draw at 1: every image
        target = dst / rgb_rel
        target.unlink(missing_ok=True)
        if on:
            with Image.open(src / rgb_rel) as im:
                rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
            x = photometric(rgb / 127.5 - 1.0, 1.0, gen)
            x = x + torch.randn(x.shape, generator=gen) * float(torch.rand(1, generator=gen)) * noise
            out = ((x.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()  # [H, W, 3]
            with atomic_open(target, "wb") as f:
                Image.fromarray(out).save(f, format="PNG" if target.suffix.lower() == ".png" else "JPEG", quality=95)
            degraded += 1
        else:
            os.symlink(src / rgb_rel, target)
        if not (dst / depth_rel).exists():
            os.symlink(src / depth_rel, dst / depth_rel)
    with atomic_open(dst / "filename_list_train.txt", "w") as f:
        f.write(listing.read_text())
    return degraded
