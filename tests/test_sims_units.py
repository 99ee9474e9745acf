"""The one TNG unit-conversion point: lengths, masses, ages, periodic unwrapping."""

from __future__ import annotations

import numpy as np
import pytest

from simcompare.config import Cosmology
from simcompare.errors import DataFormatError
from simcompare.sims.units import (
    conversion_table,
    cosmic_time_gyr,
    scale_factor_at_time,
    tng_star_particles,
    tng_to_physical,
    unwrap_periodic,
)

PLANCK15 = Cosmology(H0=67.74, Om0=0.3089, Ob0=0.0486)


@pytest.mark.parametrize("cosmo", [PLANCK15, Cosmology(H0=70.4, Om0=0.2726, Ob0=0.0456)])
def test_cosmic_time_matches_astropy(cosmo):
    a = np.array([0.05, 0.1, 0.25, 0.5, 0.769, 0.909047, 1.0])
    ref = cosmo.astropy().age(1.0 / a - 1.0).to_value("Gyr")
    np.testing.assert_allclose(cosmic_time_gyr(a, cosmology=cosmo), ref, rtol=1e-6)
    # z = 0 age of the universe in Planck 2015 ~ 13.8 Gyr
    assert 13.0 < float(cosmic_time_gyr(1.0, cosmology=cosmo)) < 14.5


def test_scale_factor_at_time_inverts():
    a = np.linspace(0.02, 1.0, 50)
    t = cosmic_time_gyr(a, cosmology=PLANCK15)
    np.testing.assert_allclose(scale_factor_at_time(t, cosmology=PLANCK15), a, rtol=1e-10)


def test_lengths_and_masses():
    a, h = 0.5, 0.7
    # 100 ckpc/h at a = 0.5 is 100 * 0.5 / 0.7 physical kpc
    assert tng_to_physical("Coordinates", 100.0, scale_factor=a, h=h) == pytest.approx(71.428571)
    assert tng_to_physical("StellarHsml", 1.4, scale_factor=a, h=h) == pytest.approx(1.0)
    # 1 (1e10 Msun/h) with h = 0.7 is 1.428e10 Msun, independent of a
    assert tng_to_physical("Masses", 1.0, scale_factor=a, h=h) == pytest.approx(1e10 / 0.7)
    assert tng_to_physical("SubhaloMassType", 0.7, scale_factor=0.1, h=h) == pytest.approx(1e10)
    assert tng_to_physical("GFM_Metallicity", 0.0127, scale_factor=a, h=h) == 0.0127
    assert tng_to_physical("SubhaloSFR", 3.0, scale_factor=a, h=h) == 3.0


def test_ages_from_birth_scale_factor_and_wind_cells():
    a_snap = 1.0 / 1.3
    birth = np.array([a_snap, 0.5, 0.1, 0.0, -0.3])
    age = tng_to_physical("GFM_StellarFormationTime", birth, scale_factor=a_snap, h=0.6774,
                          cosmology=PLANCK15)
    astro = PLANCK15.astropy()
    expect = (astro.age(0.3) - astro.age(1.0 / birth[:3] - 1.0)).to_value("Gyr")
    np.testing.assert_allclose(age[:3], expect, rtol=1e-6, atol=1e-9)
    assert age[0] == 0.0
    assert np.isnan(age[3:]).all()  # wind cells
    with pytest.raises(DataFormatError, match="cosmology"):
        tng_to_physical("GFM_StellarFormationTime", birth, scale_factor=a_snap, h=0.7)


def test_unknown_field_is_a_typed_error():
    with pytest.raises(DataFormatError, match="TNG_UNITS"):
        tng_to_physical("Velocities", 1.0, scale_factor=1.0, h=0.7)


def test_unwrap_periodic():
    box = 1000.0
    centre = np.array([999.0, 1.0, 500.0])
    pos = np.array([[1.0, 999.0, 510.0], [998.0, 3.0, 490.0]])
    d = unwrap_periodic(pos, centre, box_size=box)
    np.testing.assert_allclose(d, [[2.0, -2.0, 10.0], [-1.0, 2.0, -10.0]])
    assert np.abs(unwrap_periodic(pos, centre, box_size=None)).max() == pytest.approx(998.0)


def test_tng_star_particles_drops_wind_unwraps_and_prefers_stellar_hsml():
    a, h, box = 0.8, 0.7, 500.0
    raw = {
        "Coordinates": np.array([[499.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "Masses": np.array([1e-4, 2e-4, 5e-5], np.float32),
        "GFM_InitialMass": np.array([2e-4, 3e-4, 5e-5], np.float32),
        "GFM_StellarFormationTime": np.array([0.5, 0.7, -0.2], np.float32),
        "GFM_Metallicity": np.array([0.01, 0.02, 0.0], np.float32),
        "SubfindHsml": np.array([9.0, 9.0, 9.0], np.float32),
        "StellarHsml": np.array([0.7, 1.4, 1.0], np.float32),
    }
    parts, n_wind, wind_mass = tng_star_particles(
        raw, centre_ckpc_h=np.zeros(3), box_size_ckpc_h=box, scale_factor=a, h=h,
        cosmology=PLANCK15)
    assert len(parts) == 2 and n_wind == 1
    assert wind_mass == pytest.approx(float(np.float32(5e-5)) * 1e10 / h)
    np.testing.assert_allclose(parts.positions_kpc[:, 0], [-1.0 * a / h, 1.0 * a / h])
    np.testing.assert_allclose(parts.hsml_kpc, np.array([0.7, 1.4], np.float32) * a / h)
    np.testing.assert_allclose(parts.mass_msun, np.array([1e-4, 2e-4], np.float32) * 1e10 / h)
    assert (parts.age_gyr > 0).all() and parts.age_gyr[0] > parts.age_gyr[1]
    parts.validate()
    del raw["GFM_Metallicity"]
    with pytest.raises(DataFormatError, match="GFM_Metallicity"):
        tng_star_particles(raw, centre_ckpc_h=np.zeros(3), box_size_ckpc_h=box,
                           scale_factor=a, h=h, cosmology=PLANCK15)


def test_conversion_table_lists_factors():
    rows = conversion_table(["Coordinates", "Masses", "GFM_StellarFormationTime"],
                            scale_factor=0.5, h=0.5)
    assert rows[0]["factor"] == pytest.approx(1.0) and rows[0]["physical_unit"] == "kpc"
    assert rows[1]["factor"] == pytest.approx(2e10)
    assert "wind" in str(rows[2]["factor"])
