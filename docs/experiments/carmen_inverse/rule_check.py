"""Rule check for ``configs/carmen.py:real_inverse``: ED -> ES propagation and cycle closure on the real training
cines with manual ED/ES labels (001-005), the shipped CarMEN against the candidate.

``PYTHONPATH=. python docs/experiments/carmen_inverse/rule_check.py CANDIDATE_MODEL`` (data root below)."""
import sys

import numpy as np

from deepstrain_jax.analysis.networks import Networks
from deepstrain_jax.data import acdc_real
from eval import real_motion

cand = sys.argv[1]
root = "/work/shared/data/acdc"
nets = {"v2": Networks.load(), "cand": Networks.load(carmen=cand)}
refs = acdc_real.find_cases(root, "cine", include=["001", "002", "003", "004", "005"])
assert not {r.number for r in refs} & set(acdc_real.HELD_OUT)
out = {}
for k, n in nets.items():
    rows = []
    for ref in refs:
        case = acdc_real.read_case(ref)
        r = real_motion.propagation_case(case, "carmen", n)
        rows.append(r)
        print(k, case.name, f"ed2es myo {r['ed2es_dice_myo']:.3f} lv {r['ed2es_dice_lv']:.3f} closure "
              f"{r['closure_mean_mm']:.2f} ({r['closure_in_plane_mm']:.2f} / {r['closure_through_plane_mm']:.2f})", flush=True)
    out[k] = {m: float(np.mean([r[m] for r in rows])) for m in ("ed2es_dice_myo", "ed2es_dice_lv", "es2ed_dice_myo",
              "closure_mean_mm", "closure_in_plane_mm", "closure_through_plane_mm")}
    print(k, out[k], flush=True)
print("delta ed2es myo", out["cand"]["ed2es_dice_myo"] - out["v2"]["ed2es_dice_myo"])
