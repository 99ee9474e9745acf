"""Ingestion throughput: cutouts/s (5 bands, 64x64) with and without neighbour masking.

Writes a synthetic HSC-layout sample with :func:`simcompare.observed.make_demo_sample`
into a temporary folder, then times :func:`simcompare.observed.ingest` on it. Prints one
JSON object. Run on an idle core for meaningful numbers::

    OMP_NUM_THREADS=1 python benchmarks/ingest.py [--n 300] [--stamp 64] [--demo]

``--demo`` also times the generation of the full demo sample (1500 galaxies, 5 bands,
32x32), the part of ``simcompare score --sim demo`` this module owns.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="cutouts to ingest (default 300)")
    parser.add_argument("--stamp", type=int, default=64, help="stamp side in pixels (default 64)")
    parser.add_argument("--demo", action="store_true", help="also time the 1500 x 32x32 demo sample")
    args = parser.parse_args()

    # imports first, so that their one-off cost is not timed
    import galsim  # noqa: F401
    import photutils.segmentation  # noqa: F401
    import scipy.signal  # noqa: F401

    from simcompare.observed import ingest, make_demo_sample
    from simcompare.registry import find_survey

    survey = find_survey("hsc", workspace=None)
    result: dict[str, object] = {"benchmark": "ingest", "survey": "hsc", "bands": len(survey.bands),
                                 "stamp_size": args.stamp, "n_cutouts": args.n,
                                 "python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_demo_sample(survey, root=tmp / "warm", n_galaxies=2, seed=0, stamp_size=16,
                         redshift=0.3)  # SPS table and galsim caches
        t0 = time.perf_counter()
        cutouts, catalog = make_demo_sample(survey, root=tmp / "s", n_galaxies=args.n, seed=1,
                                            stamp_size=args.stamp, redshift=0.3)
        gen = time.perf_counter() - t0
        result["generate_s"] = round(gen, 3)
        result["generate_cutouts_per_s"] = round(args.n / gen, 2)
        for label, masking in (("with_neighbour_masking", True), ("without_neighbour_masking", False)):
            t0 = time.perf_counter()
            ingest(survey, out=tmp / f"{label}.h5", cutouts=cutouts, catalog=catalog,
                   stamp_size=args.stamp, mask_neighbours=masking)
            dt = time.perf_counter() - t0
            result[f"{label}_s"] = round(dt, 3)
            result[f"{label}_cutouts_per_s"] = round(args.n / dt, 2)
        if args.demo:
            t0 = time.perf_counter()
            make_demo_sample(survey, root=tmp / "demo", n_galaxies=1500, seed=7, stamp_size=32,
                             redshift=0.3)
            result["demo_1500x32_generate_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            ingest(survey, out=tmp / "demo.h5", cutouts=tmp / "demo" / "cutouts",
                   catalog=tmp / "demo" / "catalog.parquet", stamp_size=32)
            result["demo_1500x32_ingest_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
