"""ApDepth: single-step diffusion monocular depth estimation with a Depth Anything V2 prior.

The public names are imported on first use (PEP 562), so ``import apdepth`` and the command line's
``--help`` do not pay for torch, diffusers and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (add new lazy exports here)
_LAZY = {
    "ApDepthOutput": ".pipeline",
    "ApDepthPipeline": ".pipeline",
    "DepthAnythingPrior": ".priors",
    "load_prior": ".priors",
    "depth_pipeline": ".hf_pipeline",
}

__all__ = ["ApDepthOutput", "ApDepthPipeline", "DepthAnythingPrior", "depth_pipeline", "load_prior", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .hf_pipeline import depth_pipeline
    from .pipeline import ApDepthOutput, ApDepthPipeline
    from .priors import DepthAnythingPrior, load_prior


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
