"""The whole chain, stage by stage: galaxies/s/core on 1 and 2 workers, and a projection.

Prints one JSON object. The workload is fixed and synthetic: the built-in demo
simulation (``reader = "demo"``, N galaxies) and the demo HSC sample (N cutouts, 5 bands),
both at the benchmark's stamp size. Each distributed stage (render, ingest, morphology,
evaluate) runs through :class:`simcompare.cluster.Cluster` three ways on the same inputs:

* ``in_process``: ``Cluster()``, every batch in this process (no dask);
* ``1``: ``Cluster(workers=1, in_process=False)``, a local dask cluster of one
  single-threaded worker process;
* ``2``: ``Cluster(workers=2)``, the same with two worker processes.

The three clusters are started, and each worker imports the stages' modules, before the
clock starts (``cluster_startup_s``), and stay up together. Each stage is then called on
the three ways one after the other (forwards, then backwards, and so on), so that the
ways of a stage are measured within a minute of each other on a machine whose load
drifts. The first call also pays each worker's one-time costs (its reader, numba
kernels, Sersic tables, the loaded model: ``first_call_s``); the rates and efficiencies
are of the fastest of the ``--repeat`` calls after it (the steady state of a long run,
where these costs are paid once per worker).

    efficiency_1_to_2 = rate(2 workers) / (2 x rate(1 worker))      same machinery
    in_process_over_1_worker = rate(1 worker) / rate(in process)    the cost of dask

Per stage and way the JSON also has the CPU seconds of this process (the client: it
collects and writes the results, and runs the local scheduler) and of the workers, and
``waited_for_a_core_s``: how long their threads were ready to run but had no core (Linux
schedstat), and ``other_cores``: the CPU that other processes of the machine used
meanwhile, in cores (from /proc/stat). Figures measured while other processes use the
cores are not scaling figures: two workers then share the cores with them.
``workers_idle_s`` is the workers' wall time (workers x seconds) neither on a core nor
waiting for one: waiting for a task (the client, the last tasks) or for the disk.
``identical`` says whether the outputs of the three ways are the same.

The projection (``projection``) scales the measured per-core rate of one worker process
to the TNG100 x HSC job (2e4 galaxies x 4 views = 8e4 mock stamps, 1e5 HSC cutouts, both
5 x 64 x 64) on one 16-core node and on 4 such nodes: hours = items / (rate per core x
cores x efficiency), taking the measured 1 -> 2 worker efficiency as the efficiency at
every size (batches are independent), but never less than items x the client's CPU
seconds per item measured with 2 workers (the client collects and writes every result;
where that bound is the larger, the workers-alone figure is given too).
Training is not distributed and stays the same on every node count (GPU figures:
benchmarks/score.py).

Run: ``OMP_NUM_THREADS=1 python benchmarks/chain.py [--n 128] [--stamp 64] [--repeat 1]
[--quick]``.
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
WAYS = ("in_process", "1", "2")
STAGES = ("render", "ingest", "morphology", "evaluate")


def _warm() -> None:
    """Import what the stages' tasks need (a real run pays this once per worker)."""
    import importlib

    for name in ("simcompare.mock.render", "simcompare.observed.cutouts", "simcompare.morphology",
                 "simcompare.morphometry", "simcompare.density.evaluate", "torch", "statmorph"):
        importlib.import_module(name)


def _cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _workers_cpu(cluster) -> float:
    if not cluster.distributed:
        return 0.0
    return float(sum(cluster.client.run(time.process_time).values()))


def _waited(pids: list[int]) -> float:
    """Seconds the threads of ``pids`` have spent runnable but waiting for a core.

    Linux's /proc/<pid>/task/<tid>/schedstat (0 elsewhere): time on the run queue, which
    is what a process loses to the others that share its cores.
    """
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def _timed(cluster, fn) -> dict:
    """Run ``fn()``: wall time; CPU and run-queue waits of this process and of the workers;
    the cores that other processes used meanwhile."""
    pids = cluster.worker_pids()
    b0, c0, w0 = _cpu_busy(), time.process_time(), _workers_cpu(cluster)
    q0, qw0 = _waited([os.getpid()]), _waited(pids)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    q1, qw1 = _waited([os.getpid()]), _waited(pids)
    client, workers = time.process_time() - c0, _workers_cpu(cluster) - w0
    other = max(0.0, _cpu_busy() - b0 - client - workers)
    return {"wall": wall, "client_cpu": client, "workers_cpu": workers,
            "client_waited": q1 - q0, "workers_waited": qw1 - qw0,
            "workers_idle": max(0.0, len(pids) * wall - workers - (qw1 - qw0)),
            "other_cores": other / wall, "load_1min": os.getloadavg()[0]}


def _stage(name: str, way: str, cluster, out: dict[str, Path], *, d: Path, call: str,
           model: Path, ws: Path, hsc, cutouts: Path, catalog: Path, stamp: int):
    """The call ``fn()`` of stage ``name`` on ``cluster``; its output goes into ``out``."""
    from simcompare.density import evaluate
    from simcompare.mock import render
    from simcompare.morphology import measure
    from simcompare.observed import ingest

    def path(file: str) -> Path:
        out[file] = d / f"{call}-{file}"
        return out[file]

    if name == "render":
        return lambda: render("chaindemo", "hsc", out=path("mocks.h5"), workspace=ws,
                              stamp_size=stamp, seed=1, cluster=cluster)
    if name == "ingest":
        return lambda: ingest(hsc, out=path("observed.h5"), cutouts=cutouts, catalog=catalog,
                              stamp_size=stamp, cluster=cluster)
    if name == "morphology":
        return lambda: measure(out["observed.h5"], out=path("morph.parquet"), cluster=cluster)
    return lambda: evaluate(model, out["mocks.h5"], out=path("scores.parquet"), device="cpu",
                            cluster=cluster)


def _run(*, root: Path, ws: Path, hsc, cutouts: Path, catalog: Path, stamp: int, epochs: int,
         repeat: int, runs: dict, startup: dict) -> dict[str, dict[str, Path]]:
    """Every stage on every way, ways side by side; figures go into ``runs[stage][way]``.

    The three clusters stay up together, and each stage runs on the three ways one after
    the other (in turn forwards and backwards), so that the ways of a stage are measured
    within a minute of each other on a machine whose load drifts.
    """
    from simcompare.cluster import Cluster
    from simcompare.density import train

    _warm()
    clusters = {}
    outs: dict[str, dict[str, Path]] = {w: {} for w in WAYS}
    try:
        for way in WAYS:
            t0 = time.perf_counter()
            clusters[way] = (Cluster() if way == "in_process" else
                             Cluster(workers=int(way), in_process=False))
            if clusters[way].distributed:  # start it; each worker imports the stages once
                clusters[way].client.run(_warm)
            startup[way] = round(time.perf_counter() - t0, 2)
            (root / way).mkdir(exist_ok=True)
        model = root / "model"
        calls = ["first"] + [f"again{i}" for i in range(1, repeat + 1)]
        for k, call in enumerate(calls):
            for name in STAGES:
                if name == "evaluate" and call == "first":
                    t0 = time.perf_counter()
                    train(outs["in_process"]["observed.h5"], out=model, levels=2, blocks=2,
                          hidden=16, epochs=epochs, batch_size=32, seed=0, ensemble=1,
                          device="cpu")
                    runs["train"] = time.perf_counter() - t0
                for way in (WAYS if k % 2 == 0 else WAYS[::-1]):
                    fn = _stage(name, way, clusters[way], outs[way], d=root / way, call=call,
                                model=model, ws=ws, hsc=hsc, cutouts=cutouts, catalog=catalog,
                                stamp=stamp)
                    runs.setdefault(name, {}).setdefault(way, {})[call] = _timed(
                        clusters[way], fn)
    finally:
        for cluster in clusters.values():
            cluster.close()
    return outs


def _same(a: Path, b: Path) -> bool:
    """Whether two outputs hold the same data (ImageSets: every dataset; tables: every cell)."""
    import numpy as np

    if a.suffix == ".parquet":
        import pandas as pd

        x, y = pd.read_parquet(a), pd.read_parquet(b)
        return list(x.columns) == list(y.columns) and all(
            np.array_equal(x[k].to_numpy(), y[k].to_numpy(),
                           equal_nan=x[k].dtype.kind == "f") for k in x.columns)
    import h5py

    names: list[str] = []
    with h5py.File(a) as f, h5py.File(b) as g:
        f.visit(names.append)
        return all(isinstance(f[k], h5py.Group) or np.array_equal(f[k][()], g[k][()])
                   for k in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=128, help="galaxies and cutouts in the workload")
    ap.add_argument("--stamp", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n=32, stamp 32 (a smoke run)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="calls of each stage after the first; the fastest is kept")
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

    runs: dict[str, dict] = {}
    startup: dict[str, float] = {}
    outputs = _run(root=root, ws=ws, hsc=hsc, cutouts=cutouts, catalog=catalog, stamp=stamp,
                   epochs=args.epochs, repeat=args.repeat, runs=runs, startup=startup)

    import h5py

    with h5py.File(outputs["in_process"]["mocks.h5"]) as f:
        n_mock = int(f["images"].shape[0])
    with h5py.File(outputs["in_process"]["observed.h5"]) as f:
        n_obs = int(f["images"].shape[0])
    count = {"render": n_mock, "ingest": n_obs, "morphology": n_obs, "evaluate": n_mock}
    files = {"render": "mocks.h5", "ingest": "observed.h5", "morphology": "morph.parquet",
             "evaluate": "scores.parquet"}
    per_stage = {}
    for name in STAGES:
        items, ways = count[name], runs[name]
        steady = {w: min((v for c, v in ways[w].items() if c != "first"),
                         key=lambda v: v["wall"]) for w in WAYS}
        sec = {w: steady[w]["wall"] for w in WAYS}
        rate = {w: items / sec[w] for w in WAYS}
        ref = outputs["in_process"][files[name]]
        per_stage[name] = {
            "items": items,
            "seconds": {w: round(v, 3) for w, v in sec.items()},
            "seconds_every_call": {w: [round(v["wall"], 3) for c, v in ways[w].items()
                                       if c != "first"] for w in WAYS},
            "first_call_s": {w: round(ways[w]["first"]["wall"], 3) for w in WAYS},
            "per_s_per_core": {"in_process": round(rate["in_process"], 2),
                               "1": round(rate["1"], 2), "2": round(rate["2"] / 2, 2)},
            "efficiency_1_to_2": round(rate["2"] / (2 * rate["1"]), 3),
            "in_process_over_1_worker": round(rate["1"] / rate["in_process"], 3),
            "efficiency_in_process_to_2": round(rate["2"] / (2 * rate["in_process"]), 3),
            "first_call_efficiency_1_to_2": round(
                ways["1"]["first"]["wall"] / (2 * ways["2"]["first"]["wall"]), 3),
            "cpu_s": {w: {"client": round(steady[w]["client_cpu"], 2),
                          "workers": round(steady[w]["workers_cpu"], 2)} for w in WAYS},
            "waited_for_a_core_s": {w: {"client": round(steady[w]["client_waited"], 2),
                                        "workers": round(steady[w]["workers_waited"], 2)}
                                    for w in WAYS},
            "workers_idle_s": {w: round(steady[w]["workers_idle"], 2) for w in WAYS[1:]},
            "client_cpu_ms_per_item": round(1e3 * steady["2"]["client_cpu"] / items, 2),
            "other_cores": {w: round(steady[w]["other_cores"], 2) for w in WAYS},
            "identical": all(_same(ref, outputs[w][files[name]]) for w in WAYS[1:]),
        }
    train_items = n_obs * args.epochs
    per_stage["train"] = {"items": train_items, "seconds": round(runs["train"], 3),
                          "per_s_per_core": round(train_items / runs["train"], 2)}
    end_to_end = {w: round(sum(per_stage[s]["seconds"][w] for s in STAGES), 2) for w in WAYS}

    projection = {}
    for label, cores in NODES.items():
        rows = {}
        for name, items in (("render", JOB["mock_stamps"]), ("ingest", JOB["observed_cutouts"]),
                            ("morphology", JOB["mock_stamps"] + JOB["observed_cutouts"]),
                            ("evaluate", JOB["mock_stamps"] + JOB["observed_cutouts"] * 0.1)):
            e = per_stage[name]
            eff = min(1.0, e["efficiency_1_to_2"])
            workers_h = items / (e["per_s_per_core"]["1"] * cores * eff) / 3600
            client_h = items * e["client_cpu_ms_per_item"] / 1e3 / 3600
            rows[name] = round(max(workers_h, client_h), 3)
            if client_h > workers_h:
                rows[f"{name} (client-bound; workers alone)"] = round(workers_h, 3)
        rows["train (one process, per epoch over 1e5 cutouts)"] = round(
            JOB["observed_cutouts"] / per_stage["train"]["per_s_per_core"] / 3600, 3)
        projection[label] = {"hours": rows, "cores": cores}

    print(json.dumps({
        "benchmark": "chain", "workload": {"galaxies": n, "stamp": stamp, "bands": 5,
                                           "mock_stamps": n_mock, "observed": n_obs,
                                           "train_epochs": args.epochs},
        "cluster_startup_s": startup, "stages": per_stage,
        "end_to_end_s": end_to_end,  # the four distributed stages, steady state
        "projection_tng100_x_hsc": projection,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
    }, indent=1))


if __name__ == "__main__":
    main()
