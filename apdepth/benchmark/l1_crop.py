"""Effect of ``stage2.l1_crop`` on the pixel-L1 term, measured on a fixed batch against the full decode::

    python -m apdepth.benchmark.l1_crop --crops 240x320,120x160 --seeds 32   # embedded demo model, 480x640

For each crop size: the crop L1's mean and spread over ``seeds`` random crops against the full image's L1,
the cosine between the UNet gradient of each crop loss and of the full loss, and the time of one
forward + backward of the L1 term. The batch is synthetic and fixed (seed 0): RGB and a smooth depth ramp
with 10% of the pixels invalid, as the training view gives them.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..training.config import Stage2Config
from ..training.inputs import TrainModule, encode_inputs
from ..training.stage2 import Stage2


def fixed_batch(batch: int, height: int, width: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    tilt = torch.rand(batch, 2, 1, 1, generator=gen) - 0.5
    depth = (0.6 * ys * (1 + tilt[:, :1]) + 0.3 * xs * tilt[:, 1:]).clamp(-1, 1)  # [B, 1, H, W]
    rgb = (torch.rand(batch, 3, height // 8, width // 8, generator=gen) * 2 - 1)
    rgb = torch.nn.functional.interpolate(rgb, size=(height, width), mode="bilinear") * 0.5 + depth * 0.5
    valid = torch.rand(batch, 1, height, width, generator=gen) > 0.1
    return {"rgb": rgb, "depth_norm": depth, "valid_mask": valid}


def measure(pipe, batch: dict, crops: list[str | None], seeds: int) -> list[dict]:
    inputs = encode_inputs(pipe, batch)
    module = TrainModule(pipe)
    unet = pipe.unet.requires_grad_(True)

    def l1_grad(stage):
        unet.zero_grad(set_to_none=True)
        start = time.perf_counter()
        l1 = stage.losses(module, inputs, step=1)["pixel_l1"]
        l1.backward()
        ms = (time.perf_counter() - start) * 1000
        return float(l1.detach()), torch.cat([p.grad.flatten() for p in unet.parameters() if p.grad is not None]), ms

    full_l1, full_grad, full_ms = l1_grad(Stage2(Stage2Config(latent_mse_weight=0.0), pipe.vae))
    out = [{"crop": "full", "l1": full_l1, "ms": full_ms}]
    for crop in crops:
        stage = Stage2(Stage2Config(latent_mse_weight=0.0, l1_crop=crop), pipe.vae, torch.Generator().manual_seed(0))
        values, cosines, times, grads = [], [], [], torch.zeros_like(full_grad)
        for _ in range(seeds):
            v, g, ms = l1_grad(stage)
            values.append(v)
            times.append(ms)
            cosines.append(float(torch.nn.functional.cosine_similarity(g, full_grad, dim=0)))
            grads += g / seeds
        vals = torch.tensor(values)
        out.append({"crop": crop, "l1_mean": float(vals.mean()), "l1_std": float(vals.std()),
                    "mean_rel_error": float(vals.mean()) / full_l1 - 1,
                    "grad_cosine_median": sorted(cosines)[len(cosines) // 2],
                    "mean_grad_cosine": float(torch.nn.functional.cosine_similarity(grads, full_grad, dim=0)),
                    "ms_median": sorted(times)[len(times) // 2], "full_ms": full_ms})
    unet.requires_grad_(False)
    return out


def main(argv: list[str] | None = None) -> None:
    from ..embedded import embedded_model_path
    from ..pipeline import ApDepthPipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", default="240x320,120x160", help="comma list of HxW crops in pixels")
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", default="480x640", help="HxW of the batch")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    pipe = ApDepthPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)
    h, w = (int(v) for v in a.size.split("x"))
    rows = measure(pipe, fixed_batch(a.batch, h, w), a.crops.split(","), a.seeds)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
