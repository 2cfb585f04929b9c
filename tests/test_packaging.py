"""Packaging: tested dependency floors, packaged configs by name, shipped files free of build paths,
the demo recipe's dry run, the train extra, README links that work on an index page.

The wheel and sdist themselves are built, installed and run by scripts/test_install.sh (CI)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from apdepth.training.config import (
    PACKAGED_CONFIGS,
    ConfigError,
    build_config,
    packaged_config_names,
    resolve_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path}: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def test_floors_file_pins_every_floor_of_pyproject(pyproject):
    """scripts/floors.txt (what CI tests) and pyproject.toml (what users get) name the same versions."""
    project = pyproject["project"]
    floors = {}
    for text in project["dependencies"] + project["optional-dependencies"]["train"]:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text!r}: a floor is a single '>=' bound"
        floors[canonicalize_name(req.name)] = Version(lower[0])
    floors.pop("torch")  # the test venv gets the local 2.13.0 build (see pyproject.toml)
    assert _pins(REPO / "scripts" / "floors.txt") == floors


def test_tensorboard_is_only_in_the_train_extra(pyproject):
    project = pyproject["project"]
    names = {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}
    assert "tensorboard" not in names
    assert any(Requirement(t).name == "tensorboard" for t in project["optional-dependencies"]["train"])


def test_metadata_uses_the_spdx_licence_form(pyproject):
    project = pyproject["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")


# ---------------------------------------------------------------------------------------------- configs


def test_packaged_configs_are_package_data(pyproject):
    names = packaged_config_names()
    for name in ("stage1", "stage2", "stage1_release", "stage2_release", "demo/stage1", "demo/stage2",
                 "ablation/lambda_1.0", "ablation/encoder_none"):
        assert name in names
    source = REPO / "apdepth" / "configs"
    in_source = {p.relative_to(source) for p in source.rglob("*.yaml")}
    patterns = pyproject["tool"]["setuptools"]["package-data"]["apdepth"]
    declared = {p.relative_to(source) for pattern in patterns for p in (REPO / "apdepth").glob(pattern)}
    assert declared == in_source
    # the imported apdepth (the source tree, or an installed wheel under scripts/test_install.sh) has them all
    assert {p.relative_to(PACKAGED_CONFIGS) for p in PACKAGED_CONFIGS.rglob("*.yaml")} == in_source


@pytest.mark.parametrize("name, file", [
    ("stage2", "stage2.yaml"),
    ("stage2.yaml", "stage2.yaml"),
    ("ablation/lambda_1.0", "ablation/lambda_1.0.yaml"),
    ("configs/ablation/lambda_1.0.yaml", "ablation/lambda_1.0.yaml"),  # the documentation's spelling
    ("demo/stage1", "demo/stage1.yaml"),
])
def test_config_names_resolve_to_packaged_presets(name, file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nowhere near a checkout: as from an installed wheel
    assert resolve_config(name) == PACKAGED_CONFIGS / file


def test_a_config_file_path_wins_over_a_preset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("configs").mkdir()
    Path("configs/stage2.yaml").write_text("stage2:\n  freq_strength: 0.25\n")
    assert resolve_config("configs/stage2.yaml") == Path("configs/stage2.yaml")
    assert build_config("configs/stage2.yaml").stage2.freq_strength == 0.25
    assert build_config("stage2").stage2.freq_strength == 0.6  # the paper's lambda, from the preset


def test_build_config_by_preset_name():
    # lambda_1.0 sets the high-pass strength of Eq. 17 to 1.0 and nothing else of stage 2
    assert yaml_keys(PACKAGED_CONFIGS / "ablation" / "lambda_1.0.yaml") == {"stage2.freq_strength": 1.0}
    cfg = build_config(["stage2", "ablation/lambda_1.0"])
    assert cfg.stage == 2 and cfg.stage2.freq_strength == 1.0
    assert build_config("demo/stage1").stage == 1


def yaml_keys(path: Path) -> dict:
    import yaml

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return flat(yaml.safe_load(path.read_text()))


def test_an_unknown_config_names_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"stage9 is neither a file nor a packaged preset.*ablation/lambda_1\.0"):
        resolve_config("stage9")
    with pytest.raises(ConfigError, match="neither"):
        resolve_config(tmp_path / "missing.yaml")  # an absolute path is never looked up among the presets


# ---------------------------------------------------------------------------------------------- shipped files


def _strings(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)
    elif isinstance(value, str):
        yield key, value


def test_shipped_model_files_record_no_build_paths():
    weights = REPO / "apdepth" / "embedded" / "weights"
    files = sorted(weights.rglob("*.json"))
    assert len(files) >= 6
    for path in files:
        for key, value in _strings(json.loads(path.read_text())):
            assert not (key == "_name_or_path" and value), f"{path}: {key}={value!r}"
            assert not re.match(r"^(/|[A-Za-z]:\\|runs/|\.\./)", value), f"{path}: {key}={value!r}"
    assert json.loads((weights / "model_index.json").read_text())["prior_name"] is None


def test_strip_load_paths(tmp_path):
    from apdepth.embedded.recipe import strip_load_paths

    (tmp_path / "unet").mkdir()
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_name_or_path": "runs/x", "unet": ["diffusers", "U"]}))
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_name_or_path": "/abs/unet", "in_channels": 8}))
    untouched = '{"model_max_length": 77}'
    (tmp_path / "tokenizer" / "config.json").write_text(untouched)
    strip_load_paths(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text()) == {"unet": ["diffusers", "U"]}
    assert json.loads((tmp_path / "unet" / "config.json").read_text()) == {"in_channels": 8}
    assert (tmp_path / "tokenizer" / "config.json").read_text() == untouched


def test_demo_recipe_plan_resolves_the_packaged_configs(tmp_path):
    from apdepth.embedded.recipe import STEPS, Recipe, RecipeConfig

    lines = Recipe(tmp_path / "demo", RecipeConfig.smoke()).plan()
    assert [line.split()[0] for line in lines] == list(STEPS)
    stage1 = lines[STEPS.index("stage1")]
    assert str(PACKAGED_CONFIGS / "demo" / "stage1.yaml") in stage1 and "2 steps" in stage1  # smoke: max_steps=2
    assert "(VAE 2 steps, prior 2 steps + 2 on the open-air and close-up scenes)" in lines[STEPS.index("base")]
    focus = Recipe(tmp_path / "focus", RecipeConfig(outdoor=0.4, prior_focus_steps=300)).plan(["base"])
    assert "prior 600 steps + 300 on the open-air and close-up scenes" in focus[0]
    full = Recipe(tmp_path / "demo").plan(["stage2"])
    assert f"{build_config('demo/stage2').max_steps} steps" in full[0]
    with pytest.raises(FileNotFoundError, match="stage1.yaml"):
        Recipe(tmp_path / "demo", configs=tmp_path).plan()


def test_training_without_tensorboard_names_the_extra(tmp_path, monkeypatch):
    from apdepth.training.loop import train

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    cfg = build_config("stage2", [f"run.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"pip install 'apdepth\[train\]'"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # found before anything was written


# ---------------------------------------------------------------------------------------------- README


def test_readme_links_work_on_an_index_page():
    """An index page (PyPI) renders the README without the repository: no relative links, and every
    source path it names is in the source tree (hence in the sdist)."""
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert target.startswith(("https://", "http://", "#")), f"relative link in README.md: {target}"
    named = set(re.findall(r"`((?:apdepth|docs|examples|scripts|tests)/[^`*{}\s]*)`", text))
    assert len(named) >= 5
    for path in named:
        assert (REPO / path).exists(), f"README.md names {path}, which is not in the source tree"
