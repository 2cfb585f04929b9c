"""ApDepth as a diffusers custom pipeline file.

Load any ApDepth folder or hub id through diffusers' generic entry point::

    from diffusers import DiffusionPipeline
    import apdepth.community

    pipe = DiffusionPipeline.from_pretrained(path_or_id, custom_pipeline=apdepth.community.PIPELINE_FILE)
    depth = pipe(image).prediction  # [1, H, W, 1], as MarigoldDepthPipeline returns it

This file has no relative imports (diffusers copies it into its module cache and imports it there); it needs
the ``apdepth`` package installed and defines exactly one pipeline class, which diffusers picks.

``DiffusionPipeline.from_pretrained`` builds the pipeline from its components without
``ApDepthPipeline.from_pretrained``'s extras, so the one that matters is repeated here: a folder without a
``prior/`` (the authors' release) gets its prior on the first call, from the config's ``prior_name`` or, when it
records none, Depth Anything V2 Large (with a warning), as ``ApDepthPipeline.from_pretrained`` does on load.
"""

import logging

import apdepth.pipeline as _apdepth_pipeline
from apdepth.priors import load_prior as _load_prior

logger = logging.getLogger(__name__)


class ApDepthPipeline(_apdepth_pipeline.ApDepthPipeline):
    """:class:`apdepth.ApDepthPipeline`, loadable with ``DiffusionPipeline.from_pretrained(...,
    custom_pipeline=<this file>)``."""

    def run_prior(self, rgb):
        if self.config.use_prior and self.prior is None:
            spec = self.config.prior_name
            if spec is None:
                spec = _apdepth_pipeline.LEGACY_PRIOR
                logger.warning(
                    "This checkpoint does not record its prior; using Depth Anything V2 %s. Load it with "
                    "apdepth.ApDepthPipeline.from_pretrained(..., prior=...) to choose another.", spec,
                )
            prior = _load_prior(spec, preprocessing=self.config.prior_preprocessing, dtype=self.vae.dtype)
            self.register_modules(prior=prior.to(rgb.device))
        return super().run_prior(rgb)
