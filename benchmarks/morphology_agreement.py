"""Agreement of the fast morphology path with statmorph, per parameter.

Measures the same stamps with ``method="fast"`` and ``method="statmorph"`` and prints one
JSON object with, per parameter, the median and 90th percentile of the difference
(absolute, or relative for radii and the Sersic index), and for galsim Sersic profiles
the recovery of the true n and half-light radius by both. Stamps:

* ``galsim``: 5-band 64x64 PSF-convolved Sersic profiles (n 0.5-4, r_e 0.3-1.5 arcsec,
  axis ratio 0.3-1, S/N ~20-1000), HSC-like pixels and noise;
* ``hsc``: the real HSC-SSP cutouts of the test data folder (scarlet's COSMOS scenes, one
  stamp per catalogue source, and the single-galaxy cutouts).

Usage: python benchmarks/morphology_agreement.py [--n 64] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

BANDS = ("g", "r", "i", "z", "y")
SCALE = 0.168
RELATIVE = ("r_half_arcsec", "sersic_r_half_arcsec", "sersic_n")
PARAMETERS = ("r_half_arcsec", "concentration", "asymmetry", "smoothness", "gini", "m20",
              "ellipticity", "sersic_n", "sersic_r_half_arcsec")


def galsim_stamps(n: int, *, seed: int = 0, stamp: int = 64) -> tuple[list, dict]:
    """(image, variance, psf) per stamp and the true n, r_e (arcsec, geometric), q."""
    import galsim

    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.0, fwhm=0.7)
    psf_img = psf.drawImage(nx=21, ny=21, scale=SCALE).array
    psf_img = np.repeat((psf_img / psf_img.sum())[None], len(BANDS), 0).astype(np.float32)
    truth = {"n": rng.uniform(0.5, 4.0, n), "r_e": 10 ** rng.uniform(np.log10(0.3), np.log10(1.5), n),
             "q": rng.uniform(0.3, 1.0, n), "flux": 10 ** rng.uniform(3.0, 4.7, n)}
    out = []
    for k in range(n):
        gal = galsim.Sersic(n=truth["n"][k], half_light_radius=truth["r_e"][k])
        gal = gal.shear(q=truth["q"][k], beta=rng.uniform(0, np.pi) * galsim.radians)
        img = np.empty((len(BANDS), stamp, stamp), np.float32)
        for b in range(len(BANDS)):
            prof = galsim.Convolve(gal.withFlux(truth["flux"][k] * (0.6 + 0.1 * b)), psf)
            arr = prof.drawImage(nx=stamp, ny=stamp, scale=SCALE).array
            img[b] = arr + rng.normal(0, 2.0, arr.shape)
        out.append((img, np.full(img.shape, 4.0, np.float32), psf_img))
    return out, truth


def _cut(cube: np.ndarray, x: float, y: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size stamp centred on (x, y); pixels outside the cube are masked."""
    nb, ny, nx = cube.shape
    out = np.zeros((nb, size, size), np.float64)
    mask = np.ones((nb, size, size), np.uint8)
    x0, y0 = round(x) - size // 2, round(y) - size // 2
    ys, xs = slice(max(0, y0), min(ny, y0 + size)), slice(max(0, x0), min(nx, x0 + size))
    ts = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    out[:, ts[0], ts[1]] = cube[:, ys, xs]
    mask[:, ts[0], ts[1]] = 0
    return out, mask


def hsc_stamps(data: Path, size: int = 40) -> list[tuple]:
    """(image, variance or None, mask, psf, name) stamps from the real HSC cutouts."""
    from astropy.io import fits

    root = data / "scarlet-hsc"
    out = []
    d = np.load(root / "hsc_cosmos.npz")
    for k, src in enumerate(d["catalog"]):
        img, mask = _cut(d["images"].astype(np.float64), src["x"], src["y"], size)
        out.append((img, None, mask, d["psfs"], f"hsc_cosmos[{k}]"))
    d = np.load(root / "hsc_cosmos_35.npz")
    for k, (x, y) in enumerate(d["catalog"]):
        img, mask = _cut(d["images"].astype(np.float64), x, y, size)
        var, _ = _cut(d["variance"].astype(np.float64), x, y, size)
        out.append((img, np.where(mask == 0, var, 1.0), mask, d["psfs"], f"hsc_cosmos_35[{k}]"))
    for name, psf_name in (("Cut_HSC.fits", "PSF_HSC.fits"),
                           ("hsc_ra150.24071_dec2.06514.fits",
                            "psf_hsc_ra150.24071_dec2.06514.fits")):
        cube = fits.getdata(root / name).astype(np.float64)
        cube -= np.median(cube, axis=(1, 2), keepdims=True)  # rescaled / not sky-subtracted
        psf = fits.getdata(root / psf_name).astype(np.float64)
        out.append((cube, None, None, psf / psf.sum(axis=(1, 2), keepdims=True), name))
    d = np.load(root / "lsbg.npz")
    c = d["images"].shape[-1] // 2
    img, mask = _cut(d["images"].astype(np.float64), c, c, 64)
    out.append((img, None, mask, d["psfs"], "lsbg"))
    return out


def compare(rows_fast: list[dict], rows_ref: list[dict], *, min_snr: float = 0.0) -> dict:
    """Per-parameter median and 90th percentile of |fast - statmorph| on rows both measured.

    Rows with statmorph ``flag`` > 1 are left out, and so are rows below ``min_snr``; the
    Sersic parameters are compared only where statmorph's fit is good (``flag_sersic`` 0)
    and the fast fit is not at a bound of n.
    """
    both = [(f, r) for f, r in zip(rows_fast, rows_ref, strict=True)
            if f["failure_reason"] == "" and r["failure_reason"] == "" and r["flag"] <= 1
            and r["snr"] >= min_snr]
    out: dict = {"n_compared": len(both),
                 "flag_agreement": float(np.mean([(f["flag"] <= 1) == (r["flag"] <= 1)
                                                  for f, r in zip(rows_fast, rows_ref,
                                                                  strict=True)]))}
    for p in PARAMETERS:
        a = np.array([f[p] for f, _ in both], float)
        b = np.array([r[p] for _, r in both], float)
        ok = np.isfinite(a) & np.isfinite(b)
        if p.startswith("sersic"):
            ok &= np.array([f["flag_sersic"] == 0 and r["flag_sersic"] == 0 for f, r in both],
                           bool)
        d = np.abs(a[ok] - b[ok]) / (np.abs(b[ok]) if p in RELATIVE else 1.0)
        out[p] = {"kind": "relative" if p in RELATIVE else "absolute", "n": int(ok.sum()),
                  "median": float(np.median(d)) if d.size else None,
                  "p90": float(np.percentile(d, 90)) if d.size else None,
                  "max": float(d.max()) if d.size else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("SIMCOMPARE_TEST_DATA", "../shared/data")))
    args = parser.parse_args()

    from simcompare.morphology import measure_stamp

    kw = {"bands": BANDS, "band": "i", "pixel_scale_arcsec": SCALE}
    stamps, truth = galsim_stamps(args.n)
    res = {}
    fast = [measure_stamp(i, variance=v, psf=p, method="fast", **kw) for i, v, p in stamps]
    ref = [measure_stamp(i, variance=v, psf=p, method="statmorph", **kw) for i, v, p in stamps]
    res["galsim"] = compare(fast, ref)
    res["galsim_snr100"] = compare(fast, ref, min_snr=100.0)
    rec = {}
    for name, rows in (("fast", fast), ("statmorph", ref)):
        ok = np.array([r["failure_reason"] == "" and r["flag"] <= 1 for r in rows])
        n_fit = np.array([r["sersic_n"] for r in rows])
        # statmorph's r_eff is the semi-major axis; the truth is geometric-mean
        re_fit = np.array([r["sersic_r_half_arcsec"] for r in rows]) * np.sqrt(truth["q"])
        rec[name] = {
            "sersic_n_rel_err_median": float(np.nanmedian(np.abs(n_fit[ok] / truth["n"][ok] - 1))),
            "sersic_n_rel_err_p90": float(np.nanpercentile(np.abs(n_fit[ok] / truth["n"][ok] - 1),
                                                           90)),
            "r_e_rel_err_median": float(np.nanmedian(np.abs(re_fit[ok] / truth["r_e"][ok] - 1))),
            "r_e_rel_err_p90": float(np.nanpercentile(np.abs(re_fit[ok] / truth["r_e"][ok] - 1),
                                                      90)),
        }
    res["galsim_truth"] = rec
    if args.data.is_dir():
        real = hsc_stamps(args.data)
        f = [measure_stamp(i, variance=v, mask=m, psf=p, method="fast", **kw)
             for i, v, m, p, _ in real]
        r = [measure_stamp(i, variance=v, mask=m, psf=p, method="statmorph", **kw)
             for i, v, m, p, _ in real]
        res["hsc"] = compare(f, r)
        res["hsc"]["stamps"] = {nm: {"fast_flag": a["flag"], "statmorph_flag": b["flag"],
                                     "failure": b["failure_reason"]}
                                for (_, _, _, _, nm), a, b in zip(real, f, r, strict=True)}
    print(json.dumps({"benchmark": "morphology.agreement", "n_galsim": args.n, **res}))


if __name__ == "__main__":
    main()
