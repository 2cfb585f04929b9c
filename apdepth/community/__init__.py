"""Files for diffusers' ``custom_pipeline`` loading (see ``apdepth_pipeline.py``)."""

import os

PIPELINE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apdepth_pipeline.py")
