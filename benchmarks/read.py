"""Reader throughput: galaxies/s and peak memory on a synthetic TNG basePath.

Writes a 1,000-galaxy demo population (log M* in 9.0-9.5, i.e. 500-1,600 star particles
per galaxy) in the TNG on-disk layout, then selects and streams every galaxy through the
TNG reader (illustris_python underneath). Prints one JSON object.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/read.py [--n-galaxies 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from simcompare.config import Cosmology, DemoSimConfig, SelectionConfig
from simcompare.sims.demo import write_demo_sim
from simcompare.sims.tng import TNGReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-galaxies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DemoSimConfig(n_galaxies=args.n_galaxies, seed=args.seed, min_log_mass=9.0,
                            max_log_mass=9.5)
        t0 = time.perf_counter()
        bp = write_demo_sim(Path(tmp), cfg, cosmology=Cosmology(), box_size_ckpc_h=75000.0,
                            softening_kpc=0.5)
        t_write = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*.hdf5"))

        sel = SelectionConfig(min_stellar_mass_msun=1e9, mass_definition="total",
                              min_star_particles=100)
        t0 = time.perf_counter()
        reader = TNGReader(bp, snapshot=cfg.snapshot, selection=sel, name="bench")
        table = reader.select()
        t_select = time.perf_counter() - t0

        tracemalloc.start()
        t0 = time.perf_counter()
        n_gal = n_part = 0
        for g in reader.galaxies(table["object_id"]):
            n_gal += 1
            n_part += len(g.particles)
        t_read = time.perf_counter() - t0
        _, peak_traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # the same loop without tracemalloc, for the throughput figure
        t0 = time.perf_counter()
        for _ in reader.galaxies(table["object_id"]):
            pass
        t_read_plain = time.perf_counter() - t0

    result = {
        "benchmark": "read_tng_basepath",
        "n_galaxies_written": args.n_galaxies,
        "n_galaxies_read": n_gal,
        "n_star_particles_read": n_part,
        "basepath_mb": round(disk / 1e6, 1),
        "write_s": round(t_write, 2),
        "select_s": round(t_select, 3),
        "read_s": round(t_read_plain, 2),
        "galaxies_per_s": round(n_gal / t_read_plain, 1),
        "particles_per_s": round(n_part / t_read_plain),
        "read_s_under_tracemalloc": round(t_read, 2),
        "peak_traced_mb_while_streaming": round(peak_traced / 1e6, 2),
        "all_particles_mb": round(n_part * 56 / 1e6, 1),  # 3 f8 positions + 4 f8 per star
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
        "exclusions": reader.exclusions,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
