"""Ingest memory: peak RSS of ``ingest`` against the sample size (1e3 and 1e4 cutouts).

Writes N synthetic cutouts in the HSC layout (``<object_id>/<band>.fits`` and
``psf_<band>.fits``, 5 bands; numpy noise plus a Gaussian blob, no galsim) and a Parquet
catalogue (object_id, ra, dec, redshift) into a temporary folder, then runs
:func:`simcompare.observed.ingest` in a fresh Python process per sample size and
reports that process's peak resident set size (``VmHWM`` of ``/proc/self/status``, read
by the process itself at its end; ``ru_maxrss`` where there is no ``/proc``: on Linux that
one starts from the parent's RSS at the fork), its peak RSS after the imports and
a warm-up ingest of 16 objects (so the difference is what grows with N), the
wall time of ``ingest`` and cutouts/s. The samples of every size share one cutout folder
(the smaller catalogues are the first rows of the largest), so only the largest is
written. ``ratio`` is peak_rss(largest) / peak_rss(smallest): 1.0 is flat.

Run: ``OMP_NUM_THREADS=1 python benchmarks/ingest_memory.py [--sizes 1000 10000]
[--stamp 64] [--cutout 64] [--no-masking]``. Prints one JSON object. Disk: about
0.35 MB per object for the cutouts and 0.18 MB for the ImageSet at 64 x 64 (1e4: about
3.5 GB and 1.8 GB); the folder is deleted at the end (deleting 3e5 small files can take
minutes on a busy disk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BANDS = ("g", "r", "i", "z", "y")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

def peak_kb():
    # VmHWM: the high-water mark of this process's own memory map. ru_maxrss is not used
    # where VmHWM exists: on Linux it starts from the parent's RSS at the fork.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

from simcompare.observed import ingest
from simcompare.registry import find_survey
a = json.loads(sys.argv[1])
hsc = find_survey("hsc", workspace=None)
ingest(hsc, out=Path(a["out"] + ".warm.h5"), cutouts=Path(a["cutouts"]),
       catalog=Path(a["warm_catalog"]), stamp_size=a["stamp"], mask_neighbours=a["mask"])
Path(a["out"] + ".warm.h5").unlink()
base = peak_kb()  # every import and one 16-object ingest
t0 = time.perf_counter()
ingest(hsc, out=Path(a["out"]), cutouts=Path(a["cutouts"]), catalog=Path(a["catalog"]),
       stamp_size=a["stamp"], mask_neighbours=a["mask"])
dt = time.perf_counter() - t0
peak = peak_kb()
print(json.dumps({"seconds": dt, "maxrss_before_kb": base, "maxrss_kb": peak}))
"""


def write_sample(root: Path, n: int, cutout: int, seed: int = 0) -> Path:
    """``n`` objects of 5 bands, ``cutout`` x ``cutout``: noise + a Gaussian blob + a neighbour."""
    import numpy as np

    from simcompare.observed import write_hsc_band, write_psf

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:cutout, :cutout].astype(np.float32)
    c = (cutout - 1) / 2
    blob = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (cutout / 16) ** 2)).astype(np.float32)
    nb = np.exp(-((xx - c - cutout / 4) ** 2 + (yy - c + cutout / 5) ** 2)
                / (2 * (cutout / 32) ** 2)).astype(np.float32)
    ps = np.mgrid[:25, :25] - 12.0
    psf = np.exp(-(ps[0] ** 2 + ps[1] ** 2) / (2 * 1.5 ** 2)).astype(np.float32)
    psf /= psf.sum()
    var = np.full((cutout, cutout), 0.01, np.float32)
    mask = np.zeros((cutout, cutout), np.int32)
    ids = np.arange(1, n + 1, dtype=np.int64) + 10**12
    ra = 150.0 + rng.uniform(-1, 1, n)
    dec = 2.0 + rng.uniform(-1, 1, n)
    for k, oid in enumerate(ids):
        amp = rng.uniform(0.5, 5.0)
        for b in BANDS:
            img = (amp * blob + 0.5 * amp * nb
                   + rng.normal(0, 0.1, (cutout, cutout)).astype(np.float32))
            write_hsc_band(root / str(oid) / f"{b}.fits", image=img, variance=var, mask=mask,
                           band=b, ra=float(ra[k]), dec=float(dec[k]))
            write_psf(root / str(oid) / f"psf_{b}.fits", psf)
    import pandas as pd

    cat = pd.DataFrame({"object_id": ids, "ra": ra, "dec": dec,
                        "redshift": rng.uniform(0.05, 0.5, n)})
    path = root.parent / "catalog_all.parquet"
    cat.to_parquet(path, index=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--stamp", type=int, default=64, help="output stamp side (pixels)")
    ap.add_argument("--cutout", type=int, default=64, help="input cutout side (pixels)")
    ap.add_argument("--no-masking", action="store_true",
                    help="only mask_neighbours=False (default: both settings)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes))
    import pandas as pd

    root = args.workdir or Path(tempfile.mkdtemp(prefix="ingest-mem-"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result: dict = {"benchmark": "ingest_memory", "bands": len(BANDS), "cutout": args.cutout,
                    "stamp": args.stamp, "sizes": sizes}
    try:
        t0 = time.perf_counter()
        full = write_sample(root / "cutouts", sizes[-1], args.cutout)
        result["generate_s"] = round(time.perf_counter() - t0, 1)
        cat = pd.read_parquet(full)
        cats = {}
        warm = root / "catalog_warm.parquet"
        cat.iloc[:16].to_parquet(warm, index=False)
        for n in sizes:
            cats[n] = root / f"catalog_{n}.parquet"
            cat.iloc[:n].to_parquet(cats[n], index=False)
        settings = [False] if args.no_masking else [True, False]
        for mask in settings:
            key = "mask_neighbours" if mask else "no_mask_neighbours"
            runs = {}
            for n in sizes:
                out = root / f"observed_{n}_{int(mask)}.h5"
                a = {"out": str(out), "cutouts": str(root / "cutouts"), "catalog": str(cats[n]),
                     "warm_catalog": str(warm),
                     "stamp": args.stamp, "mask": mask}
                p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(a)], env=env,
                                   capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    raise SystemExit(f"ingest of {n} cutouts failed:\n{p.stderr[-3000:]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                import h5py

                with h5py.File(out) as f:
                    written = int(f["images"].shape[0])
                runs[str(n)] = {
                    "written": written, "seconds": round(r["seconds"], 1),
                    "cutouts_per_s": round(n / r["seconds"], 1),
                    "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1),
                    "peak_rss_after_16_objects_mb": round(r["maxrss_before_kb"] / 1024, 1),
                    "imageset_mb": round(out.stat().st_size / 2**20, 1)}
                out.unlink()
            lo, hi = runs[str(sizes[0])], runs[str(sizes[-1])]
            runs["ratio_peak_rss"] = round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3)
            runs["ingest_increment_mb"] = {
                k: round(v["peak_rss_mb"] - v["peak_rss_after_16_objects_mb"], 1) for k, v in runs.items()
                if isinstance(v, dict)}
            result[key] = runs
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    result["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                         "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                         "note": "cores shared with other work: times are noisy"}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
