"""One line per experiment in runs/exp: WHDR (model, prior) and held-out AbsRel (model, prior, ramp)."""
import json
from pathlib import Path

for f in sorted(Path("runs/exp").glob("*/result.json")):
    r = json.loads(f.read_text())
    h = r.get("heldout", {})
    held = "  ".join(f"{s}: {v['apdepth']:.3f}/{v['prior']:.3f}/{v['ramp']:.3f}" for s, v in h.items())
    print(f"{f.parent.name:32s} WHDR model {r['whdr_model']:.3f} prior {r['whdr_prior']:.3f}  {held}  {r.get('seconds')}")
