"""Throughput of the morphology stage: images per second per core, 5-band 64x64 stamps.

Before (``--method statmorph``, statmorph itself) and after (``--method fast``, the
vectorised statistics with one batched Sersic fit), i-band measurement, one worker,
one thread (a per-core figure). Each method is timed ``--repeats`` times; the median of
the wall-clock and of the process CPU time are reported (the CPU time is the steadier
figure on a shared machine).

Usage: python benchmarks/morphology.py [--n 48] [--repeats 3] [--method both]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def make_imageset(n: int, *, seed: int = 0, stamp: int = 64):
    import galsim

    from simcompare.imageset import ImageSet

    bands = ("g", "r", "i", "z", "y")
    scale = 0.168
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.0, fwhm=0.7)
    psf_img = psf.drawImage(nx=21, ny=21, scale=scale).array
    psf_img = np.repeat((psf_img / psf_img.sum())[None], len(bands), 0).astype(np.float32)
    images = np.empty((n, len(bands), stamp, stamp), np.float32)
    for k in range(n):
        gal = galsim.Sersic(n=rng.uniform(0.8, 3.0), half_light_radius=rng.uniform(0.4, 1.5))
        gal = gal.shear(q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, np.pi) * galsim.radians)
        for b in range(len(bands)):
            prof = galsim.Convolve(gal.withFlux(rng.uniform(2e3, 2e4) * (0.6 + 0.1 * b)), psf)
            arr = prof.drawImage(nx=stamp, ny=stamp, scale=scale).array
            images[k, b] = arr + rng.normal(0, 2.0, arr.shape)
    return ImageSet(images=images, catalog={"object_id": np.arange(n, dtype=np.int64)},
                    kind="mock", survey="bench", bands=bands, pixel_scale_arcsec=scale,
                    zero_point=27.0, variance=np.full(images.shape, 4.0, np.float32), psf=psf_img)


def _time(iset, method: str, repeats: int) -> dict:
    from simcompare.morphology import failure_counts, measure

    walls, cpus, df = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        df = measure(iset, out=None, workers=1, method=method)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    n = len(iset)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    return {"seconds_wall": round(wall, 3), "seconds_cpu": round(cpu, 3),
            "images_per_s_wall": round(n / wall, 2), "images_per_cpu_s": round(n / cpu, 2),
            "repeats_wall": [round(w, 3) for w in walls], "failures": failure_counts(df)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", choices=("both", "fast", "statmorph"), default="both")
    args = parser.parse_args()

    import torch

    from simcompare.morphology import measure

    torch.set_num_threads(1)
    iset = make_imageset(args.n)
    methods = ("statmorph", "fast") if args.method == "both" else (args.method,)
    for m in methods:  # warm up (imports, torch kernels) outside the timing
        measure(iset.subset(np.arange(2)), out=None, method=m)
    results = {m: _time(iset, m, args.repeats) for m in methods}
    out = {"benchmark": "morphology.measure", "n_images": args.n, "bands": len(iset.bands),
           "stamp": int(iset.images.shape[-1]), "band": "i", "workers": 1, "threads": 1,
           "repeats": args.repeats, **results, "python": platform.python_version()}
    if len(methods) == 2:
        out["speedup_cpu"] = round(results["statmorph"]["seconds_cpu"]
                                   / results["fast"]["seconds_cpu"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
