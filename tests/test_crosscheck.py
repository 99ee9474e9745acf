"""crosscheck: a particle galaxy and its idealised galsim image, side by side per band."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simcompare import imageset
from simcompare.cli import main
from simcompare.mock.project import deposit

BANDS = ("g", "r", "i")
FLUX = np.array([200.0, 400.0, 600.0])
SCALE, SIZE, HLR = 0.168, 48, 0.8


def _set(images, ids, fluxes):
    cat = {"object_id": np.asarray(ids, np.int64), "subhalo_id": np.asarray(ids, np.int64),
           "view": np.asarray(["v0"] * len(ids), dtype=object)}
    for k, b in enumerate(BANDS):
        cat[f"flux_{b}"] = np.asarray([f[k] for f in fluxes])
    return imageset.ImageSet(images=np.stack(images).astype(np.float32), catalog=cat, kind="mock",
                             survey="hsc", bands=BANDS, pixel_scale_arcsec=SCALE, zero_point=27.0)


def _particle_galaxy(rng, scale_flux=1.0):
    h = HLR / 1.678  # exponential scale length [arcsec]
    n = 20000
    r = rng.gamma(2.0, h, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    c = (SIZE - 1) / 2
    px, py = c + r * np.cos(phi) / SCALE, c + r * np.sin(phi) / SCALE
    flux = np.tile(FLUX * scale_flux / n, (n, 1))
    return deposit(px, py, flux, np.full(n, 0.3), SIZE)


def _galsim_image():
    import galsim

    prof = galsim.Exponential(half_light_radius=HLR)
    return np.stack([prof.withFlux(f).drawImage(nx=SIZE, ny=SIZE, scale=SCALE).array for f in FLUX])


def test_crosscheck_particles_vs_galsim_image(tmp_path):
    rng = np.random.default_rng(0)
    img = _galsim_image()
    part = [_particle_galaxy(rng), _particle_galaxy(rng, scale_flux=2.0)]
    imageset.write(tmp_path / "p.h5", _set(part, [11, 12], [FLUX, 2 * FLUX]))
    imageset.write(tmp_path / "i.h5", _set([img, img], [11, 12], [img.sum(axis=(1, 2))] * 2))
    out, fig = tmp_path / "cc.parquet", tmp_path / "cc.png"
    assert main(["crosscheck", "--particles", str(tmp_path / "p.h5"), "--images", str(tmp_path / "i.h5"),
                 "--out", str(out), "--figure", str(fig)]) == 0
    df = pd.read_parquet(out).set_index("subhalo_id")
    assert fig.stat().st_size > 1000
    for b in BANDS:
        assert df.loc[11, f"flux_ratio_{b}"] == pytest.approx(1.0, rel=0.01)
        assert df.loc[12, f"flux_ratio_{b}"] == pytest.approx(2.0, rel=0.01)
        # same profile: half-light radii agree to a fraction of a pixel
        assert abs(df.loc[11, f"r_half_difference_arcsec_{b}"]) < 0.5 * SCALE
        assert df.loc[11, f"r_half_images_arcsec_{b}"] == pytest.approx(HLR, rel=0.15)
    for b1, b2 in (("g", "r"), ("r", "i")):
        assert abs(df.loc[11, f"colour_difference_{b1}_{b2}"]) < 0.01
        assert df.loc[11, f"colour_images_{b1}_{b2}"] == pytest.approx(
            -2.5 * np.log10(FLUX[BANDS.index(b1)] / FLUX[BANDS.index(b2)]), abs=0.01)
    # nothing in common: one clear error
    imageset.write(tmp_path / "o.h5", _set([img], [99], [FLUX]))
    assert main(["crosscheck", "--particles", str(tmp_path / "p.h5"), "--images", str(tmp_path / "o.h5"),
                 "--out", str(tmp_path / "none.parquet")]) == 2
    assert not (tmp_path / "none.parquet").exists()
