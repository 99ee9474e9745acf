"""Power of the global-structure axis on controlled galsim populations (measured images).

Populations share everything (the same seed draws masses, profiles, orientations and
noise) except the controlled property: galaxy sizes scaled by 1.0, 1.1, 1.3, 1.6, a PSF
FWHM 20% too large, or sky noise 20% too high. The reference is an independent draw of
the unscaled population. statmorph costs ~0.3-1 s per stamp, so these are slow tests.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from test_morphology import make_population

from simcompare.comparison import compare
from simcompare.morphology import measure

N = 48
pytestmark = pytest.mark.slow


def scores_for(morph: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A score table carrying the catalogue, with a fine-structure score that does not differ."""
    rng = np.random.default_rng(seed)
    n = len(morph)
    return pd.DataFrame({
        "object_id": morph["object_id"], "log_prob_nats": rng.normal(size=n),
        "llr_nats": rng.normal(size=n), "stellar_mass_msun": morph["stellar_mass_msun"],
        "redshift": morph["redshift"],
    })


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return measure(make_population(N, seed=100), out=None)


def run(sim_morph: pd.DataFrame, ref_morph: pd.DataFrame) -> dict:
    return compare(scores_for(sim_morph, 1), scores_for(ref_morph, 2), n_bootstrap=500,
                   n_null=20, seed=0, morphology=sim_morph, morphology_reference=ref_morph)


def test_global_axis_rises_monotonically_with_size(reference: pd.DataFrame) -> None:
    out = {}
    for scale in (1.0, 1.1, 1.3, 1.6):
        sim = measure(make_population(N, seed=200, size_scale=scale), out=None)
        out[scale] = run(sim, reference)
    glob = [out[s]["axes"]["global_structure"] for s in out]
    aurocs = [g["value"] for g in glob]
    r_half = [1 - out[s]["morphology"]["r_half_arcsec"]["auroc"]["value"] for s in out]
    print("size series global AUROC", aurocs, "r_half AUROC", r_half)
    assert all(b > a for a, b in itertools.pairwise(aurocs)), aurocs
    assert all(b > a for a, b in itertools.pairwise(r_half)), r_half
    assert not glob[0]["detected"]  # unscaled: at chance
    assert glob[-1]["detected"] and glob[-1]["ci"][0] > 0.5
    for g in glob:  # the null (observed vs observed) stays at chance
        assert g["null"]["ci"][0] <= 0.5
    assert out[1.6]["verdict"]["global_structure"] == "differs"
    assert out[1.0]["verdict"]["global_structure"] == "indistinguishable"


@pytest.mark.parametrize(("what", "kwargs"), [("psf", {"psf_fwhm": 0.84}),
                                              ("noise", {"sky_sigma": 1.2})])
def test_wrong_psf_or_noise_is_detected(reference: pd.DataFrame, what: str, kwargs: dict) -> None:
    sim = measure(make_population(N, seed=200, **kwargs), out=None)
    s = run(sim, reference)
    g = s["axes"]["global_structure"]
    f = s["axes"]["fine_structure"]
    print(what, "global AUROC", g["value"], g["ci"], "fine", f["value"], f["ci"])
    detected = g["detected"] or (not f["ci_contains_null_value"])
    assert detected, (g, f)
