"""ApDepth: single-step diffusion monocular depth estimation with a Depth Anything V2 prior."""

from .pipeline import ApDepthOutput, ApDepthPipeline
from .priors import DepthAnythingPrior, load_prior

__version__ = "0.1.0"

__all__ = ["ApDepthOutput", "ApDepthPipeline", "DepthAnythingPrior", "load_prior", "__version__"]
