"""A tiny, complete training setup on disk (no network): SD2-like folder, prior, DINOv2, Hypersim and
ScanNet fixtures in their real layouts, and the config overrides that point a run at them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apdepth.testing import save_tiny_prior, save_tiny_sd2, tiny_dinov2
from apdepth.testing.fixtures import write_fixture

SIZE = (16, 24)  # training frames (multiples of 8)


@dataclass
class TrainingEnv:
    root: Path

    def overrides(self, stage: int, output_dir: Path | str, **extra) -> list[str]:
        r = self.root
        values = {
            "stage": stage,
            "model.base": r / "sd2",
            "model.prior": r / "prior",
            "data.hypersim.root": r / "hypersim",
            "data.hypersim.split": r / "hypersim_hypersim_split.txt",
            "data.mix": "{hypersim: 1.0}",
            "data.batch_size": 1,
            "data.num_workers": 0,
            "optim.effective_batch": 2,
            "optim.warmup_steps": 1,
            "optim.lr": 1e-4,
            "run.output_dir": output_dir,
            "run.log_every": 1,
            "run.checkpoint_every": 2,
        }
        if stage == 1:
            values.update({"stage1.encoder_source": r / "dino", "stage1.adapter_groups": 8})
        values.update(extra)
        return [f"{k}={v}" for k, v in values.items()]

    def validation(self, every: int = 1) -> dict:
        return {"validation.every": every, "validation.dataset": "scannet", "validation.root": self.root / "scannet",
                "validation.split": self.root / "scannet_scannet_split.txt", "validation.max_samples": 2,
                "validation.log_images": 1}


def make_training_env(root: Path) -> TrainingEnv:
    save_tiny_sd2(root / "sd2")
    save_tiny_prior(root / "prior")
    tiny_dinov2().save_pretrained(root / "dino")
    write_fixture("hypersim", root / "hypersim", num_samples=4, size=SIZE)
    write_fixture("scannet", root / "scannet", num_samples=2, size=SIZE)
    return TrainingEnv(root)
