"""The whole chain, stage by stage: galaxies/s/core with 1 and 2 workers, and a projection.

Prints one JSON object. The workload is fixed and synthetic: the built-in demo
simulation (``reader = "demo"``, N galaxies) and the demo HSC sample (N cutouts, 5 bands),
both at the benchmark's stamp size. Each distributed stage (render, ingest, morphology,
evaluate) runs through :class:`simcompare.cluster.Cluster` with 1 worker (in this
process) and with 2 local dask workers on the same inputs; the cluster is started, and
each worker imports the stages' modules, before the clock starts, so this start-up
(reported separately) is not charged to a stage.
Training runs in one process (its own threads) and is reported per galaxy and epoch.

    efficiency(stage) = rate(2 workers) / (2 x rate(1 worker))

The projection (``projection``) scales the measured per-core rates to the TNG100 x HSC
job (2e4 galaxies x 4 views = 8e4 mock stamps, 1e5 HSC cutouts, both 5 x 64 x 64) on one
16-core node and on 4 such nodes: hours = items / (rate per core x cores x efficiency),
taking the measured 1 -> 2 worker efficiency as the efficiency at every size (batches are
independent; the client, which writes the results, is the shared part). Training is not
distributed and stays the same on every node count (GPU figures: benchmarks/score.py).

Run: ``OMP_NUM_THREADS=1 python benchmarks/chain.py [--n 128] [--stamp 64] [--quick]``.
Figures measured on a machine whose cores other work shares are not scaling figures:
run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

DEMO_TOML = """
name = "chaindemo"
title = "chain benchmark workload"
reader = "demo"
snapshots = [78]
default_snapshot = 78
box_size_ckpc_h = 75000.0
softening_kpc = 0.5
observation_redshift = 0.1
[cosmology]
H0 = 67.74
Om0 = 0.3089
Ob0 = 0.0486
[selection]
min_stellar_mass_msun = 3.0e9
mass_definition = "total"
min_star_particles = 100
[demo]
n_galaxies = {n}
seed = 11
min_log_mass = 9.5
max_log_mass = 10.5
snapshot = 78
redshift = 0.1
"""

JOB = {"mock_stamps": 2e4 * 4, "observed_cutouts": 1e5}
NODES = {"one 16-core node": 16, "4 x 16-core nodes": 64}


def _warm() -> None:
    """Import what the stages' tasks need (a real run pays this once per worker)."""
    import importlib

    for name in ("simcompare.mock.render", "simcompare.observed.cutouts", "simcompare.morphology",
                 "simcompare.morphometry", "simcompare.density.evaluate", "torch", "statmorph"):
        importlib.import_module(name)


def _run_stages(workers: int, *, root: Path, ws: Path, hsc, cutouts: Path, catalog: Path,
                stamp: int, epochs: int, stages: dict, startup: dict) -> dict[str, Path]:
    """Every stage once on ``workers`` workers; times go into ``stages[stage][workers]``."""
    from simcompare.cluster import Cluster
    from simcompare.density import evaluate, train
    from simcompare.mock import render
    from simcompare.morphology import measure
    from simcompare.observed import ingest

    d = root / f"w{workers}"
    d.mkdir(exist_ok=True)
    key = str(workers)
    with Cluster(workers=workers) as cluster:
        t0 = time.perf_counter()
        cluster.n_workers  # noqa: B018 - starts the local cluster before the clock runs
        if cluster.distributed:  # each worker imports the stages' modules once, as in a long run
            cluster.client.run(_warm)
        startup[key] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        mocks = render("chaindemo", "hsc", out=d / "mocks.h5", workspace=ws, stamp_size=stamp,
                       seed=1, cluster=cluster)
        stages.setdefault("render", {})[key] = time.perf_counter() - t0
        t0 = time.perf_counter()
        observed = ingest(hsc, out=d / "observed.h5", cutouts=cutouts, catalog=catalog,
                          stamp_size=stamp, cluster=cluster)
        stages.setdefault("ingest", {})[key] = time.perf_counter() - t0
        t0 = time.perf_counter()
        measure(observed, out=d / "morph.parquet", cluster=cluster)
        stages.setdefault("morphology", {})[key] = time.perf_counter() - t0
        if workers == 1:
            t0 = time.perf_counter()
            train(observed, out=d / "model", levels=2, blocks=2, hidden=16, epochs=epochs,
                  batch_size=32, seed=0, ensemble=1, device="cpu")
            stages["train"] = {"1": time.perf_counter() - t0}
        t0 = time.perf_counter()
        evaluate(root / "w1" / "model", mocks, out=d / "scores.parquet", device="cpu")
        stages.setdefault("evaluate", {})[key] = time.perf_counter() - t0
    return {"mocks": mocks, "observed": observed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128, help="galaxies and cutouts in the workload")
    ap.add_argument("--stamp", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n=32, stamp 32 (a smoke run)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.n, args.stamp, args.epochs = 32, 32, 1

    from simcompare.observed import make_demo_sample
    from simcompare.registry import find_survey

    root = args.workdir or Path(tempfile.mkdtemp(prefix="chain-"))
    ws = root / "ws"
    (ws / "sims").mkdir(parents=True, exist_ok=True)
    (ws / "sims" / "chaindemo.toml").write_text(DEMO_TOML.format(n=args.n))
    hsc = find_survey("hsc", workspace=ws)
    n, stamp = args.n, args.stamp
    cutouts, catalog = make_demo_sample(hsc, root=root / "sample", n_galaxies=n, seed=4,
                                        stamp_size=stamp, redshift=0.1)

    stages: dict[str, dict] = {}
    startup: dict[str, float] = {}
    outputs: dict[int, dict[str, Path]] = {}
    for workers in (1, 2):
        outputs[workers] = _run_stages(workers, root=root, ws=ws, hsc=hsc, cutouts=cutouts,
                                       catalog=catalog, stamp=stamp, epochs=args.epochs,
                                       stages=stages, startup=startup)

    import h5py

    with h5py.File(outputs[1]["mocks"]) as f:
        n_mock = int(f["images"].shape[0])
    with h5py.File(outputs[1]["observed"]) as f:
        n_obs = int(f["images"].shape[0])
    count = {"render": n_mock, "ingest": n_obs, "morphology": n_obs, "evaluate": n_mock,
             "train": n_obs * args.epochs}
    per_stage = {}
    for name, times in stages.items():
        entry = {"items": count[name], "seconds": {k: round(v, 3) for k, v in times.items()}}
        r1 = count[name] / times["1"]
        entry["per_s_per_core_1_worker"] = round(r1, 2)
        if "2" in times:
            r2 = count[name] / times["2"]
            entry["per_s_per_core_2_workers"] = round(r2 / 2, 2)
            entry["efficiency_1_to_2"] = round(r2 / (2 * r1), 3)
        per_stage[name] = entry
    end_to_end = {k: round(sum(stages[s][k] for s in stages if k in stages[s]), 2) for k in ("1", "2")}

    projection = {}
    for label, cores in NODES.items():
        rows = {}
        for name, items in (("render", JOB["mock_stamps"]), ("ingest", JOB["observed_cutouts"]),
                            ("morphology", JOB["mock_stamps"] + JOB["observed_cutouts"]),
                            ("evaluate", JOB["mock_stamps"] + JOB["observed_cutouts"] * 0.1)):
            e = per_stage[name]
            eff = min(1.0, e.get("efficiency_1_to_2", 1.0))
            rows[name] = round(items / (e["per_s_per_core_1_worker"] * cores * eff) / 3600, 3)
        tr = per_stage["train"]
        rows["train (one process, per epoch over 1e5 cutouts)"] = round(
            JOB["observed_cutouts"] / tr["per_s_per_core_1_worker"] / 3600, 3)
        projection[label] = {"hours": rows, "cores": cores}

    print(json.dumps({
        "benchmark": "chain", "workload": {"galaxies": n, "stamp": stamp, "bands": 5,
                                           "mock_stamps": n_mock, "observed": n_obs,
                                           "train_epochs": args.epochs},
        "cluster_startup_s": startup, "stages": per_stage, "end_to_end_s": end_to_end,
        "end_to_end_galaxies_per_s_per_core": {
            k: round(n_mock / v / int(k), 3) for k, v in end_to_end.items()},
        "projection_tng100_x_hsc": projection,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    }, indent=1))


if __name__ == "__main__":
    main()
