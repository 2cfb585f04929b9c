"""Training configs: the paper's defaults, YAML deltas, overrides, presets, schedules."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from apdepth.training import STAGE_STEPS, LRSchedule, TrainConfig, build_config
from apdepth.training.config import ConfigError, config_differences
from apdepth.training.loop import accumulation_steps
from apdepth.training.stage2 import Stage2

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def test_defaults_are_the_papers_values():
    cfg = TrainConfig()
    assert cfg.optim.lr == 3e-5 and cfg.optim.effective_batch == 32
    assert (cfg.optim.warmup_steps, cfg.optim.decay_steps, cfg.optim.final_ratio) == (100, 25_000, 0.01)
    assert cfg.run.seed == 2024 and cfg.run.checkpoint_every == 250 and cfg.run.mixed_precision == "no"
    assert cfg.data.mix == {"hypersim": 0.9, "vkitti": 0.1} and cfg.data.flip_prob == 0.5
    assert cfg.data.quantiles == [0.02, 0.98] and cfg.data.min_valid_pixels == 10
    assert cfg.stage1.encoder == "dinov2" and cfg.stage1.adapter == "conv" and cfg.stage1.latent_mse_weight == 0
    assert cfg.stage2.phase1_steps == 20_000 and cfg.stage2.freq_strength == 0.6 and cfg.stage2.freq_space == "pixel"
    assert STAGE_STEPS == {1: 20_000, 2: 21_000}
    assert build_config(None, ["stage=1"]).max_steps == 20_000 and build_config().max_steps == 21_000


def test_yaml_layers_and_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("stage: 2\nstage2:\n  freq_strength: 1.0\n  freq_p: 2\ndata:\n  mix: {hypersim: 1.0}\n")
    b = tmp_path / "b.yaml"
    b.write_text("stage2:\n  freq_strength: 1.6\n")
    cfg = build_config([a, b], ["optim.lr=1e-4", "optim.max_steps=7", "run.output_dir=x", "stage2.freq_eps=1e-6"])
    assert cfg.stage2.freq_strength == 1.6 and cfg.stage2.freq_p == 2  # later files win, the rest stays
    assert cfg.data.mix == {"hypersim": 1.0} and cfg.active_sources() == {"hypersim": 1.0}
    assert cfg.optim.lr == 1e-4 and cfg.max_steps == 7 and cfg.run.output_dir == "x"
    assert isinstance(cfg.optim.lr, float) and cfg.stage2.freq_eps == 1e-6
    # the resolved config round-trips, and leaves out the section the stage does not read
    resolved = cfg.to_dict()
    assert "stage1" not in resolved and resolved["optim"]["max_steps"] == 7
    assert build_config(base=resolved).to_dict() == resolved


@pytest.mark.parametrize("override, message", [
    ("stage2.lambda=1", "unknown config key 'stage2.lambda'; allowed here: phase1_steps"),
    ("optim.lr=fast", "config key 'optim.lr' must be float"),
    ("data.batch_size=2.5", "config key 'data.batch_size' must be int"),
    ("stage1.adapter=linear", "'stage1.adapter' must be one of ('conv', 'mlp')"),
    ("stage2.freq_p=3", "'stage2.freq_p' must be one of (1, 2)"),
    ("data.mix={nyu: 1.0}", "unknown training sets ['nyu']"),
    ("data.mix={hypersim: 0}", "no training set a positive share"),
    ("run.mixed_precision=fp8", "'run.mixed_precision' must be one of"),
    ("optim", "is not key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        build_config(None, [override])
    assert message in str(info.value)


def test_a_stage_never_silently_ignores_the_other_stages_settings():
    with pytest.raises(ConfigError, match="sets stage1.* but a stage-2 run does not read it"):
        build_config(None, ["stage=2", "stage1.adapter=mlp"])
    with pytest.raises(ConfigError, match="skips stage 1"):
        build_config(None, ["stage=1", "stage1.encoder=none"])
    build_config(None, ["stage=1", "stage1.encoder=none", "stage1.latent_mse_weight=1"])  # the release's loss alone


def _stage_of(preset: Path) -> list[int]:
    text = preset.read_text()
    if "stage1:" in text:
        return [1]
    if "stage2:" in text or "encoder_none" in preset.name:
        return [2]
    return [1, 2]


def test_every_config_file_loads_and_every_ablation_preset_is_a_real_change():
    for name in ("stage1", "stage2", "stage1_release", "stage2_release"):
        cfg = build_config(CONFIGS / f"{name}.yaml")
        assert cfg.stage == int(name[5]) and cfg.run.output_dir
    presets = sorted((CONFIGS / "ablation").glob("*.yaml"))
    names = {p.stem for p in presets}
    assert {"prior_none", "prior_small", "prior_base", "prior_large", "prior_giant", "adapter_mlp", "adapter_conv",
            "lambda_0.6", "lambda_1.0", "lambda_1.6", "lambda_2.0", "encoder_dinov2", "encoder_openclip",
            "encoder_sam", "encoder_none", "data_hypersim", "data_vkitti", "data_mixed"} <= names
    restating_defaults = {"prior_large", "adapter_conv", "lambda_0.6", "encoder_dinov2", "data_mixed"}
    for preset in presets:
        for stage in _stage_of(preset):
            base = build_config(CONFIGS / f"stage{stage}.yaml")
            cfg = build_config([CONFIGS / f"stage{stage}.yaml", preset])
            diff = config_differences(base.to_dict(), cfg.to_dict())
            assert (diff == []) == (preset.stem in restating_defaults), (preset.name, diff)


def test_every_config_key_is_read_by_the_code():
    """No dead keys: each leaf key is read as an attribute somewhere outside the config module (or, for
    the few read through the config's own helpers, there)."""
    sources = "\n".join(p.read_text() for p in (REPO / "apdepth").rglob("*.py") if p.name != "config.py")
    read_by_helpers = {"data.hypersim", "data.vkitti", "data.mix", "optim.max_steps"}  # active_sources, max_steps

    def leaves(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and prefix + f.name not in read_by_helpers:
                yield from leaves(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    unread = [k for k in leaves(TrainConfig()) if k not in read_by_helpers and k != "stage"
              and not re.search(rf"\.{re.escape(k.split('.')[-1])}\b", sources)]
    assert unread == []


def test_learning_rate_schedule():
    f = LRSchedule(warmup_steps=100, decay_steps=25_000, final_ratio=0.01)
    assert f(0) == pytest.approx(0.01) and f(49) == pytest.approx(0.5) and f(99) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1.0)
    assert f(100 + 12_500) == pytest.approx(0.1)  # halfway through the decay: sqrt(0.01)
    assert f(100 + 25_000) == pytest.approx(0.01) and f(10**6) == pytest.approx(0.01)


def test_phase_switches_after_phase1_steps():
    stage = Stage2(build_config().stage2, vae=None)
    assert [stage.phase(s) for s in (1, 19_999, 20_000, 20_001, 21_000)] == [1, 1, 1, 2, 2]


def test_accumulation_steps():
    assert accumulation_steps(32, 2, 1) == 16 and accumulation_steps(32, 2, 8) == 2 and accumulation_steps(32, 4, 8) == 1
    with pytest.raises(ConfigError, match="effective_batch=32 is not a multiple of data.batch_size=3 x 1"):
        accumulation_steps(32, 3, 1)
