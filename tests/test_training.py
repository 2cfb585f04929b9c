"""The training engine on tiny models and tiny data in the real layouts: the stages' losses and
gradients, the stage interface the loop trains through, overfitting a small batch, exact kill-and-resume,
the latent cache (its own entry point), fail-fast checks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from training_env import make_training_env

from apdepth.pipeline import ApDepthPipeline
from apdepth.training import TrainingStage, build_config, cache_latents, train
from apdepth.training.build import build_datasets, build_pipeline, build_stage
from apdepth.training.checkpoint import list_checkpoints
from apdepth.training.config import ConfigError
from apdepth.training.inputs import TrainModule, encode_inputs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_training_env(tmp_path_factory.mktemp("train_env"))


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def setup(env, tmp_path, stage, scale=1, flip=True, **extra):
    """Config, pipeline, stage, trainable module and the encoded inputs of a 2-sample batch (the second
    flipped if ``flip``; frames upscaled ``scale`` times)."""
    cfg = build_config(None, env.overrides(stage, tmp_path / "run", **extra))
    _, _, view = build_datasets(cfg)
    pipe = build_pipeline(cfg)
    st = build_stage(cfg, pipe)
    st.prepare_unet(pipe.unet)
    module = TrainModule(pipe, **st.trainable_modules()).train()
    batch = {k: torch.stack([view[(0, i, flip and i == 1)][k] for i in range(2)])
             for k in ("rgb", "depth_norm", "valid_mask")}
    if scale > 1:
        batch = {k: v.repeat_interleave(scale, -1).repeat_interleave(scale, -2) for k, v in batch.items()}
    return cfg, pipe, st, module, encode_inputs(pipe, batch, st.needs_depth_latent)


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_stage1_taps_the_mid_block_and_trains_only_what_the_loss_reaches(env, tmp_path):
    cfg, pipe, stage, module, inputs = setup(env, tmp_path, 1)
    seen = []
    handle = pipe.unet.mid_block.register_forward_hook(lambda m, a, out: seen.append(out))
    out = stage.losses(module, inputs, step=1)
    handle.remove()
    assert set(out) == {"loss", "align"} and 0 < out["align"].item() <= 2
    mid = seen[0]  # [B, 64, h64, w64]: the tiny UNet's mid block
    assert mid.shape[1] == pipe.unet.config.block_out_channels[-1]
    torch.testing.assert_close(module.adapter(mid), module(inputs.condition())["features"])
    out["loss"].backward()
    assert not any(p.requires_grad for p in pipe.unet.up_blocks.parameters())  # beyond the tap: frozen
    assert grad_norm(pipe.unet.down_blocks) > 0 and grad_norm(pipe.unet.conv_in) > 0 and grad_norm(stage.adapter) > 0
    assert all(p.grad is None for p in pipe.vae.parameters())


def test_stage1_release_variant(env, tmp_path):
    _, pipe, stage, module, inputs = setup(env, tmp_path, 1, **{"stage1.latent_mse_weight": 1.0,
                                                                "stage1.condition_order": "rgb_prior",
                                                                "stage1.encoder": "prior",
                                                                "stage1.encoder_source": "null"})
    assert torch.equal(inputs.condition("rgb_prior")[:, :4], inputs.rgb_latent)
    out = stage.losses(module, inputs, step=1)
    assert set(out) == {"loss", "align", "latent_mse"}
    torch.testing.assert_close(out["loss"], out["align"] + out["latent_mse"])
    out["loss"].backward()
    assert grad_norm(pipe.unet.up_blocks) > 0  # the latent MSE reaches the whole UNet
    assert stage.encoder.model.embeddings is pipe.prior.model.backbone.embeddings


def test_stage2_phases_and_the_gradient_through_the_frozen_decoder(env, tmp_path):
    cfg, pipe, stage, module, inputs = setup(env, tmp_path, 2, **{"stage2.phase1_steps": 5})
    one, two = stage.losses(module, inputs, step=5), stage.losses(module, inputs, step=6)
    assert set(one) == {"loss", "latent_mse", "pixel_l1"} and set(two) == {"loss", "freq"}
    torch.testing.assert_close(one["loss"], one["latent_mse"] + one["pixel_l1"])
    torch.testing.assert_close(two["loss"], cfg.stage2.freq_weight * two["freq"])
    # pixel L1 alone: the gradient reaches the UNet through the VAE decoder, whose weights stay frozen
    stage.cfg.latent_mse_weight = 0.0
    out = stage.losses(module, inputs, step=1)
    assert set(out) == {"loss", "pixel_l1"}
    out["loss"].backward()
    assert grad_norm(pipe.unet) > 0 and all(p.grad is None for p in pipe.vae.parameters())
    stage.cfg.freq_space = "latent"
    assert torch.isfinite(stage.losses(module, inputs, step=6)["freq"])


def test_each_stage_declares_what_the_loop_needs(env, tmp_path):
    from apdepth.modules import load_adapter

    _, pipe, one, module, _ = setup(env, tmp_path, 1)
    assert isinstance(one, TrainingStage) and one.name == "stage1"
    assert one.trainable_modules() == {"adapter": one.adapter} and module.adapter is one.adapter
    assert list(one.frozen_modules()) == ["encoder"] and not any(
        p.requires_grad for p in one.frozen_modules()["encoder"].parameters())
    assert one.needs_depth_latent is False  # alignment alone reads no depth latent
    one.cfg.latent_mse_weight = 1.0
    assert one.needs_depth_latent is True
    assert [one.phase(s) for s in (1, 20_000, 10**6)] == [1, 1, 1] and one.log_values(7) == {}
    one.export(tmp_path / "final1")
    saved = load_adapter(tmp_path / "final1" / "adapter").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in one.adapter.state_dict().items())

    cfg, pipe, two, module, _ = setup(env, tmp_path, 2, **{"stage2.phase1_steps": 5})
    assert isinstance(two, TrainingStage) and two.name == "stage2" and two.needs_depth_latent is True
    assert two.trainable_modules() == {} and module.adapter is None
    assert two.frozen_modules() == {"vae": pipe.vae}  # its decoder: the pixel losses
    assert [two.phase(s) for s in (1, 5, 6, 21_000)] == [1, 1, 2, 2]
    assert two.log_values(5) == {"train/phase": 1} and two.log_values(6) == {"train/phase": 2}
    (tmp_path / "final2").mkdir()
    two.export(tmp_path / "final2")
    assert list((tmp_path / "final2").iterdir()) == []  # the pipeline is the whole model


def test_a_stage_must_declare_every_part_of_the_interface():
    class LossOnly(TrainingStage):
        name = "loss_only"

        def losses(self, model, inputs, step):
            return {"loss": torch.zeros(())}

    with pytest.raises(TypeError, match="abstract"):
        LossOnly()


def test_the_loop_trains_any_stage_through_the_interface(env, tmp_path, monkeypatch):
    """A stage the loop has never seen: its losses (by phase), logged values and export are the stage's own."""
    from apdepth.training import build as build_module
    from apdepth.training.stage2 import Stage2

    class LatentOnly(Stage2):
        name = "latent_only"

        def phase(self, step):
            return 1 if step == 1 else 2

        def losses(self, model, inputs, step):
            mse = torch.nn.functional.mse_loss(model(inputs.condition())["latent"], inputs.depth_latent)
            return {"loss": mse if self.phase(step) == 1 else 0.5 * mse, "mse": mse}

        def log_values(self, step):
            return {"train/custom": 100.0 + step}

        def export(self, folder):
            (folder / "stage.txt").write_text(self.name)

    monkeypatch.setitem(build_module.STAGES, 2, lambda cfg, pipe: LatentOnly(cfg.stage2, pipe.vae))
    logged = {}
    cfg = build_config(None, env.overrides(2, tmp_path / "run", **{"optim.max_steps": 2}))
    final = train(cfg, on_step=lambda step, values: logged.update({step: values}))
    assert (final / "stage.txt").read_text() == "latent_only" and (final / "unet").is_dir()
    assert logged[1]["train/custom"] == 101.0 and logged[2]["train/custom"] == 102.0
    assert set(logged[1]) == {"train/loss", "train/mse", "train/lr", "train/custom", "perf/seconds_per_step",
                              "perf/samples_per_second"}
    assert logged[1]["train/loss"] == pytest.approx(logged[1]["train/mse"], rel=1e-6)
    assert logged[2]["train/loss"] == pytest.approx(0.5 * logged[2]["train/mse"], rel=1e-6)


@pytest.mark.parametrize("stage, term, extra", [
    (1, "align", {}),
    (2, "latent_mse", {"stage2.pixel_l1_weight": 0.0}),
])
def test_a_tiny_model_overfits_a_small_batch(env, tmp_path, stage, term, extra):
    # 32 x 48 frames, unflipped: the random tiny VAE + UNet barely tell a frame from its mirror image
    _, pipe, st, module, inputs = setup(env, tmp_path, stage, scale=2, flip=False, **extra)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    history = []
    for _ in range(25):
        out = st.losses(module, inputs, step=1)
        history.append(out[term].item())
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert history[-1] < history[0] / 10, history


def final_unet(run_dir):
    return load_file(run_dir / "final" / "unet" / "diffusion_pytorch_model.safetensors")


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def resumed_runs(env, tmp_path_factory):
    """An uninterrupted stage-2 run, and one killed after step 3 (checkpoint at 2) then resumed. Both
    cross the phase boundary (phase 1: steps 1-2) and keep an EMA."""
    from accelerate.state import AcceleratorState

    tmp = tmp_path_factory.mktemp("resume")
    extra = {"optim.max_steps": 4, "stage2.phase1_steps": 2, "optim.ema": True}
    full = train(build_config(None, env.overrides(2, tmp / "full", **extra)))
    AcceleratorState._reset_state(True)

    def kill(step, logged):
        if step == 3:
            raise Killed

    cfg = build_config(None, env.overrides(2, tmp / "killed", **extra))
    with pytest.raises(Killed):
        train(cfg, on_step=kill)
    AcceleratorState._reset_state(True)
    assert [p.name for p in list_checkpoints(tmp / "killed")] == ["step_0000002"]
    resumed = train(cfg, resume=True)
    AcceleratorState._reset_state(True)
    return full.parent, resumed.parent, cfg


def test_kill_and_resume_reproduces_the_uninterrupted_run(resumed_runs):
    full, resumed, _ = resumed_runs
    a, b = final_unet(full), final_unet(resumed)  # EMA weights: the exported model
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in ("model", "optimizer", "ema"):
        x = load_file(full / "checkpoints" / "step_0000004" / f"{name}.safetensors")
        y = load_file(resumed / "checkpoints" / "step_0000004" / f"{name}.safetensors")
        assert all(torch.equal(x[k], y[k]) for k in x), name
    ckpt = full / "checkpoints" / "step_0000004"
    assert (ckpt / "config.yaml").is_file() and (ckpt / "rng_0.safetensors").is_file()
    assert not list((full / "checkpoints").glob(".tmp-*"))


def test_resume_refuses_what_does_not_fit(resumed_runs, env, tmp_path):
    _, resumed, cfg = resumed_runs
    with pytest.raises(ConfigError, match="already holds checkpoints; resume with --resume"):
        train(cfg)
    changed = build_config(base=cfg.to_dict(), overrides=["stage2.freq_strength=2.0"])
    with pytest.raises(ConfigError, match=r"other settings \(stage2.freq_strength\)"):
        train(changed, resume=True)
    stage1 = build_config(None, env.overrides(1, resumed))
    with pytest.raises(ConfigError, match="a stage-2 checkpoint cannot resume a stage-1 run"):
        train(stage1, resume=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(build_config(None, env.overrides(2, tmp_path / "empty")), resume=tmp_path)


def test_missing_inputs_fail_at_start(env, tmp_path):
    bad = env.overrides(2, tmp_path / "run", **{"data.hypersim.root": tmp_path / "nope",
                                                "model.base": tmp_path / "no_sd2"})
    with pytest.raises(ConfigError) as info:
        train(build_config(None, bad))
    assert "data.hypersim.root" in str(info.value) and "model.base" in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing started


def test_cached_and_raw_steps_agree(env, tmp_path):
    from accelerate.state import AcceleratorState

    extra = {"optim.max_steps": 1, "data.cache_dir": tmp_path / "cache"}
    cfg = build_config(None, env.overrides(2, tmp_path / "cached", **extra))
    assert cache_latents(cfg) == tmp_path / "cache"
    AcceleratorState._reset_state(True)
    assert not (tmp_path / "cached").exists()  # building the cache sets up no training run
    files = sorted((tmp_path / "cache" / "hypersim").iterdir())
    assert len(files) == 4 and set(load_file(files[0])) == {f"{k}_{f}" for k in ("rgb_latent", "prior_latent",
                                                                              "depth_latent") for f in (0, 1)}
    cached = train(cfg).parent
    AcceleratorState._reset_state(True)
    raw = train(build_config(None, env.overrides(2, tmp_path / "raw", **{"optim.max_steps": 1}))).parent
    # the logged losses agree to float rounding ...

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def first_losses(run):
        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        return [acc.Scalars(t)[0].value for t in ("train/loss", "train/latent_mse", "train/pixel_l1")]

    assert first_losses(cached) == pytest.approx(first_losses(raw), rel=1e-5)
    # ... and so do the weights after an Adam step (lr 1e-4: Adam moves a weight by up to ~1e-4 a step,
    # rounding-level gradient differences change it by a small fraction of that)
    a, b = final_unet(cached), final_unet(raw)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    # a cache built for another prior is refused
    AcceleratorState._reset_state(True)
    other = build_config(None, env.overrides(2, tmp_path / "other", **extra, **{"model.prior": "none"}))
    with pytest.raises(ValueError, match="built for another model or data"):
        train(other)


def test_prior_degradation_runs_on_every_micro_batch_of_a_cached_run(env, tmp_path, monkeypatch):
    from apdepth.training import stage2 as stage2_module

    calls, original = [], stage2_module.degrade_prior

    def spy(disp, p, generator=None):
        calls.append((tuple(disp.shape), p))
        return original(disp, p, generator)

    monkeypatch.setattr(stage2_module, "degrade_prior", spy)
    extra = {"optim.max_steps": 2, "data.cache_dir": tmp_path / "cache", "stage2.prior_degrade": 1.0}
    cfg = build_config(None, env.overrides(2, tmp_path / "run", **extra))
    cache_latents(cfg)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    train(cfg)
    batch = cfg.data.batch_size
    assert len(calls) == 2 * cfg.optim.effective_batch // batch and all(c[1] == 1.0 for c in calls)
    assert calls[0][0][:2] == (batch, 1)


def test_the_cache_entry_point_needs_a_cache_dir_and_no_run_folder(env, tmp_path):
    with pytest.raises(ConfigError, match="needs data.cache_dir"):
        cache_latents(build_config(None, env.overrides(2, tmp_path / "run")))
    cfg = build_config(None, env.overrides(2, tmp_path / "run", **{"data.cache_dir": tmp_path / "cache",
                                                                   "run.output_dir": "null"}))
    assert cfg.run.output_dir is None
    assert cache_latents(cfg) == tmp_path / "cache" and len(list((tmp_path / "cache" / "hypersim").iterdir())) == 4


def test_no_prior_variant_trains_and_predicts_with_a_zero_prior_latent(env, tmp_path):
    final = train(build_config(None, env.overrides(2, tmp_path / "run", **{"model.prior": "none",
                                                                          "optim.max_steps": 1})))
    pipe = ApDepthPipeline.from_pretrained(final)
    assert pipe.config.use_prior is False and pipe.prior is None
    rgb = torch.rand(1, 3, 16, 24) * 2 - 1
    condition = pipe.encode_condition(rgb)
    assert torch.equal(condition[:, :4], torch.zeros_like(condition[:, :4]))
    depth = pipe(rgb[0].add(1).div(2), output_type="pt").depth
    assert depth.shape == (1, 1, 16, 24) and 0 <= depth.min() and depth.max() <= 1
    with pytest.raises(ValueError, match="trained without a prior"):
        ApDepthPipeline.from_pretrained(final, prior="small")
