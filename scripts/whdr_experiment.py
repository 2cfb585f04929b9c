"""Short WHDR experiments on the embedded demo model: fine-tune stage 2 and/or the prior from
a starting pipeline for a few hundred steps with the library's own training code, then measure WHDR on
the labelled real photographs and AbsRel on the synthetic held-out archives.

    python scripts/whdr_experiment.py NAME --data runs/base/data/hypersim[:WEIGHT] [more data ...]
        [--init embedded|FOLDER] [--prior-steps N] [--stage2-steps N] [--set key=value ...] [--no-heldout]

Everything lands in runs/exp/NAME: the model (model/), whdr.json, heldout.json, result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch


def mixed_folder(specs: list[str], out: Path, seed: int = 0) -> Path:
    """One Hypersim-layout folder (symlinks) holding the listed folders' images; ``path:w`` repeats/samples
    the folder's split so that it contributes ``w`` x its size."""
    import random

    out.mkdir(parents=True, exist_ok=True)
    lines = []
    rng = random.Random(seed)
    for i, spec in enumerate(specs):
        path, _, weight = spec.partition(":")
        weight = float(weight or 1.0)
        src = Path(path).resolve()
        link = out / f"s{i}"
        if not link.exists():
            link.symlink_to(src)
        own = [ln for ln in (src / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
        whole, frac = int(weight), weight - int(weight)
        picked = own * whole + rng.sample(own, round(frac * len(own)))
        lines += [" ".join(f"s{i}/{p}" for p in ln.split()) for ln in picked]
    (out / "filename_list_train.txt").write_text("\n".join(lines) + "\n")
    return out


def finetune_prior(pipe_dir: Path, data: Path, steps: int, photometric: float, lr: float, out: Path) -> dict:
    from apdepth.data import get_dataset
    from apdepth.embedded.pretraining import ComponentSamples, ComponentTrainConfig, train_prior
    from apdepth.pipeline import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(pipe_dir, dtype=torch.float32)
    train_set = get_dataset("hypersim", data, data / "filename_list_train.txt")
    samples = ComponentSamples([train_set], 192, 256, seed=0)
    cfg = ComponentTrainConfig(steps=steps, batch_size=8, lr=lr, warmup_steps=min(50, steps // 5), seed=0,
                               photometric=photometric)
    losses = train_prior(pipe.prior, samples, [1.0], cfg)
    pipe.save_pretrained(out)
    return {"prior_loss_first": losses[0], "prior_loss_last50": sum(losses[-50:]) / len(losses[-50:])}


def finetune_stage2(init: Path, data: Path, steps: int, sets: list[str], run_dir: Path, cache: Path) -> Path:
    from apdepth.embedded.recipe import DEMO_CONFIGS, warm_restart
    from apdepth.training import train_from_files

    config = [str(DEMO_CONFIGS / "stage2.yaml")]
    overrides = [f"model.init_from={init}", f"data.hypersim.root={data}",
                 f"data.hypersim.split={data / 'filename_list_train.txt'}", f"data.cache_dir={cache}",
                 f"run.output_dir={run_dir}", "run.seed=0", *warm_restart(steps), f"run.checkpoint_every={steps}",
                 *sets]
    os.environ["ACCELERATE_USE_CPU"] = "true"
    if not (cache / "meta.json").is_file():
        train_from_files(config, overrides, build_cache=True)
    return train_from_files(config, overrides)


def measure(model: Path, out: Path, heldout: bool) -> dict:
    from apdepth.embedded.evaluate import evaluate_all, evaluate_whdr_photos
    from apdepth.pipeline import ApDepthPipeline

    pipe = ApDepthPipeline.from_pretrained(model, dtype=torch.float32)
    if pipe.config.default_processing_resolution != 256:
        pipe.register_to_config(default_processing_resolution=256)
        pipe.save_pretrained(model)
    w = evaluate_whdr_photos(model, out / "whdr.json")
    res = {"whdr_model": w["whdr"]["model"], "whdr_prior": w["whdr"]["prior"],
           "per_image": {k: (round(v["model"], 2), round(v["prior"], 2)) for k, v in w["per_image"].items()}}
    if heldout:
        base = Path("runs/base/data")
        sets = {"nyu": (base / "nyuv2/nyu_labeled_extracted.tar", base / "nyuv2/filename_list_test.txt"),
                "kitti": (base / "kitti/kitti_eigen_split_test.tar", base / "kitti/eigen_test_files_with_gt.txt")}
        r = evaluate_all(model, out / "eval", sets, {"nyu": 256, "kitti": 512})
        res["heldout"] = {s: {m: round(r[s][m]["metrics"]["abs_rel"], 4) for m in ("apdepth", "prior", "ramp")}
                          for s in r}
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--data", nargs="+", default=["runs/base/data/hypersim"])
    p.add_argument("--init", default="embedded")
    p.add_argument("--prior-steps", type=int, default=0)
    p.add_argument("--prior-lr", type=float, default=2e-4)
    p.add_argument("--photometric", type=float, default=0.8)
    p.add_argument("--prior-data", nargs="+", default=None, help="data for the prior (default: --data)")
    p.add_argument("--stage2-steps", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], help="stage-2 config overrides")
    p.add_argument("--cache", default=None, help="latent cache folder to reuse (same init prior and data)")
    p.add_argument("--no-heldout", action="store_true")
    a = p.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path("runs/exp") / a.name
    out.mkdir(parents=True, exist_ok=True)
    if a.init == "embedded":
        from apdepth.embedded import WEIGHTS_DIR as init
    else:
        init = Path(a.init)
    times, info = {}, {"args": vars(a)}
    model = init
    if a.prior_steps:
        t = time.perf_counter()
        pdata = mixed_folder(a.prior_data or a.data, out / "prior_data")
        info.update(finetune_prior(model, pdata, a.prior_steps, a.photometric, a.prior_lr, out / "with_prior"))
        model, times["prior"] = out / "with_prior", time.perf_counter() - t
    if a.stage2_steps:
        t = time.perf_counter()
        data = mixed_folder(a.data, out / "data")
        cache = Path(a.cache) if a.cache else out / "stage2" / "cache"
        final = finetune_stage2(model, data, a.stage2_steps, a.set, out / "stage2", cache)
        shutil.rmtree(out / "model", ignore_errors=True)
        shutil.copytree(final, out / "model")
        model, times["stage2"] = out / "model", time.perf_counter() - t
    t = time.perf_counter()
    info.update(measure(Path(model), out, not a.no_heldout))
    times["measure"] = time.perf_counter() - t
    info["seconds"] = {k: round(v, 1) for k, v in times.items()}
    (out / "result.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: v for k, v in info.items() if k != "per_image"}, indent=1))


if __name__ == "__main__":
    main()
