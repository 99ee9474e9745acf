"""The shared building blocks: one PSF builder, one kpc <-> arcsec, one central segment."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import simcompare
from simcompare.config import Cosmology
from simcompare.errors import ConfigError
from simcompare.mock.observe import (
    PSF,
    Camera,
    effective_psf,
    psf_profile,
    survey_psf_images,
)
from simcompare.registry import find_survey
from simcompare.segmentation import central_label

PKG = Path(simcompare.__file__).parent


def test_central_label_takes_the_segment_under_the_centre():
    lab = np.zeros((9, 9), int)
    lab[3:6, 3:6] = 2
    lab[0:2, 0:2] = 1
    assert central_label(lab, (4.0, 4.0)) == 2


def test_central_label_takes_the_nearest_segment_within_the_radius_only():
    lab = np.zeros((21, 21), int)
    lab[10, 14] = 3   # 4 px from the centre
    lab[0, 0] = 1
    assert central_label(lab, (10.0, 10.0), max_radius=4.0) == 3  # inclusive
    assert central_label(lab, (10.0, 10.0), max_radius=3.9) == 0
    assert central_label(lab, (10.0, 10.0)) == 3
    assert central_label(np.zeros((5, 5), int), (2.0, 2.0)) == 0


def test_central_label_rounds_and_clips_the_centre_pixel():
    lab = np.zeros((4, 4), int)
    lab[3, 3] = 5
    assert central_label(lab, (9.0, 9.0)) == 5  # clipped onto the map


def test_one_psf_builder_for_mock_demo_and_stand_in():
    sv = find_survey("hsc")
    bands = tuple(sv.bands)
    mock = PSF.from_survey(sv, bands=bands).image
    stand_in = survey_psf_images(sv, bands=bands, size=mock.shape[-1])
    assert stand_in.dtype == np.float32
    np.testing.assert_allclose(stand_in, mock, rtol=1e-6, atol=1e-9)
    one = effective_psf(sv.psf.kind, fwhm_arcsec=float(sv.psf.fwhm_arcsec[bands[0]]), beta=sv.psf.beta,
                        pixel_scale_arcsec=sv.pixel_scale_arcsec, size=mock.shape[-1])
    np.testing.assert_array_equal(one, mock[0])


def test_psf_profile_refuses_unknown_kinds():
    with pytest.raises(ConfigError, match=r"psf\.kind"):
        psf_profile("airy", fwhm_arcsec=0.7)


def test_one_kpc_per_arcsec():
    cosmo = Cosmology()
    cam = Camera.at_redshift(stamp_size=32, pixel_scale_arcsec=0.168, redshift=0.1, cosmology=cosmo)
    assert cam.kpc_per_arcsec == cosmo.kpc_per_arcsec(0.1)
    d_a = cosmo.astropy().angular_diameter_distance(0.1).to_value("kpc")
    assert math.isclose(cosmo.kpc_per_arcsec(0.1), d_a / 206264.80624709636, rel_tol=1e-14)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_real_cutout_ingestion_does_not_depend_on_the_demo_module():
    imported = _imported_modules(PKG / "observed" / "cutouts.py")
    assert ".demo" not in imported and "simcompare.observed.demo" not in imported


def test_one_definition_of_each_building_block():
    sources = {p: p.read_text() for p in PKG.rglob("*.py")}
    for needle in ("galsim.Kolmogorov(", "angular_diameter_distance(", "3.0856775814913673e"):
        where = [str(p.relative_to(PKG)) for p, s in sources.items() if needle in s]
        assert len(where) <= 1, (needle, where)
    readers = {str(p.relative_to(PKG)): s for p, s in sources.items() if p.parent.name == "sims"}
    screening = [name for name, s in readers.items() if ".validate(where=" in s]
    assert screening == ["sims/base.py"], screening
