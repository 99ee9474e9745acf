"""The pipeline floor against the particle count per self-simulated galaxy (JSON).

Usage: python benchmarks/floor_curve.py [--workspace WS] [--run NAME]
       [--counts 1000,4000,20000,100000] [--max 240] [--n-bootstrap 300] [--seed 0]
       [--workers 2]

``--workspace`` names a workspace where ``simcompare score`` has run, ``--run`` the run
(``<sim>_<survey>``, default ``demo_hsc``; its ``run.json`` gives the mocks, the
held-out observed split, the trained model and the compared score column); without a
workspace the demo is scored first in a temporary one with the demo's defaults and
``--no-floor``. The floor (:func:`simcompare.floor.measure_floor`) is then
measured at the simulation's typical particle count (the median of its rendered
galaxies) and at every count of ``--counts``, on at most ``--max`` held-out galaxies
(half self-simulated, half re-rendered analytically), and one JSON object is printed:
per count, both axes' floor (value and CI), the number of galaxies and the seconds
spent; the count at which the floor vanishes (every axis' CI holds 0.5); the run's own
axes and its verdict without and with the floor; the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(float(t)) for t in text.split(",") if t.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, default=None)
    p.add_argument("--run", default="demo_hsc", help="run name <sim>_<survey> in the workspace")
    p.add_argument("--counts", type=_counts, default=(1000, 4000, 20000, 100000))
    p.add_argument("--max", type=int, default=240)
    p.add_argument("--n-bootstrap", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()

    from simcompare.config import ScoreConfig
    from simcompare.floor import measure_floor, vanishing_particles
    from simcompare.pipeline import score
    from simcompare.registry import find_survey

    tmp = None
    ws = a.workspace
    t0 = time.perf_counter()
    if ws is None:
        tmp = tempfile.TemporaryDirectory(prefix="floor_curve_")
        ws = Path(tmp.name)
        score(ScoreConfig(sim="demo", survey="hsc", workspace=str(ws), seed=a.seed,
                          workers=a.workers, floor=False))
    score_s = time.perf_counter() - t0
    run = json.loads((ws / ".simcompare" / "runs" / a.run / "run.json").read_text())
    paths = run["paths"]
    summary = Path(paths["summary"])
    # the score column the run compared (the fine-structure default, or its fallback)
    column = (json.loads(summary.read_text()).get("column") if summary.is_file() else None) \
        or ("llr_peak_nats" if run["config"]["background"] != "none" else "log_prob_nats")
    out = Path(tempfile.mkdtemp(prefix="floor_curve_out_"))
    t1 = time.perf_counter()
    cpu0 = time.process_time()
    rec = measure_floor(
        observed_test=Path(paths["observed_test"]), mocks=Path(paths["mocks"]),
        model=Path(paths["model"]), out=out, survey=find_survey(run["survey"], workspace=ws),
        workspace=ws, column=column, n_particles=None, curve=a.counts,
        max_galaxies=a.max, n_bootstrap=a.n_bootstrap, n_null=10, seed=a.seed,
        workers=a.workers, orientations=run["config"].get("orientations", 1))
    floor_s = time.perf_counter() - t1
    typical = {"particles": rec["particles"], "n_galaxies": rec.get("n_galaxies"),
               "seconds": rec.get("seconds")}
    if "summary" in rec:
        for axis in ("fine_structure", "global_structure"):
            e = rec["summary"]["axes"].get(axis) or {}
            typical[axis] = {"value": e.get("value"), "ci": e.get("ci")}

    # the run's own verdict without and with the floor at the typical count
    from simcompare.comparison import compare

    n_boot = int(run["config"].get("n_bootstrap") or a.n_bootstrap)
    common = {"column": column, "n_bootstrap": n_boot, "n_null": int(run["config"]["n_null"]),
              "seed": int(run["config"]["seed"]), "morphology": paths["morphology_sim"],
              "morphology_reference": paths["morphology_reference"]}
    plain = compare(paths["sim_scores"], paths["reference_scores"], **common)
    floored = compare(paths["sim_scores"], paths["reference_scores"], floor=rec, **common)

    def axes(summary: dict) -> dict:
        return {k: {"value": v.get("value"), "ci": v.get("ci")}
                for k, v in summary["axes"].items() if v}

    print(json.dumps({
        "benchmark": "floor_curve", "workspace": "temporary" if tmp else str(ws),
        "run": a.run, "column": column, "orientations": run["config"].get("orientations", 1),
        "typical_particles": rec.get("typical_particles"),
        "particles_source": rec.get("particles_source"), "halves": rec.get("halves"),
        "floor_at_typical_count": typical, "curve": rec.get("curve", []),
        "vanishes_at_particles": vanishing_particles(rec.get("curve", [])),
        "simulation_axes": axes(plain),
        "verdict_without_floor": plain["verdict"], "verdict_with_floor": floored["verdict"],
        "score_seconds": round(score_s, 1), "floor_seconds": round(floor_s, 1),
        "floor_cpu_seconds_main_process": round(time.process_time() - cpu0, 1),
        "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
    }, indent=1, default=str))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
