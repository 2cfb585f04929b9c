"""Honest and scaling rows: the release's default processing resolution, end to end against the bare
diffusers components in the same run, time and peak memory against resolution and batch, and counted
FLOPs per stage with the terms that grow faster than the pixel count.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on copies of the models on the
``meta`` device (shapes only: no memory, no time), so they are exact for the architecture and cheap at
any size. The quadratic terms are the attention products (``QK^T`` and ``AV``, ``aten.bmm``): the UNet's
self-attention over all latent cells (1/8 resolution), the VAE's mid-block attention (1/8 resolution)
and the Depth Anything ViT's global attention over 14x14 patches of the full input.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..devices import DTYPES
from ..diffusion import decode_depth

# The scaling sizes (H, W) and batches (320x240 to 2048x1536; batch 1 to 8).
SCALE_RESOLUTIONS = ((240, 320), (480, 640), (960, 1280), (1536, 2048))
SCALE_BATCHES = (1, 2, 4, 8)
SUPERLINEAR = 1.05  # growth exponent vs pixels above which a term is named


def meta_components(arch: str, prior: str, components: dict | None = None) -> dict:
    """The benchmark's models on the meta device: rebuilt from config (full size) or copied (tiny)."""
    if arch == "full":
        from .architectures import full_size_components

        return full_size_components(prior, device="meta")
    return {k: copy.deepcopy(m).to("meta") for k, m in components.items() if k != "text_encoder"}


def _bmm(ops: dict) -> int:
    return ops.get(torch.ops.aten.bmm, 0) + ops.get(torch.ops.aten.baddbmm, 0)


def attention_products(counts: dict, model: torch.nn.Module, scope: str | None = None) -> int:
    """Batched-matmul FLOPs of attention (``QK^T``, ``AV``) in ``counts`` (FlopCounterMode's per-module
    counts): all of them, or only in modules whose name ends with ``scope``. Linear layers on 3-D inputs
    also run as ``bmm`` in some memory layouts; their share is taken out."""
    linear = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            parts = name.split(".")
            linear.update(".".join(parts[i:]) for i in range(len(parts)))  # the counter drops the root's name
    if scope is None:
        tops = ["Global"]
        inside = [k for k in counts if k != "Global"]
    else:
        tops = [k for k in counts if k.endswith(scope)]
        inside = [k for k in counts if any(k.startswith(t + ".") for t in tops)]
    total = sum(_bmm(counts[k]) for k in tops)
    return total - sum(_bmm(counts[k]) for k in inside if "." in k and k.split(".", 1)[1] in linear)


def stage_flops(meta: dict, height: int, width: int, batch: int = 1) -> dict[str, float]:
    """Counted FLOPs of one forward of each stage at ``[batch, 3, height, width]`` (multiples of 8).

    Keys: ``prior``, ``encode x2`` (RGB and prior), ``UNet``, ``decode`` (totals), their attention
    products (``... attention``: the quadratic part) and ``total``.
    """
    unet, vae, prior = meta["unet"], meta["vae"], meta["prior"]
    rgb = torch.zeros(batch, 3, height, width, device="meta")
    emb = torch.zeros(batch, 2, unet.config.cross_attention_dim, device="meta")
    latent = torch.zeros(batch, unet.config.in_channels, height // 8, width // 8, device="meta")
    out = {}
    for stage, fn in (
        ("prior", lambda: prior(rgb)),
        ("encode x2", lambda: vae.encode(torch.cat([rgb, rgb])).latent_dist.mean),
        ("UNet", lambda: unet(latent, torch.full((batch,), 999, device="meta"), encoder_hidden_states=emb).sample),
        ("decode", lambda: decode_depth(vae, latent[:, :4])),
    ):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            fn()
        counts = counter.get_flop_counts()
        out[stage] = float(counter.get_total_flops())
        if stage == "UNet":  # self-attention only; cross-attention to 2 text tokens is linear
            out["UNet self-attention"] = float(attention_products(counts, unet, "attn1"))
        else:
            out[f"{stage} attention"] = float(attention_products(counts, prior if stage == "prior" else vae))
    out["total"] = out["prior"] + out["encode x2"] + out["UNet"] + out["decode"]
    return out


def growth_exponents(flops_by_pixels: dict[int, dict[str, float]]) -> dict[str, float]:
    """``log(F_max / F_min) / log(P_max / P_min)`` per term between the smallest and largest pixel counts:
    1 for a term linear in the pixel count, 2 for a quadratic one."""
    lo, hi = min(flops_by_pixels), max(flops_by_pixels)
    if lo == hi:
        return {}
    out = {}
    for key, f_hi in flops_by_pixels[hi].items():
        f_lo = flops_by_pixels[lo].get(key, 0.0)
        if f_lo > 0 and f_hi > 0:
            out[key] = math.log(f_hi / f_lo) / math.log(hi / lo)
    return out


def flop_report(bench, resolutions) -> dict:
    """FLOPs per stage at each resolution, growth exponents, and the named super-linear terms."""
    cfg = bench.cfg
    meta = meta_components(cfg.arch, cfg.prior, bench.components)
    per_res, by_pixels = {}, {}
    for h, w in resolutions:
        f = stage_flops(meta, h, w)
        per_res[f"{w}x{h}"] = {k: v / 1e12 for k, v in f.items()}  # TFLOP
        by_pixels[h * w] = f
    exps = growth_exponents(by_pixels)
    biggest = by_pixels[max(by_pixels)]
    named = []
    for key, e in sorted(exps.items(), key=lambda kv: -kv[1]):
        if e > SUPERLINEAR and key != "total":
            stage = key.replace(" self-attention", "").replace(" attention", "")
            share = biggest[key] / biggest[stage] if stage in biggest and biggest[stage] else float("nan")
            named.append({"term": key, "exponent": e, "share_of_stage_at_largest": share,
                          "share_of_total_at_largest": biggest[key] / biggest["total"]})
    return {"tflop": per_res, "growth_exponent": exps, "superlinear": named}


def describe_superlinear(report: dict) -> list[str]:
    """One line per term that grows faster than the pixel count."""
    if not report or not report.get("tflop"):
        return []
    largest = list(report["tflop"])[-1]
    return [f"{t['term']} grows as pixels^{t['exponent']:.2f}: {100 * t['share_of_stage_at_largest']:.0f}% of its "
            f"stage and {100 * t['share_of_total_at_largest']:.0f}% of all FLOPs at {largest}"
            for t in report["superlinear"]]


def flop_table(flops: dict) -> str:
    """Counted TFLOP per stage (one image) at each resolution, with growth exponents, as Markdown."""
    sizes = list(flops["tflop"])
    lines = ["| TFLOP per image | " + " | ".join(sizes) + " | growth (pixels^x) |",
             "|---|" + "---:|" * (len(sizes) + 1)]
    for key in flops["tflop"][sizes[0]]:
        e = flops["growth_exponent"].get(key)
        cells = " | ".join(f"{flops['tflop'][s][key]:.3g}" for s in sizes)
        lines.append(f"| {key} | {cells} | {f'{e:.2f}' if e is not None else '-'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ timed rows


def release_default_row(bench, dtype: str) -> None:
    """End to end at the release checkpoint's default processing resolution (long edge 768): the bench's
    image is resized up (640x480 -> 768x576, 1.44x the pixels) and the depth back to the input size."""
    res = bench.cfg.release_resolution
    h, w = bench.cfg.resolution
    from ..pipeline import processing_size

    ph, pw = processing_size(h, w, res)
    bench.record("apdepth", f"end-to-end, release default ({res} long edge)", dtype, 1,
                  lambda: bench.pipe([bench.image], processing_resolution=res, batch_size=1),
                  note=f"processed at {pw}x{ph} ({ph * pw / (h * w):.2f}x the pixels), output {w}x{h}")


def other_prior_rows(bench, dtype: str, sizes) -> None:
    """The prior stage and end to end with each other DA2 size (e.g. DA2-large beside the CPU's default small):
    the prior is swapped in the same pipeline, everything else unchanged, then the bench's own is put back."""
    from . import architectures

    pipe, (h, w) = bench.pipe, bench.cfg.resolution
    own = pipe.prior
    rgb = torch.rand(1, 3, h, w, device=bench.device) * 2 - 1
    for size in sizes:
        if size == bench.cfg.prior:
            continue
        pipe.prior = architectures.full_size_prior(size, bench.device, torch.float32).to(dtype=DTYPES[dtype])
        try:
            with torch.no_grad():
                bench.record("stage", f"prior (DA2-{size})", dtype, 1, lambda: pipe.run_prior(rgb))
            bench.record("apdepth", f"end-to-end with DA2-{size}", dtype, 1, lambda: bench.call([bench.image]),
                         note=f"the prior swapped for DA2-{size}; all else as the end-to-end row")
        finally:
            pipe.prior = own


def bare_components_row(bench, dtype: str, e2e_ms: float, stage_rows: dict) -> None:
    """diffusers' modules called directly (VAE encode of RGB, VAE encode of the prior map, UNet, VAE decode:
    two encodes as in a plain diffusers loop), with and without the prior; the row says how ApDepth's end to
    end compares and where the difference goes."""
    pipe, device = bench.pipe, bench.device
    unet, vae = pipe.unet, pipe.vae
    h, w = bench.cfg.resolution
    dt = unet.dtype
    rgb = (torch.rand(1, 3, h, w, device=device) * 2 - 1).to(dt)
    emb = pipe.empty_text_embedding(device, dt)
    t = torch.full((1,), pipe.timestep, device=device, dtype=torch.long)
    memory_format = torch.channels_last if bench.channels_last else torch.contiguous_format

    def bare(with_prior: bool):
        with torch.no_grad():
            prior = pipe.prior(rgb).expand(-1, 3, -1, -1) if with_prior else rgb
            z_rgb = vae.encode(rgb.contiguous(memory_format=memory_format)).latent_dist.mean
            z_prior = vae.encode(prior.contiguous(memory_format=memory_format)).latent_dist.mean
            cond = torch.cat([z_prior, z_rgb], dim=1) * vae.config.scaling_factor
            z = unet(cond, t, encoder_hidden_states=emb).sample
            return vae.decode(z / vae.config.scaling_factor).sample

    row = bench.record("apdepth", "bare diffusers: encode x2 + UNet + decode", dtype, 1, lambda: bare(False))
    row_p = bench.record("apdepth", "bare diffusers + prior", dtype, 1, lambda: bare(True))
    bare_ms, with_prior_ms = row.timing.median_ms, row_p.timing.median_ms
    prior_ms = stage_rows["prior"].timing.median_ms if "prior" in stage_rows else with_prior_ms - bare_ms
    glue_ms = e2e_ms - with_prior_ms
    row.extra.update(times_apdepth=bare_ms / e2e_ms, e2e_over_bare=e2e_ms / bare_ms)
    row.note = f"ApDepth end to end = {e2e_ms / bare_ms:.2f}x this: prior {prior_ms:.0f} ms + other {glue_ms:.0f} ms"
    row_p.extra.update(times_apdepth=with_prior_ms / e2e_ms, e2e_over_bare=e2e_ms / with_prior_ms, glue_ms=glue_ms)
    row_p.note = (f"ApDepth end to end = {e2e_ms / with_prior_ms:.2f}x this; the {glue_ms:.0f} ms left: image "
                  "to tensor, pad, clamp, output resize and copy, run-to-run noise")
    bench.changed()


def scaling_rows(bench, dtype: str) -> None:
    """End to end at each of ``cfg.scale_resolutions`` (batch 1) and ``cfg.scale_batches`` (at the bench
    resolution): time, peak memory, its rise during the call, and ms per megapixel."""
    cfg = bench.cfg
    base = None
    for h, w in cfg.scale_resolutions:
        image = bench.image.resize((w, h))
        row = bench.record("scaling", "end-to-end by resolution", dtype, 1,
                            lambda im=image: bench.call([im]), resolution=(h, w), long=h * w > 640 * 480)
        per_mp = row.timing.median_ms / (h * w / 1e6)
        base = base or per_mp
        row.extra["ms_per_megapixel"] = per_mp
        row.note = f"{per_mp:.0f} ms/MP ({per_mp / base:.2f}x the smallest's)"
    one = None
    for batch in cfg.scale_batches:
        images = [bench.image] * batch
        row = bench.record("scaling", "end-to-end by batch", dtype, batch, lambda im=images: bench.call(im),
                            long=batch > 2)
        per_image = row.timing.median_ms / batch
        one = one or per_image
        row.extra["ms_per_image"] = per_image
        row.note = f"{per_image:.0f} ms/image ({per_image / one:.2f}x batch {cfg.scale_batches[0]}'s)"
    bench.changed()
