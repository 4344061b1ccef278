"""The controller's switch to new residual weights, and its behaviour after a rollback, in the core loop.

    tools/run.sh python bench/bumpless_switch.py [--out bench/results/bumpless_switch.json]

The loop and the cases are test/helpers/switch_loop.py's (test/test_bumpless.py asserts on the
same figures): the 2D quadrotor 30% heavier than the NMPC's model, the figure-8, the flagship's
force disturbances (seed 3), the offset-free estimate at gain 0.5.

- Switch: 0.25x -> 0.5x the pretrained residual's weights at step 100; the transient is the
  largest |u_k - u_{k-1}|_inf over the 15 steps from the switch, for no switch, a switch at once
  (warm start kept), at once with the warm start dropped (a cold restart), and blended over
  `blend_steps` solves (the controller's default, control/supervisor.py).
- Chatter: the loop without a switch flying 0, 0.5 and 1 x the pretrained weights for 300 steps:
  the step-to-step command change's p50 / p99 / max over steps 50-300 (against the input span).
- Rollback: a verified version (0.5x) in force; at step 60 a bad version (the pretrained weights
  with 50% seeded noise each); at step 120 the rollback to the verified one (blended); against
  the verified version throughout and the bad one kept: the mean position error while the bad
  version is in force and over the last 60 steps (200-260), and the constraint violations after 120.

Deterministic (no timing enters): one run per case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _results import write_records  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))
from helpers import switch_loop as loop  # noqa: E402  (test/ on sys.path first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bumpless_switch.json")
    args = parser.parse_args()
    theta = loop.pretrained_theta()
    transients = loop.transients(theta)
    runs = loop.rollback_runs(theta)
    none = transients["none"]
    records = [{"case": f"switch_{name}", "transient": value, "over_no_switch": value / none}
               for name, value in transients.items()]
    bad = slice(loop.ROLLBACK_FROM, loop.ROLLBACK_TO)
    last = slice(loop.ROLLBACK_END - 60, loop.ROLLBACK_END)
    ref_last = float(runs["verified"][1][last].mean())
    for name, (_, err, violated) in runs.items():
        records.append({"case": f"rollback_{name}", "error_while_bad_m": float(err[bad].mean()),
                        "error_last_60_m": float(err[last].mean()),
                        "error_last_60_over_verified": float(err[last].mean()) / ref_last,
                        "violation_steps_after_rollback": int(violated[loop.ROLLBACK_TO:].sum())})
    # The command's step-to-step change without a switch, flying a fraction of the pretrained weights
    # throughout (300 steps, the first 50 left out): how much the residual itself makes the RTI chatter.
    low, high = loop.input_bounds()
    for fraction in (0.0, 0.5, 1.0):
        us, _, violated = loop.fly_log(fraction * theta, {}, 300, gain=0.5)
        du = np.abs(np.diff(us, axis=0)).max(axis=1)[49:]
        records.append({"case": f"chatter_{fraction:g}", "weights": f"{fraction:g} x pretrained",
                        "du_p50": float(np.percentile(du, 50)), "du_p99": float(np.percentile(du, 99)),
                        "du_max": float(du.max()), "du_max_over_input_span": float(du.max() / (high - low).max()),
                        "violation_steps": int(violated.sum())})
    for r in records:
        print(r)
    write_records(args.out, records, blend_steps=loop.BLEND, switch_step=loop.SWITCH,
                  window_steps=loop.STEPS - loop.SWITCH,
                  bound_over_no_switch=loop.BOUND, seed=3, disturbance_gain=0.5,
                  rollback={"bad_from": loop.ROLLBACK_FROM, "rollback_at": loop.ROLLBACK_TO, "end": loop.ROLLBACK_END,
                            "bad_version": "pretrained weights x (1 + 0.5 N(0, 1)), numpy seed 0",
                            "verified_version": "0.5 x the pretrained weights"},
                  transient_rule="max |u_k - u_{k-1}|_inf over the steps from the switch; same loop for every case")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
