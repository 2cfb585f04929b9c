"""``MODEL_CARD.md`` for the demo model, written from what the recipe measured (never by hand)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..io import atomic_open, save_json
from .evaluate import METHODS, REPORTED

LABELS = {"apdepth": "apdepth-demo (this model)", "prior": "its prior alone (DA2 architecture)",
          "constant": "constant depth", "ramp": "ground-plane ramp",
          "gt_resampled": "*reference: ground truth (holes filled) resampled to the processing resolution*"}


def _params(folder: Path) -> dict[str, float]:
    from safetensors import safe_open

    out = {}
    for part in ("unet", "vae", "text_encoder", "prior"):
        n = 0
        for f in sorted((folder / part).rglob("*.safetensors")):  # the prior keeps its weights one level deeper
            with safe_open(f, "pt") as st:
                n += sum(_numel(st.get_slice(k).get_shape()) for k in st.keys())
        out[part] = n / 1e6
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def collect_metrics(eval_dir: Path, sets) -> dict:
    metrics: dict = {}
    for name in sets:
        set_dir = eval_dir / name
        metrics[name] = {}
        for method in METHODS:
            summary = json.loads((set_dir / method / "summary.json").read_text())
            metrics[set_dir.name][method] = {
                "metrics": {k: summary["metrics"].get(k) for k in REPORTED},
                "evaluated": summary["evaluated"],
                "processing_resolution": summary["protocol"]["processing_resolution"],
                "alignment_space": summary["protocol"]["alignment_space"],
            }
    return metrics


def _table(metrics: dict) -> str:
    lines = []
    for name, methods in metrics.items():
        first = methods["apdepth"]
        lines += [f"**{name}-layout held-out archive** ({first['evaluated']} images, processing resolution "
                  f"{first['processing_resolution']})", "",
                  "| method | AbsRel ↓ | δ1 ↑ | boundary F1 ↑ | aligned in |", "|---|---|---|---|---|"]
        for method, m in methods.items():
            v = m["metrics"]
            cells = [f"{v[k]:.4f}" if v[k] is not None else "n/a" for k in REPORTED]
            lines.append(f"| {LABELS[method]} | {' | '.join(cells)} | {m['alignment_space']} |")
        lines.append("")
    return "\n".join(lines)


def _reading(metrics: dict) -> str:
    """One plain sentence per archive: whom the model beats on AbsRel (by what factor), and whom not."""
    lines = []
    for name, methods in metrics.items():
        ours = methods["apdepth"]["metrics"]["abs_rel"]
        theirs = {m: methods[m]["metrics"]["abs_rel"] for m in ("constant", "ramp", "prior")}
        better = [f"{LABELS[m]} ({v / ours:.2f}x lower)" for m, v in theirs.items() if ours < v]
        worse = [LABELS[m] for m, v in theirs.items() if ours >= v]
        text = f"- {name}: AbsRel {ours:.3f}; better than {', '.join(better) or 'none of the references'}"
        if worse:
            text += f"; **not** better than {', '.join(worse)}"
        lines.append(text + ".")
    return "\n".join(lines)


def _discussion(metrics: dict, in_domain: str = "nyu") -> str:
    """What the numbers say about training length and edges, from the numbers (never fixed text)."""
    m = metrics[in_domain]
    ours, prior = m["apdepth"]["metrics"]["abs_rel"], m["prior"]["metrics"]["abs_rel"]
    if ours >= prior:
        text = (f"On the in-domain {in_domain} archive the model trails its own prior (AbsRel {ours:.3f} against "
                f"{prior:.3f}): this short CPU recipe leaves the UNet under-trained, and more steps in "
                "`configs/demo/stage2.yaml` are the obvious lever.")
    else:
        text = (f"On the in-domain {in_domain} archive the model improves on its own prior (AbsRel {ours:.3f} "
                f"against {prior:.3f}), which is what stage 2 is for.")
    ref = {name: methods["gt_resampled"]["metrics"]["boundary_f1"] for name, methods in metrics.items()
           if "gt_resampled" in methods}
    if ref:
        refs = ", ".join(f"{v:.2f} on {k}" for k, v in ref.items() if v is not None)
        text += (" Boundary F1 counts pixel-exact occluding contours at full resolution, and every prediction "
                 "here is made at a low processing resolution and upsampled: even the ground truth resampled "
                 f"that way scores only {refs}, so near-zero values mean blurred edges, not a broken metric. "
                 "The reference's holes are filled with the image's median depth before resampling, which costs it AbsRel "
                 "where the ground truth is sparse (the KITTI layout's projected LiDAR).")
    return text


WHDR_LABELS = {"model": "apdepth-demo (this model)", "prior": "its prior alone (DA2 architecture)",
               "ramp": "vertical ramp (far at the top)", "constant": "constant (every pair a tie)"}


def _whdr_table(whdr: dict) -> str:
    """The WHDR rows (all pairs; pairs whose closer point is not lower) from ``apdepth evaluate-whdr``'s report."""
    lines = [f"| method | WHDR ↓, all {whdr['pairs']} pairs | WHDR ↓, {whdr['pairs_closer_not_lower']} pairs whose "
             "closer point is not lower |", "|---|---:|---:|"]
    for method, label in WHDR_LABELS.items():
        if method in whdr["whdr"]:
            lines.append(f"| {label} | {whdr['whdr'][method]:.3f} | {whdr['whdr_closer_not_lower'][method]:.3f} |")
    return "\n".join(lines)


def _whdr_reading(whdr: dict) -> str:
    ours, ramp, prior = (whdr["whdr"][k] for k in ("model", "ramp", "prior"))
    if ours < ramp:
        verdict = f"orders real photographs better than a vertical ramp ({ours:.3f} against {ramp:.3f})"
    else:
        verdict = f"orders real photographs **worse** than a vertical ramp ({ours:.3f} against {ramp:.3f})"
    return (f"The model {verdict}; its prior alone scores {prior:.3f}. In most photographs the closer of two "
            "points is the lower one (floors, roads and tables recede upwards, skies are at the top), so the "
            "ramp is a strong baseline; the second column counts only the pairs where that rule fails.")


def _compute_line(log: dict) -> str:
    machine = log["machine"]
    seconds = ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in log["steps"].items())
    where = f"{machine['cpus']} CPU cores ({machine['cpu']}, {machine['threads']} torch threads"
    if machine.get("gpu"):
        where += f"; GPU {machine['gpu']}"
    text = f"{where}, device {machine['device']}, torch {machine['torch']}), wall-clock per step of the recipe: {seconds}"
    if machine.get("load_average", 0.0) > 1.5 * machine["cpus"] / 2:  # other jobs ran too: the times are stretched
        text += (f" (the machine was shared: its 5-minute load average reached {machine['load_average']:.1f} on "
                 f"{machine['cpus']} cores, so these times are longer than the recipe needs on a quiet machine)")
    return text


def _recipe_text(cfg: dict, base_losses: dict, train_size) -> str:
    open_air, closeup = cfg.get("outdoor", 0.0), cfg.get("closeup", 0.0)
    closeups = (f"{closeup:.0%} close-ups of one subject (a person, an animal, a plant, a still life) before a "
                "farther wall, hedge or open-air backdrop; ") if closeup else ""
    share = cfg.get("stage2_degraded", 0.0)
    degraded = (f" and {share:.0%} of its images photometrically degraded with sensor noise, so that the frozen "
                "prior's maps look as they do on photographs") if share else ""
    focus = ""
    if cfg.get("prior_focus_steps", 0) and "prior_focus" in base_losses:
        lf = base_losses["prior_focus"]
        focus = (f", then {cfg['prior_focus_steps']} steps on the open-air and close-up scenes only (lr 2e-4; "
                 f"{lf['first']:.4f} -> {lf['last_50']:.4f})")
    length = f" for {cfg['stage2_steps']} steps" if cfg.get("stage2_steps", 0) else ""
    restart = ""
    if cfg.get("stage2_restart_steps", 0):
        restart = (f"; then a warm restart: {cfg['stage2_restart_steps']} more steps from its weights, the learning "
                   "rate warmed up again and decayed over them (latent MSE + pixel L1)")
    return f"""1. Data (`apdepth synth`, seed {cfg['seed']}): {cfg['counts']['hypersim']} Hypersim-layout
   training images at {train_size[0]}x{train_size[1]} ({open_air:.0%} of the scenes open-air: ground, sky,
   tree lines, buildings, hills, people-sized figures, animals, cars, with haze and defocus blur;
   {closeups}the rest furnished rooms); held-out NYUv2-layout ({cfg['counts']['nyu']} images, 480x640) and KITTI-layout
   ({cfg['counts']['kitti']} images, 375x1242, sparse LiDAR-like ground truth) archives, rendered from
   scenes the training set never uses. Every texture is procedural or a tileable CC0 greyscale photo of
   bricks, grass or gravel; no photograph of the WHDR set below is used anywhere.
2. The parts a full-scale run downloads, trained small (`apdepth/embedded/pretraining.py`): the VAE
   for {cfg['vae_steps']} steps on RGB, depth and disparity crops (L1 + 1e-6 KL; loss
   {base_losses['vae']['first']:.4f} -> {base_losses['vae']['last_50']:.4f}), the prior for
   {cfg['prior_steps']} steps on normalised disparity (L1; {base_losses['prior']['first']:.4f} ->
   {base_losses['prior']['last_50']:.4f}; photometric augmentation on {cfg.get('photometric', 0.0):.0%} of the
   images){focus}. The UNet starts from random weights (there is no small Stable Diffusion to start from);
   stage 1's alignment target is the prior's own DINOv2 backbone.
3. `apdepth train -c configs/demo/stage1.yaml` (feature alignment, conv adapter, cosine loss), then
   `apdepth train -c configs/demo/stage2.yaml`{length} from the stage-1 UNet (latent MSE + pixel L1, then the
   FFT loss), stage 2 reading the latent cache{degraded}{restart}.
4. Evaluation with the project's protocol (per-image least-squares alignment, AbsRel, δ1, boundary F1)
   on the held-out archives, and WHDR on real photographs (`apdepth evaluate-whdr`)."""


def _examples_text(examples: list[str]) -> str:
    if not examples:
        return ""
    pictures = "\n".join(f"![{Path(name).stem}]({name})" for name in examples)
    return f"""## Depth on real photographs

Each picture: the photograph, the model's depth and its prior's (near bright, far dark), at the
model's default processing resolution. {EXAMPLES_NOTE}

{pictures}

"""


EXAMPLES_NOTE = ("`cheetah_cub` is gradio's `test_data/cheetah2.jpg` (not in the labelled set); `bikes_125` and "
                 "`china` are two of the 21 labelled WHDR photographs (apdepth/evaluation/whdr_data).")


def write_card(recipe) -> Path:
    """Write ``MODEL_CARD.md`` (and ``metrics.json``, ``per_sample_nyu.csv``) into the recipe's folder from
    what the recipe measured. ``recipe``: a :class:`~apdepth.embedded.recipe.Recipe` (read, never imported)."""
    out: Path = recipe.out
    metrics = collect_metrics(out / "eval", recipe.processing_res)
    save_json(out / "metrics.json", metrics)
    shutil.copy(out / "eval" / "nyu" / "apdepth" / "per_sample.csv", out / "per_sample_nyu.csv")
    log = json.loads(recipe.log_file.read_text())
    whdr = json.loads((out / "eval" / "whdr.json").read_text())
    params = _params(recipe.model_dir)
    base_losses = json.loads((out / "base" / "component_losses.json").read_text())
    examples = sorted(p.name for p in (out / "examples").glob("*.png")) if (out / "examples").is_dir() else []
    text = _card_text(log, params, metrics, whdr, _recipe_text(log["recipe"], base_losses, recipe.train_size),
                      _examples_text([f"examples/{n}" for n in examples]), recipe.processing_res)
    card = out / "MODEL_CARD.md"
    with atomic_open(card, "w") as f:
        f.write(text)
    return card


def _header(params: dict) -> str:
    """Title, what the model is and what it is not."""
    return f"""# apdepth-demo: a small ApDepth trained only on procedural scenes

**What it is.** A miniature ApDepth with every component of the real one: a Stable-Diffusion-style
UNet ({params['unet']:.2f} M parameters; SD2's layout at a tenth of its width) that maps
`cat([prior_latent, rgb_latent])` to a depth latent in one step, an `AutoencoderKL` ({params['vae']:.2f} M)
with SD's 8x downsampling, a CLIP text model ({params['text_encoder']:.2f} M) for the empty prompt, and a
Depth Anything V2-architecture prior ({params['prior']:.2f} M: DINOv2 ViT + DPT head).
Weights are stored in fp16 and run in fp32.

**What it is not.** It is *not* the paper's model and says nothing about ApDepth's accuracy. It has
seen only procedural scenes (rooms of boxes, cylinders and spheres; open-air scenes of a ground
plane, sky, trees, buildings and simple figures), never a photograph; on real images its depth is
rough and blurry (see the WHDR table and the pictures below). It exists so that the tool runs with no
network (demos, smoke tests, CI). For real work use the released checkpoint:
`apdepth predict --model developy/ApDepth ...`.

"""


def _card_text(log: dict, params: dict, metrics: dict, whdr: dict, recipe_text: str, examples: str,
               processing_res: dict) -> str:
    cfg = log["recipe"]
    eval_cmds = "\n".join(
        f"apdepth synth {name} -o data/{name} -n {cfg['counts'][name]} --seed {cfg['seed']}\n"
        f"apdepth evaluate --dataset {name} --data data/{name}/{_archive(name)} --split data/{name}/{_split(name)} "
        f"--processing-res {processing_res[name]} --model embedded -o eval/{name}"
        for name in metrics)
    return f"""{_header(params)}## Recipe

One command from a clone of the repository (`configs/demo/` holds the two training configs; add
`--device cuda` to train and evaluate on a GPU):

```bash
apdepth demo-model -o runs/demo --install
```

{recipe_text}

Compute: {_compute_line(log)}.

## Real photographs: WHDR

`apdepth evaluate-whdr --model embedded`: how often the depth orders two points of a real photograph
the wrong way round, against {whdr['pairs']} point pairs labelled by a person on {whdr['images']} photographs
shipped in the package (docs/evaluation-whdr.md; lower is better, a coin flip scores 0.5).

{_whdr_table(whdr)}

{_whdr_reading(whdr)}

{examples}## Held-out synthetic results

{_table(metrics)}
In plain words (AbsRel, lower is better):

{_reading(metrics)}

{_discussion(metrics)}
The prior's output is disparity, so it is aligned in disparity space; everything else in depth space.

Reproduce these numbers (deterministic data, same protocol):

```bash
{eval_cmds}
apdepth evaluate-whdr --model embedded
```
"""


def _archive(name: str) -> str:
    from ..synth.datasets import ARCHIVE_NAME

    return ARCHIVE_NAME[name]


def _split(name: str) -> str:
    from ..synth.datasets import SPLIT_NAME

    return SPLIT_NAME[name]
