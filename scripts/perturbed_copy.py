"""A copy of a Hypersim-layout folder whose RGB images all went through the prior's photometric augmentation
plus sensor noise (apdepth.embedded.pretraining.degraded_copy, fraction 1); depth files are linked, not
copied. For stage-2 experiments: the frozen prior then sees inputs it was not fitted to, as on photographs.
The recipe does the same with `apdepth demo-model --stage2-degraded F`.
python scripts/perturbed_copy.py SRC DST [SEED]"""
import sys

from apdepth.embedded.pretraining import degraded_copy

degraded_copy(sys.argv[1], sys.argv[2], 1.0, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
