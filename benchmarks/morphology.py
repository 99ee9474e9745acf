"""Throughput of the morphology stage: images per second on 5-band 64x64 stamps.

Usage: python benchmarks/morphology.py [--n 24] [--workers 1]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from simcompare.morphology import failure_counts, measure, measure_stamp

    iset = make_imageset(args.n)
    # warm up (imports of statmorph / photutils) outside the timing
    measure_stamp(iset.images[0], variance=iset.variance[0], psf=iset.psf,
                  bands=iset.bands, band="i", pixel_scale_arcsec=iset.pixel_scale_arcsec)
    t0 = time.perf_counter()
    df = measure(iset, out=None, workers=args.workers)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "morphology.measure", "n_images": args.n, "bands": len(iset.bands),
        "stamp": int(iset.images.shape[-1]), "workers": args.workers,
        "seconds": round(dt, 3), "images_per_s": round(args.n / dt, 3),
        "s_per_image": round(dt / args.n, 3), "failures": failure_counts(df),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
