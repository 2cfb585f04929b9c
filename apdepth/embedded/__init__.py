"""The embedded demo model: a small ApDepth trained only on procedural scenes, shipped in the package.

It lets the tool run with no network and no download (``apdepth predict`` falls back to it when no
``--model`` is given and the released checkpoint is not cached) and backs the end-to-end tests. It is
not the paper's model: see ``MODEL_CARD.md`` next to the weights, and :mod:`.recipe` for how it is made
(``apdepth demo-model``).
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"
NAME = "apdepth-demo (embedded)"


def embedded_model_path() -> Path:
    """Folder of the embedded pipeline (``ApDepthPipeline.from_pretrained(embedded_model_path())``)."""
    if not (WEIGHTS_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"The embedded demo model is missing from {WEIGHTS_DIR} (a damaged install?); reinstall apdepth or "
            "rebuild it with `apdepth demo-model --install`.")
    return WEIGHTS_DIR


def has_embedded_model() -> bool:
    return (WEIGHTS_DIR / "model_index.json").is_file()
