"""Mock-rendering throughput: stamps/s/core and dask scaling from 1 to 2 workers.

Prints one JSON object. Galaxies are synthetic exponential discs + bulges generated
inside each task (no I/O), rendered into 5-band 64x64 HSC stamps at z = 0.3 with survey
noise and PSF. Run: ``OMP_NUM_THREADS=1 python benchmarks/render.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from simcompare.config import Cosmology
from simcompare.mock import PSF, Camera, NoiseModel, RenderSpec, render_galaxy
from simcompare.registry import find_survey
from simcompare.sims.base import StarParticles
from simcompare.sps import BandFluxTable


def make_spec(stamp: int = 64) -> RenderSpec:
    hsc = find_survey("hsc")
    cosmo = Cosmology()
    cam = Camera.at_redshift(stamp_size=stamp, pixel_scale_arcsec=hsc.pixel_scale_arcsec,
                             redshift=0.3, cosmology=cosmo)
    table = BandFluxTable.build(filters=hsc.filters, redshift=0.3, cosmology=cosmo,
                                zero_point=hsc.zero_point)
    return RenderSpec(bands=hsc.bands, camera=cam, table=table,
                      psf=PSF.from_survey(hsc, bands=hsc.bands).image,
                      noise=NoiseModel.from_survey(hsc, bands=hsc.bands, mode="survey"),
                      projection="random", softening_kpc=0.5)


def galaxy(n: int, seed: int, *, with_hsml: bool) -> StarParticles:
    rng = np.random.default_rng(seed)
    nb = n // 4
    r = rng.exponential(3.0, n - nb)
    phi = rng.uniform(0, 2 * np.pi, n - nb)
    disc = np.c_[r * np.cos(phi), r * np.sin(phi), rng.normal(0, 0.3, n - nb)]
    bulge = rng.normal(0, 0.8, (nb, 3))
    pos = np.vstack([disc, bulge])
    m = np.full(n, 2e10 / n)
    hsml = None
    if with_hsml:
        rr = np.sqrt((pos**2).sum(1))
        hsml = 0.3 + 0.15 * rr  # grows outwards like a k-NN length would
    return StarParticles(positions_kpc=pos, mass_msun=m, initial_mass_msun=1.6 * m,
                         age_gyr=rng.uniform(0.5, 10.0, n), metallicity=np.full(n, 0.015),
                         hsml_kpc=hsml)


def render_task(spec: RenderSpec, n: int, seeds: list[int], with_hsml: bool) -> float:
    """Render galaxies ``seeds``; returns the worker process CPU seconds spent."""
    c0 = time.process_time()
    for s in seeds:
        render_galaxy(galaxy(n, s, with_hsml=with_hsml), spec, object_id=s)
    return time.process_time() - c0


def throughput(spec: RenderSpec, n: int, *, with_hsml: bool, reps: int) -> dict:
    gals = [galaxy(n, s, with_hsml=with_hsml) for s in range(reps)]
    render_galaxy(gals[0], spec, object_id=0)  # warm-up (numba compile / cache load)
    t0, c0 = time.perf_counter(), time.process_time()
    for i, g in enumerate(gals):
        render_galaxy(g, spec, object_id=i)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    # On a shared machine wall time includes waiting for the CPU; the process CPU time
    # is the cost on one core.
    return {"particles": n, "smoothing": "simulation" if with_hsml else "knn16-thin4"
            if n > spec.knn_exact_max else "knn16",
            "stamps_per_s_per_core": reps / dc, "stamps_per_s_wall": reps / dt,
            "cpu_ms_per_stamp": 1e3 * dc / reps}


def dask_efficiency(spec: RenderSpec, *, n_particles: int, n_tasks: int, per_task: int) -> dict:
    from distributed import Client, LocalCluster

    times, cpu = {}, {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            spec_f = client.scatter(spec, broadcast=True)
            client.run(lambda: __import__("simcompare.mock"))
            warm = [client.submit(render_task, spec_f, n_particles, [10_000 + w], True, pure=False)
                    for w in range(workers)]
            client.gather(warm)
            t0 = time.perf_counter()
            futs = [client.submit(render_task, spec_f, n_particles,
                                  list(range(i * per_task, (i + 1) * per_task)), True, pure=False)
                    for i in range(n_tasks)]
            cpu[workers] = float(sum(client.gather(futs)))
            times[workers] = time.perf_counter() - t0
    # Wall-clock efficiency needs two idle cores; the CPU-time ratio (render CPU per
    # stamp with one worker over that with two) shows the per-stamp overhead of running
    # two workers side by side whatever else loads the machine.
    return {"tasks": n_tasks, "galaxies_per_task": per_task, "particles": n_particles,
            "seconds_1_worker": times[1], "seconds_2_workers": times[2],
            "efficiency_1_to_2": times[1] / (2 * times[2]),
            "task_cpu_seconds_1_worker": cpu[1], "task_cpu_seconds_2_workers": cpu[2],
            "cpu_efficiency_1_to_2": cpu[1] / cpu[2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 10 if args.quick else 40
    spec = make_spec()
    out = {
        "benchmark": "render", "stamp": "5 x 64 x 64 HSC, z=0.3, survey noise",
        "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg()[0],
        "note": "stamps_per_s_per_core uses process CPU time; wall-clock figures and the dask "
                "efficiency depend on what else runs on the machine",
        "single_core": [
            throughput(spec, 10_000, with_hsml=True, reps=reps),
            throughput(spec, 10_000, with_hsml=False, reps=max(5, reps // 4)),
            throughput(spec, 100_000, with_hsml=True, reps=max(3, reps // 8)),
            throughput(spec, 100_000, with_hsml=False, reps=3),
        ],
        "dask": dask_efficiency(spec, n_particles=10_000, n_tasks=16 if args.quick else 32,
                                per_task=8),
        "targets": {"stamps_per_s_per_core_1e4_known_hsml": 50, "dask_efficiency": 0.8},
    }
    out["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
