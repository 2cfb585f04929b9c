"""The recipe of the embedded demo model, one step after another, each skipped when its output exists.

1. ``data``: procedural scenes (:mod:`apdepth.synth`): a Hypersim-layout training set at 192x256 (rooms and
   open-air scenes) and held-out NYUv2- and KITTI-layout evaluation archives at their native sizes.
2. ``base``: the parts a full-scale run downloads, trained small (:mod:`apdepth.embedded.pretraining`):
   an ``AutoencoderKL`` (SD's 8x layout) and a Depth Anything V2 prior (DINOv2 + DPT); with a random
   SD-style UNet, a tiny CLIP text model and tokenizer they form a Stable-Diffusion-2-like folder.
3. ``stage1`` / ``stage2``: ``apdepth train`` with the packaged presets ``demo/stage1`` and ``demo/stage2``
   (stage 2 from the latent cache), exactly as a full-scale run.
4. ``export``: the stage-2 model with fp16 weights (what ships) and its default processing resolution.
5. ``evaluate``: the exported model, its prior alone and two trivial baselines (constant depth, a ground-plane
   ramp) on the held-out archives under the evaluation protocol; WHDR on the labelled real photographs
   (``apdepth evaluate-whdr``); example depth pictures of real photographs for the card.
6. ``card``: ``MODEL_CARD.md`` with the recipe, data, compute and those numbers; ``--install`` copies
   the exported model, its card and the example pictures into the package.

``device``: where every step computes: the component pre-training and evaluation directly, stages 1 and 2
through accelerate (told to stay on the CPU for ``cpu``), so ``apdepth demo-model --device cuda`` is the
whole recipe on a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..synth.datasets import CLOSEUP_ROOM, OPEN_AIR_ROOM

logger = logging.getLogger(__name__)

DEMO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"  # package data (apdepth/configs/demo)
TRAIN_SIZE = (192, 256)
PROCESSING_RES = {"nyu": 256, "kitti": 512}  # long edge at evaluation (NYU 480x640, KITTI 375x1242)
STEPS = ("data", "base", "stage1", "stage2", "export", "evaluate", "card")


@dataclass
class RecipeConfig:
    """Everything the recipe does not take from the ``demo/stage1`` and ``demo/stage2`` configs."""

    seed: int = 0
    counts: dict = field(default_factory=lambda: {"hypersim": 800, "nyu": 60, "kitti": 40})
    # The defaults make the shipped model (2026-12-03; docs/evaluation-whdr.md, "next5"). The one before it
    # (WHDR 0.337) was --outdoor 0.5 --closeup 0 --stage2-degraded 0 --prior-focus-steps 0 --stage2-restart-steps 0.
    outdoor: float = 0.4  # fraction of the training scenes that are open-air (apdepth.synth.openair)
    # fraction that are close-ups of one subject before a farther backdrop (apdepth.synth.closeup)
    closeup: float = 0.3
    photometric: float = 0.8  # share of the prior's training images with photometric augmentation
    # share of stage 2's training images replaced by photometrically degraded copies (sensor noise too), so
    # that the frozen prior's maps look as they do on photographs (pretraining.degraded_copy)
    stage2_degraded: float = 1.0
    vae_steps: int = 400
    prior_steps: int = 600
    # steps of a second prior phase on the open-air and close-up scenes only (lr 2e-4); docs/evaluation-whdr.md:
    # the prior's WHDR 0.247 (none) -> 0.185 (300) -> 0.149 (900)
    prior_focus_steps: int = 900
    prior_width: int = 96  # the prior's ViT width (build_prior; PRIOR_WIDTHS)
    # stage 2's length in steps (its last FFT phase keeps the preset's length); 0: the preset's (3000).
    # docs/evaluation-whdr.md: 4000 in one schedule did not help (WHDR 0.216 against 0.199)
    stage2_steps: int = 0
    # then a warm restart: a second stage-2 run of N steps from the first's final weights, its learning rate
    # warmed up again (10 steps) and decayed over the N, latent MSE + pixel L1 only; 0: none.
    # docs/evaluation-whdr.md: 400 took WHDR 0.199 -> 0.172
    stage2_restart_steps: int = 400
    vae_batch: int = 6  # x3 images a step: RGB, depth, disparity
    prior_batch: int = 8
    stage1_overrides: list = field(default_factory=list)
    stage2_overrides: list = field(default_factory=list)
    workers: int = 2

    @classmethod
    def smoke(cls) -> RecipeConfig:
        """A few images and steps: the whole recipe in about a minute (tests)."""
        short = ["optim.max_steps=2", "optim.warmup_steps=1", "run.checkpoint_every=2", "data.batch_size=2",
                 "optim.effective_batch=2"]
        return cls(counts={"hypersim": 4, "nyu": 2, "kitti": 2}, vae_steps=2, prior_steps=2, prior_focus_steps=2,
                   stage2_restart_steps=2, vae_batch=2, prior_batch=2,
                   stage1_overrides=short, stage2_overrides=short + ["stage2.phase1_steps=1"], workers=1)


def stage2_schedule(steps: int, phase1_steps: int) -> list[str]:
    """Config overrides for a stage 2 of ``steps`` steps, the learning rate decayed over all of them, the FFT
    loss after ``phase1_steps``."""
    return [f"optim.max_steps={steps}", f"optim.decay_steps={steps}", f"stage2.phase1_steps={phase1_steps}"]


def warm_restart(steps: int) -> list[str]:
    """Config overrides for a warm restart of stage 2 (``model.init_from`` its weights): ``steps`` steps of
    latent MSE + pixel L1, the learning rate warmed up again over 10 and decayed over all of them."""
    return [*stage2_schedule(steps, steps), "optim.warmup_steps=10"]


# ---------------------------------------------------------------------------------------------- architectures


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(8, 16, 32, 32), sample_size=256)


def build_unet():
    """SD2's layout (3 cross-attention levels + 1 plain, linear projections) at 1/10 of its width."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=32,
        attention_head_dim=(2, 4, 8, 8), norm_num_groups=16, use_linear_projection=True)


PRIOR_WIDTHS = (96, 128, 144, 160, 192)  # ViT widths of the demo prior (32 channels an attention head)


def build_prior(width: int = 96):
    """Depth Anything V2's architecture (DINOv2 ViT + DPT head, relative disparity) with a ``width``-wide,
    6-layer ViT (96: the shipped prior, 1.1 M parameters; 144: 2.5 M, 1.8x the training time a step on CPU;
    192: 4.3 M, 2.9x), its DPT neck and fusion scaled with it."""
    from transformers import DepthAnythingConfig, Dinov2Config

    from ..priors import DepthAnythingPrior

    if width not in PRIOR_WIDTHS:
        raise ValueError(f"prior width {width}: choose among {', '.join(map(str, PRIOR_WIDTHS))}")
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=6, num_attention_heads=width // 32, mlp_ratio=4,
                            image_size=266, patch_size=14, out_indices=[3, 4, 5, 6], reshape_hidden_states=False,
                            apply_layernorm=True, layerscale_value=1.0)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=width,
                                 reassemble_factors=[4, 2, 1, 0.5],
                                 neck_hidden_sizes=[width // 4, width // 2, width, width],
                                 fusion_hidden_size=width // 3, head_hidden_size=16, depth_estimation_type="relative")
    return DepthAnythingPrior(config.to_dict(), preprocessing="compat", variant="demo")


def write_text_parts(folder: Path) -> None:
    """CLIP text model, tokenizer and scheduler: ApDepth only ever encodes the empty prompt."""
    from diffusers import DDIMScheduler

    from ..diffusion.architectures import tiny_text_encoder, tiny_tokenizer

    tiny_text_encoder(seed=0).save_pretrained(folder / "text_encoder")
    tiny_tokenizer(folder / "_tokenizer_src").save_pretrained(folder / "tokenizer")
    shutil.rmtree(folder / "_tokenizer_src")
    DDIMScheduler(prediction_type="v_prediction").save_pretrained(folder / "scheduler")


def strip_load_paths(folder: Path) -> None:
    """Drop the ``_name_or_path`` entries diffusers and transformers write into ``model_index.json`` and the
    components' ``config.json`` files, nested ones included (the folder the model was loaded from: a path
    on the machine that built it); nested entries are emptied, as transformers writes them."""

    def clean(node, top: bool) -> bool:
        changed = False
        if isinstance(node, dict):
            if node.get("_name_or_path"):
                if top:
                    node.pop("_name_or_path")
                else:
                    node["_name_or_path"] = ""
                changed = True
            for value in node.values():
                changed |= clean(value, False)
        return changed

    for path in [folder / "model_index.json", *folder.rglob("config.json")]:
        config = json.loads(path.read_text())
        if clean(config, True):
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


FOCUS_ROOMS = (OPEN_AIR_ROOM, CLOSEUP_ROOM)  # the scene kinds (synth_meta.json "room") of the prior's second phase


def focus_split(folder: Path, rooms=FOCUS_ROOMS) -> Path:
    """``filename_list_focus.txt`` in a generated Hypersim-layout folder: the lines of its training list whose
    frames are of the scene kinds ``rooms`` (read from ``synth_meta.json``); written once, atomically."""
    from ..io import atomic_open

    folder = Path(folder)
    out = folder / "filename_list_focus.txt"
    if out.is_file():
        return out
    meta = folder / "synth_meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: no scene list, so the prior's focus phase cannot pick its scenes")
    kind = {frame["rgb"]: frame.get("room") for frame in json.loads(meta.read_text())["frames"]}
    lines = [ln for ln in (folder / "filename_list_train.txt").read_text().splitlines() if ln.strip()]
    keep = [ln for ln in lines if kind.get(ln.split()[0]) in rooms]
    if not keep:
        raise ValueError(f"{meta}: no frame of the kinds {', '.join(rooms)} (generate with --outdoor/--closeup > 0)")
    with atomic_open(out, "w") as f:
        f.write("\n".join(keep) + "\n")
    return out


# ---------------------------------------------------------------------------------------------- steps


class Recipe:
    def __init__(self, output: str | os.PathLike, cfg: RecipeConfig | None = None,
                 configs: str | os.PathLike | None = None, device: str = "cpu"):
        self.out = Path(output)
        self.cfg = cfg or RecipeConfig()
        self.configs = Path(configs) if configs else DEMO_CONFIGS
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU")
        self.data = self.out / "data"
        self.train_size, self.processing_res = TRAIN_SIZE, PROCESSING_RES
        self.log_file = self.out / "recipe.json"
        if self.cfg.prior_focus_steps > 0 and self.cfg.outdoor + self.cfg.closeup == 0:
            raise ValueError("prior_focus_steps (--prior-focus-steps) trains on the open-air and close-up scenes: "
                             "with outdoor 0 and closeup 0 there are none")
        if self.cfg.prior_width not in PRIOR_WIDTHS:
            raise ValueError(f"prior_width (--prior-width) {self.cfg.prior_width}: choose among "
                             f"{', '.join(map(str, PRIOR_WIDTHS))}")
        if self.cfg.stage2_restart_steps < 0:
            raise ValueError(f"stage2_restart_steps (--stage2-restart-steps) {self.cfg.stage2_restart_steps}: "
                             "give a number of steps, or 0 for none")
        if self.cfg.stage2_steps:
            self.stage2_overrides()  # a length too short for the FFT phase fails here, before any training

    # bookkeeping: seconds per step, settings
    def _record(self, step: str, seconds: float, **extra) -> None:
        log = json.loads(self.log_file.read_text()) if self.log_file.is_file() else {}
        log.setdefault("steps", {})[step] = {"seconds": round(seconds, 1), **extra}
        log["recipe"] = asdict(self.cfg)
        previous_load = log.get("machine", {}).get("load_average", 0.0)
        log["machine"] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "threads": torch.get_num_threads(), "device": str(self.device), "torch": torch.__version__}
        if hasattr(os, "getloadavg"):  # other work on the machine stretches the wall-clock times above
            log["machine"]["load_average"] = max(previous_load, round(os.getloadavg()[1], 1))
        if self.device.type == "cuda":
            log["machine"]["gpu"] = torch.cuda.get_device_name(self.device)
        from ..io import save_json

        save_json(self.log_file, log)

    def config_file(self, stage: int) -> Path:
        config = self.configs / f"stage{stage}.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{config}: no stage-{stage} config there (--configs DIR needs stage1.yaml and "
                                    "stage2.yaml; without it the packaged demo presets are used)")
        return config

    def plan(self, steps=STEPS) -> list[str]:
        """What :meth:`run` would do, one line a step; builds each stage's config (errors as ``ConfigError``)."""
        from ..training.config import build_config

        outputs = {"data": self.data, "base": self.out / "base", "stage1": self.out / "stage1" / "final",
                   "stage2": self.stage2_final, "export": self.model_dir, "evaluate": self.out / "eval",
                   "card": self.out / "MODEL_CARD.md"}
        lines = []
        for name in steps:
            line = f"{name:<9}-> {outputs[name]}"
            if name == "base":
                line += f"  (VAE {self.cfg.vae_steps} steps, prior"
                if self.cfg.prior_width != 96:
                    line += f" of width {self.cfg.prior_width}"
                line += f" {self.cfg.prior_steps} steps"
                if self.cfg.prior_focus_steps > 0:
                    line += f" + {self.cfg.prior_focus_steps} on the open-air and close-up scenes"
                line += ")"
            if name in ("stage1", "stage2"):
                stage = int(name[-1])
                extra = self.cfg.stage1_overrides if stage == 1 else self.stage2_overrides()
                cfg = build_config([self.config_file(stage)], extra)
                line += f"  ({self.config_file(stage)}: {cfg.max_steps} steps, batch {cfg.optim.effective_batch}"
                if stage == 2 and self.cfg.stage2_restart_steps > 0:
                    line += f", then a warm restart of {self.cfg.stage2_restart_steps} steps"
                line += ")"
            lines.append(line)
        return lines

    def run(self, steps=STEPS) -> None:
        for name in steps:
            start = time.perf_counter()
            done = getattr(self, f"step_{name}")()
            if done is not False:
                self._record(name, time.perf_counter() - start)

    # 1 ------------------------------------------------------------------------------------------
    def step_data(self):
        from ..synth.datasets import FOLDER_NAME, generate

        ran = False
        for kind, num in self.cfg.counts.items():
            folder = self.data / FOLDER_NAME[kind]
            if (folder / "synth_meta.json").is_file():
                continue
            train = kind == "hypersim"
            generate(kind, folder, num, seed=self.cfg.seed, workers=self.cfg.workers, size=TRAIN_SIZE if train else None,
                     outdoor=self.cfg.outdoor if train else 0.0, closeup=self.cfg.closeup if train else 0.0)
            ran = True
        return ran

    def split(self, kind: str) -> Path:
        from ..synth.datasets import FOLDER_NAME, SPLIT_NAME

        return self.data / FOLDER_NAME[kind] / SPLIT_NAME[kind]

    def archive(self, kind: str) -> Path:
        from ..synth.datasets import ARCHIVE_NAME, FOLDER_NAME

        return self.data / FOLDER_NAME[kind] / ARCHIVE_NAME.get(kind, "")

    # 2 ------------------------------------------------------------------------------------------
    def step_base(self):
        from ..data import get_dataset
        from .pretraining import ComponentSamples, ComponentTrainConfig, train_prior, train_vae

        base, prior_dir = self.out / "base", self.out / "prior"
        if (base / "model_index.json").is_file() and (prior_dir / "config.json").is_file():
            return False
        train_set = get_dataset("hypersim", self.data / "hypersim", self.split("hypersim"))
        # the focus phase's frames, picked before any training so that a folder without them fails at once
        focus_list = focus_split(self.data / "hypersim") if self.cfg.prior_focus_steps > 0 else None
        samples = ComponentSamples([train_set], TRAIN_SIZE[0], TRAIN_SIZE[1], seed=self.cfg.seed)
        losses = {}
        tmp = self.out / ".base-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.manual_seed(self.cfg.seed)
        vae = build_vae()
        vae_cfg = ComponentTrainConfig(steps=self.cfg.vae_steps, batch_size=self.cfg.vae_batch, lr=1e-3, vae_crop=96,
                                       seed=self.cfg.seed)
        losses["vae"] = train_vae(vae, samples, [1.0], vae_cfg, self.device)
        vae.to("cpu").save_pretrained(tmp / "vae")
        torch.manual_seed(self.cfg.seed + 1)
        prior = build_prior(self.cfg.prior_width)
        prior_cfg = ComponentTrainConfig(steps=self.cfg.prior_steps, batch_size=self.cfg.prior_batch, lr=5e-4,
                                         seed=self.cfg.seed, photometric=self.cfg.photometric)
        losses["prior"] = train_prior(prior, samples, [1.0], prior_cfg, self.device)
        if focus_list is not None:
            focus = ComponentSamples([get_dataset("hypersim", self.data / "hypersim", focus_list)], TRAIN_SIZE[0],
                                     TRAIN_SIZE[1], seed=self.cfg.seed + 1)
            steps = self.cfg.prior_focus_steps
            focus_cfg = ComponentTrainConfig(steps=steps, batch_size=self.cfg.prior_batch, lr=2e-4,
                                             warmup_steps=min(50, steps // 5), seed=self.cfg.seed + 1,
                                             photometric=self.cfg.photometric)
            losses["prior_focus"] = train_prior(prior, focus, [1.0], focus_cfg, self.device)
        prior.to("cpu").save_pretrained(tmp / "prior")
        torch.manual_seed(self.cfg.seed + 2)
        build_unet().save_pretrained(tmp / "unet")
        write_text_parts(tmp)
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.0",
            "note": "apdepth demo base: VAE trained on procedural scenes, UNet randomly initialised"}, indent=2))
        (tmp / "component_losses.json").write_text(json.dumps(
            {k: {"first": v[0], "last_50": sum(v[-50:]) / len(v[-50:])} for k, v in losses.items()}, indent=2))
        shutil.rmtree(prior_dir, ignore_errors=True)
        os.replace(tmp / "prior", prior_dir)
        shutil.rmtree(base, ignore_errors=True)
        os.replace(tmp, base)

    # 3 ------------------------------------------------------------------------------------------
    def _train(self, stage: int, extra: list[str], build_cache: bool = False, run_name: str | None = None) -> Path:
        from ..training import train_from_files
        from ..training.checkpoint import find_latest

        config = self.config_file(stage)
        run_dir = self.out / (run_name or f"stage{stage}")
        overrides = [
            f"model.prior={self.out / 'prior'}",
            f"data.hypersim.root={self.data / 'hypersim'}",
            f"data.hypersim.split={self.split('hypersim')}",
            f"run.output_dir={run_dir}",
            f"run.seed={self.cfg.seed}",
            *extra,
        ]
        with self._accelerate_device():
            if build_cache:
                train_from_files([str(config)], overrides, build_cache=True)
            resume = True if find_latest(run_dir) is not None else None
            return train_from_files([str(config)], overrides, resume=resume)

    @contextmanager
    def _accelerate_device(self):
        """Stages 1 and 2 run through accelerate, which takes any GPU it sees: keep them on the recipe's device."""
        before = os.environ.get("ACCELERATE_USE_CPU")
        if self.device.type == "cpu":
            os.environ["ACCELERATE_USE_CPU"] = "true"
        else:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("ACCELERATE_USE_CPU", None)
            else:
                os.environ["ACCELERATE_USE_CPU"] = before

    def step_stage1(self):
        if (self.out / "stage1" / "final" / "model_index.json").is_file():
            return False
        self._train(1, [f"model.base={self.out / 'base'}", *self.cfg.stage1_overrides])

    def step_stage2(self):
        first, final = self.out / "stage2" / "final", self.stage2_final
        if (final / "model_index.json").is_file():
            return False
        extra = [f"model.base={self.out / 'stage1' / 'final'}", f"data.cache_dir={self.out / 'cache'}"]
        if self.cfg.stage2_degraded > 0:
            folder = self.degraded_inputs()
            extra += [f"data.hypersim.root={folder}", f"data.hypersim.split={folder / 'filename_list_train.txt'}"]
        if not (first / "model_index.json").is_file():
            self._train(2, [*extra, *self.stage2_overrides()], build_cache=True)
        if final != first:  # the warm restart from the first run's weights, reading the same latent cache
            self._train(2, [*extra, f"model.init_from={first}", *warm_restart(self.cfg.stage2_restart_steps),
                            *self.cfg.stage2_overrides], run_name="stage2_restart")

    @property
    def stage2_final(self) -> Path:
        """Stage 2's output: the warm restart's where there is one."""
        return self.out / ("stage2_restart" if self.cfg.stage2_restart_steps > 0 else "stage2") / "final"

    def stage2_overrides(self) -> list[str]:
        """``stage2_steps`` as config overrides (the FFT phase keeps the preset's length), then the explicit ones."""
        if self.cfg.stage2_steps <= 0:
            return list(self.cfg.stage2_overrides)
        from ..training.config import build_config

        preset = build_config([self.config_file(2)], self.cfg.stage2_overrides)
        fft = preset.max_steps - preset.stage2.phase1_steps
        n = self.cfg.stage2_steps
        if n <= fft:
            raise ValueError(f"stage2_steps (--stage2-steps) {n}: stage 2 needs more than its {fft} FFT steps")
        return [*stage2_schedule(n, n - fft), *self.cfg.stage2_overrides]

    def degraded_inputs(self) -> Path:
        """Stage 2's training folder with ``stage2_degraded`` of its RGB images degraded (made once; a folder
        without its file list is an interrupted copy and is made again)."""
        from ..synth.datasets import FOLDER_NAME
        from .pretraining import degraded_copy

        folder = self.data / f"{FOLDER_NAME['hypersim']}_stage2_degraded"
        if not (folder / "filename_list_train.txt").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            n = degraded_copy(self.data / FOLDER_NAME["hypersim"], folder, self.cfg.stage2_degraded, self.cfg.seed)
            logger.info("stage 2 inputs: %d degraded images in %s", n, folder)
        return folder

    # 4 ------------------------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.out / "export"

    def step_export(self):
        from ..pipeline import ApDepthPipeline

        if (self.model_dir / "model_index.json").is_file():
            return False
        pipe = ApDepthPipeline.from_pretrained(self.stage2_final)
        # The export carries its own prior/; the recipe's working paths would only leak into the shipped files.
        pipe.register_to_config(default_processing_resolution=PROCESSING_RES["nyu"], prior_name=None)
        tmp = self.out / ".export-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.to(dtype=torch.float16).save_pretrained(tmp)  # the shipped weights; evaluated as they ship
        strip_load_paths(tmp)
        os.replace(tmp, self.model_dir)

    # 5 ------------------------------------------------------------------------------------------
    def step_evaluate(self):
        from .evaluate import evaluate_all, evaluate_whdr_photos, example_pictures

        if (self.out / "eval" / "whdr.json").is_file() and (self.out / "examples").is_dir():
            return False
        evaluate_all(self.model_dir, self.out / "eval", {k: (self.archive(k), self.split(k)) for k in ("nyu", "kitti")},
                     PROCESSING_RES, self.device)
        evaluate_whdr_photos(self.model_dir, self.out / "eval" / "whdr.json", self.device)
        example_pictures(self.model_dir, self.out / "examples", device=self.device)

    # 6 ------------------------------------------------------------------------------------------
    def step_card(self):
        from .card import write_card

        write_card(self)


def install(recipe_out: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Copy the exported model (fp16 weights) and its card into the package (or ``target``)."""
    from . import WEIGHTS_DIR

    recipe_out = Path(recipe_out)
    target = Path(target) if target else WEIGHTS_DIR
    tmp = target.with_name(f".{target.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(recipe_out / "export", tmp)
    for name in ("MODEL_CARD.md", "metrics.json", "per_sample_nyu.csv"):
        if (recipe_out / name).is_file():
            shutil.copy(recipe_out / name, tmp / name)
    if (recipe_out / "eval" / "whdr.json").is_file():
        shutil.copy(recipe_out / "eval" / "whdr.json", tmp / "whdr.json")
    if (recipe_out / "examples").is_dir():
        shutil.copytree(recipe_out / "examples", tmp / "examples")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logger.info("Installed the demo model into %s (%.1f MB)", target, size / 1e6)
    return target
