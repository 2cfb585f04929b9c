"""Both stages end to end through `apdepth train`, resuming from a checkpoint alone, config errors, the
latent cache through `apdepth cache` (and `apdepth train --build-cache`), and a two-process run through
`accelerate launch` on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_env import make_training_env

from apdepth.apps.cli import main
from apdepth.modules import ConvFeatureAdapter, load_adapter
from apdepth.pipeline import ApDepthPipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_training_env(tmp_path_factory.mktemp("cli_env"))


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def write_config(path: Path, overrides: list[str]) -> Path:
    """The overrides as a nested YAML file, the way users write configs."""
    config: dict = {}
    for item in overrides:
        key, value = item.split("=", 1)
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(config))
    return path


def tensorboard_tags(run: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


def test_both_stages_through_the_cli(env, tmp_path):
    s1 = write_config(tmp_path / "s1.yaml", env.overrides(1, tmp_path / "stage1"))
    assert main(["train", "-c", str(s1), "optim.max_steps=2"]) == 0
    final1 = tmp_path / "stage1" / "final"
    assert isinstance(load_adapter(final1 / "adapter"), ConvFeatureAdapter)
    saved = yaml.safe_load((tmp_path / "stage1" / "checkpoints" / "step_0000002" / "config.yaml").read_text())
    assert saved["stage"] == 1 and saved["optim"]["max_steps"] == 2 and "stage2" not in saved
    scalars, _ = tensorboard_tags(tmp_path / "stage1")
    assert {"train/loss", "train/align", "train/lr", "perf/samples_per_second", "perf/seconds_per_step"} <= scalars

    extra = {"model.base": final1, "stage2.phase1_steps": 1, "optim.max_steps": 2, **env.validation(every=2)}
    s2 = write_config(tmp_path / "s2.yaml", env.overrides(2, tmp_path / "stage2", **extra))
    assert main(["train", "-c", str(s2)]) == 0
    scalars, images = tensorboard_tags(tmp_path / "stage2")
    assert {"train/latent_mse", "train/pixel_l1", "train/freq", "train/phase", "val/abs_rel", "val/delta1"} <= scalars
    assert images == {"val/depth_0"}
    # the stage-2 model started from the stage-1 UNet, and is a working ApDepth pipeline
    pipe = ApDepthPipeline.from_pretrained(tmp_path / "stage2" / "final")
    assert pipe.unet.config.in_channels == 8 and pipe.config.use_prior
    assert pipe(torch.rand(3, 16, 24), output_type="pt").depth.shape == (1, 1, 16, 24)

    # resume from a checkpoint alone (its own config), running two more steps
    ckpt = tmp_path / "stage2" / "checkpoints" / "step_0000002"
    assert main(["train", "--resume", str(ckpt), "optim.max_steps=3"]) == 0
    assert (tmp_path / "stage2" / "checkpoints" / "step_0000003").is_dir()


def test_config_errors_exit_with_status_2(env, tmp_path, caplog):
    bad = write_config(tmp_path / "bad.yaml", env.overrides(2, tmp_path / "run", **{"stage2.freq_p": 3}))
    assert main(["train", "-c", str(bad)]) == 2
    assert "'stage2.freq_p' must be one of (1, 2), got 3" in caplog.text
    assert main(["train", "-c", str(bad), "stage2.freq_p=1", f"data.hypersim.split={tmp_path}/nope.txt"]) == 2
    assert f"data.hypersim.split: '{tmp_path}/nope.txt' is not a file" in caplog.text
    assert main(["train"]) == 2


def test_cache_command_builds_the_latent_cache_without_training(env, tmp_path, caplog):
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path / "s2.yaml", env.overrides(2, tmp_path / "run", **{"data.cache_dir": cache}))
    assert main(["cache", "-c", str(cfg)]) == 0
    files = sorted((cache / "hypersim").iterdir())
    assert (cache / "meta.json").is_file() and len(files) == 4
    assert not (tmp_path / "run").exists()  # no training set up: no run folder, logs or checkpoints
    # `apdepth train --build-cache` is the same entry point: it completes an interrupted cache and exits
    before = {f.name: f.stat().st_mtime_ns for f in files[1:]}
    files[0].unlink()
    assert main(["train", "-c", str(cfg), "--build-cache"]) == 0
    assert files[0].is_file() and {f.name: f.stat().st_mtime_ns for f in files[1:]} == before
    assert not (tmp_path / "run").exists()
    # errors: no data.cache_dir (exit 2, naming the key), no config (usage error)
    assert main(["cache", "-c", str(cfg), "data.cache_dir=null"]) == 2
    assert "the latent cache needs data.cache_dir" in caplog.text
    assert main(["cache"]) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_through_accelerate_match_one_process(env, tmp_path):
    """2 processes x 1 sample equal 1 process x 2 accumulated samples: same stream, same averaged gradient."""
    common = {"optim.max_steps": 2, "data.batch_size": 1, "optim.effective_batch": 2}
    cfg = write_config(tmp_path / "s2.yaml", env.overrides(2, tmp_path / "two", **common))
    # accelerate's multi-process launcher (torchrun underneath); ACCELERATE_USE_CPU makes it gloo on the CPU.
    # (`--cpu` alone would start a single process.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "apdepth", "train", "-c", str(cfg)]
    run_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = tmp_path / "two" / "checkpoints" / "step_0000002"
    assert (ckpt / "rng_0.safetensors").is_file() and (ckpt / "rng_1.safetensors").is_file()
    state = yaml.safe_load((ckpt / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["accumulation"] == 1 and state["micro_batches"] == 4

    assert main(["train", "-c", str(cfg), f"run.output_dir={tmp_path / 'one'}"]) == 0
    one = load_file(tmp_path / "one" / "checkpoints" / "step_0000002" / "model.safetensors")
    two = load_file(ckpt / "model.safetensors")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5)
