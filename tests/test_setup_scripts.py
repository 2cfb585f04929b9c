"""scripts/setup.sh: the first set-up installs; a complete set-up never calls pip again (offline-safe), and a
changed pyproject.toml or a new extra installs again.

Runs the real script on a copy of the checkout with its own venv. The venv sees this environment's packages
through a .pth file, so the first install resolves everything locally (no index, no build isolation); the
later runs get a package index on a closed local port, as on a machine without network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLOSED_INDEX = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "1"}


def _setup(repo: Path, venv: Path, extras: str = "", **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    full.update(APDEPTH_VENV=str(venv), PYTHON=sys.executable, **env)
    cmd = f". scripts/setup.sh {extras} && python -c 'import apdepth, sys; print(apdepth.__file__)'"
    return subprocess.run(["bash", "-c", cmd], cwd=repo, env=full, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def checkout(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("scripts", "pyproject.toml", "README.md", "LICENSE"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, repo / name)
    shutil.copytree(ROOT / "apdepth", repo / "apdepth", ignore=shutil.ignore_patterns("__pycache__"))
    return repo


@pytest.mark.slow  # pip installs twice (about a minute); scripts/test.sh checks the offline re-run every time
@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_setup_is_idempotent_and_offline_safe(checkout, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # a venv may bundle an old setuptools (3.11: 65.5, without bdist_wheel): build with this environment's
    subprocess.run([venv / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "setuptools"], timeout=300,
                   capture_output=True)
    purelib = sysconfig.get_paths()["purelib"]  # this environment's packages (torch, diffusers, ...)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_outer_env.pth").write_text(purelib + "\n")
    local = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # pip's odd spelling: 0 = no isolation

    first = _setup(checkout, venv, **local)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installing ." in first.stderr and first.stdout.strip() == str(checkout / "apdepth" / "__init__.py")
    stamp = (venv / "apdepth-setup.stamp").read_text().split()
    assert stamp[2] == "-" and len(stamp[0]) == 64

    again = _setup(checkout, venv, **CLOSED_INDEX)  # complete: no pip call, so no network needed
    assert again.returncode == 0, again.stdout + again.stderr
    assert "installing" not in again.stderr

    dev = _setup(checkout, venv, "dev", **local)  # a new extra installs (test.sh after demo.sh) ...
    assert dev.returncode == 0 and "installing .[dev]" in dev.stderr, dev.stderr
    for extras in ("", "dev"):  # ... after which neither the demo's nor the tests' set-up calls pip
        offline = _setup(checkout, venv, extras, **CLOSED_INDEX)
        assert offline.returncode == 0 and "installing" not in offline.stderr, offline.stderr
    # demo.sh itself, with arguments of its own (a sourced script sees them unless given its own)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    demo = subprocess.run(["bash", "scripts/demo.sh", "-o", "elsewhere", "--help"], cwd=checkout, capture_output=True,
                          text=True, timeout=600, env={**env, "APDEPTH_VENV": str(venv), **CLOSED_INDEX})
    assert demo.returncode == 0 and "usage: apdepth predict" in demo.stdout, demo.stderr
    assert "installing" not in demo.stderr

    with open(checkout / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    changed = _setup(checkout, venv, **local)  # pyproject.toml changed: installs again
    assert changed.returncode == 0 and "installing ." in changed.stderr, changed.stderr
    restamped = (venv / "apdepth-setup.stamp").read_text().split()
    assert restamped[0] != stamp[0] and restamped[2] == "dev"  # the extras installed before are kept
