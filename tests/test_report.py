"""Tests of the HTML report and league table, on a realistic fake run folder."""

from __future__ import annotations

import filecmp
import html
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcompare import imageset
from simcompare.errors import DataFormatError, DataNotFoundError
from simcompare.reporting import figures, write_index, write_report

REPO = Path(__file__).resolve().parent.parent
BANDS = ("g", "r", "i")
STAMP = 32
PIXEL = 0.168


# --------------------------------------------------------------------------- fake run


def _galaxies(rng: np.random.Generator, n: int, *, size_scale: float, clumps: bool) -> tuple:
    """Exponential discs (plus clumps) in g, r, i with sky noise; returns images and sizes."""
    yy, xx = np.mgrid[:STAMP, :STAMP] - (STAMP - 1) / 2
    images = np.empty((n, len(BANDS), STAMP, STAMP), np.float32)
    log_mass = rng.uniform(9.5, 11.5, n)
    r_d = 1.8 * 10 ** (0.25 * (log_mass - 10)) * size_scale * 10 ** rng.normal(0, 0.08, n)
    for k in range(n):
        q = rng.uniform(0.4, 1.0)
        theta = rng.uniform(0, np.pi)
        xr = xx * np.cos(theta) + yy * np.sin(theta)
        yr = (-xx * np.sin(theta) + yy * np.cos(theta)) / q
        disc = np.exp(-np.hypot(xr, yr) / r_d[k])
        bulge = np.exp(-np.hypot(xx, yy) / 0.8)
        flux = 10 ** (0.4 * (log_mass[k] - 9.0)) * 40
        for b, colour in enumerate((0.6, 1.0, 1.3)):
            img = flux * colour * (disc / disc.sum() + 0.3 * bulge / bulge.sum())
            if clumps:
                for _ in range(4):
                    cx, cy = rng.normal(0, r_d[k], 2)
                    img += 0.05 * flux * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 1.0) / (
                        2 * np.pi) * (1.4 - 0.4 * b)
            images[k, b] = img + rng.normal(0, 1.0, img.shape)
    return images, log_mass, r_d * PIXEL


def _psf() -> np.ndarray:
    yy, xx = np.mgrid[:9, :9] - 4
    p = np.exp(-(xx**2 + yy**2) / (2 * 1.2**2))
    return np.repeat((p / p.sum())[None], len(BANDS), axis=0).astype(np.float32)


def _morph(rng: np.random.Generator, ids: np.ndarray, r_half: np.ndarray, *, clumpy: bool) -> pd.DataFrame:
    n = len(ids)
    flag = (rng.uniform(size=n) < (0.15 if clumpy else 0.05)).astype(np.int64)
    reason = np.where(flag == 1, "sersic fit did not converge", "")
    return pd.DataFrame({
        "object_id": ids, "flag": flag, "failure_reason": reason,
        "r_half_arcsec": r_half * rng.normal(1, 0.05, n),
        "sersic_n": rng.normal(1.4 if clumpy else 1.2, 0.3, n),
        "concentration": rng.normal(2.9, 0.3, n), "asymmetry": rng.normal(0.2 if clumpy else 0.08, 0.04, n),
        "smoothness": rng.normal(0.08 if clumpy else 0.03, 0.02, n), "gini": rng.normal(0.5, 0.05, n),
        "m20": rng.normal(-1.8, 0.2, n), "ellipticity": rng.uniform(0, 0.6, n),
        "snr": rng.uniform(20, 80, n), "colour_g_r": rng.normal(0.6, 0.1, n),
    })


def _floor_entry(value, ci, floor, floor_ci) -> dict:
    """An axis' pipeline_floor as simcompare.comparison.attach_floor writes it."""
    half = 1.96 * float(np.hypot((ci[1] - ci[0]) / 3.92, (floor_ci[1] - floor_ci[0]) / 3.92))
    d = value - floor
    return {"value": floor, "ci": floor_ci, "n": {"sim": 30, "reference": 30}, "particles": 5400,
            "difference": {"value": d, "ci": [d - half, d + half],
                           "ci_contains_zero": bool(d - half <= 0 <= d + half),
                           "method": "normal approximation"},
            "share_of_distance": abs(floor - 0.5) / abs(value - 0.5)}


def _summary(llr_sim: np.ndarray, llr_ref: np.ndarray) -> dict:
    """A summary.json with the structure simcompare.comparison writes (numbers made up)."""
    def m(value, ci, null_value, null, null_ci):
        return {"value": value, "ci": ci, "ci_method": "percentile", "null_value": null_value,
                "ci_contains_null_value": bool(ci[0] <= null_value <= ci[1]),
                "null": {"value": null, "ci": null_ci, "ci_contains_null_value": True,
                         "splits": {"n": 10, "median": null, "interval": null_ci}}}

    def p(value, null):
        return {"value": value, "statistic": 0.6, "ci": None, "null_value": None,
                "ci_contains_null_value": None, "null": {"value": null, "ci": None}}

    n_sim = int(np.isfinite(llr_sim).sum())
    return {
        "schema": "simcompare.summary", "schema_version": 1, "column": "llr_nats",
        "column_requested": "llr_nats", "column_fallback_reason": None,
        "n": {"sim": n_sim, "reference": len(llr_ref), "sim_rows": len(llr_sim),
              "reference_rows": len(llr_ref)},
        "seeds": {"bootstrap": 7, "null": 7, "matching": 7, "cross_validation": 7},
        "n_bootstrap": 1000, "n_null": 50, "confidence": 0.95, "min_galaxies": 20,
        "directions": {
            "auroc": "P(reference score > simulated score); > 0.5: simulation less typical",
            "median_shift": "median(sim) - median(reference), score units",
            "wasserstein": "Wasserstein-1 distance, score units",
            "typical_fraction": "share of simulated galaxies above the reference 5th percentile",
        },
        "metrics": {
            "auroc": m(0.713, [0.652, 0.771], 0.5, 0.497, [0.431, 0.562]),
            "typical_fraction": m(0.62, [0.51, 0.72], 0.95, 0.94, [0.90, 0.98]),
            "wasserstein": m(3.2, [2.1, 4.4], 0.0, 0.8, [0.3, 1.4]),
            "median_shift": m(-2.7, [-3.9, -1.5], 0.0, 0.1, [-0.9, 1.0]),
            "ks_pvalue": p(1.2e-5, 0.61), "ad_pvalue": p(1e-3, 0.25),
        },
        "matched": {
            "columns": ["stellar_mass_msun"],
            "method": "joint quantile bins of the reference; larger side subsampled per bin",
            "edges": {"stellar_mass_msun": [None, 10.0, 10.5, 11.0, None]},
            "transform": {"stellar_mass_msun": "log10"}, "n": {"sim": 30, "reference": 30},
            "n_bins_used": 4,
            "metrics": {"auroc": m(0.70, [0.63, 0.77], 0.5, 0.51, [0.4, 0.62])},
        },
        "per_bin": [
            {"column": "stellar_mass_msun", "transform": "log10", "bin": [9.5, 10.5],
             "n": {"sim": 20, "reference": 14},
             "metrics": {"auroc": m(0.68, [0.55, 0.8], 0.5, 0.5, [0.4, 0.6]),
                         "typical_fraction": m(0.6, [0.45, 0.75], 0.95, 0.95, [0.85, 1.0]),
                         "median_shift": m(-2.1, [-3.0, -1.2], 0.0, 0.0, [-1.0, 1.0])}},
            {"column": "stellar_mass_msun", "transform": "log10", "bin": [10.5, 11.5],
             "n": {"sim": 8, "reference": 8}, "skipped": "fewer than 10 galaxies per side"},
        ],
        "morphology": {
            "r_half_arcsec": {
                "n": {"sim": 31, "reference": 26}, "median": {"sim": 0.57, "reference": 0.48},
                "median_shift": m(0.083, [0.051, 0.117], 0.0, 0.0, [-0.03, 0.03]),
                "wasserstein": m(0.09, [0.06, 0.13], 0.0, 0.02, [0.0, 0.05]),
                "ks": {"value": 0.41, "ci": [0.2, 0.6], "pvalue": 2e-4, "null_value": 0.0,
                       "ci_contains_null_value": False, "null": None},
                "auroc": m(0.31, [0.2, 0.42], 0.5, 0.5, [0.4, 0.6])},
            "asymmetry": {
                "n": {"sim": 31, "reference": 26}, "median": {"sim": 0.2, "reference": 0.08},
                "median_shift": m(0.12, [0.1, 0.14], 0.0, 0.0, [-0.01, 0.01]),
                "ks": {"value": 0.8, "ci": [0.7, 0.9], "pvalue": 1e-9, "null_value": 0.0,
                       "ci_contains_null_value": False, "null": None},
                "auroc": m(0.05, [0.01, 0.1], 0.5, 0.5, [0.4, 0.6]),
                "matched": {"auroc": m(0.07, [0.02, 0.12], 0.5, 0.5, [0.4, 0.6])}},
        },
        "morphology_flags": {"sim": {"n": 40}, "reference": {"n": 60}},
        "axes": {
            "fine_structure": {"metric": "auroc", "column": "llr_nats", "value": 0.713,
                               "ci": [0.652, 0.771], "ci_contains_null_value": False,
                               "null": {"value": 0.497, "ci": [0.431, 0.562]},
                               "pipeline_floor": _floor_entry(0.713, [0.652, 0.771], 0.58,
                                                              [0.5, 0.66])},
            "global_structure": {"metric": "classifier_auroc",
                                 "parameters": ["gini", "m20", "asymmetry", "r_half_arcsec"],
                                 "n": {"sim": 31, "reference": 55}, "value": 0.883,
                                 "ci": [0.81, 0.95], "ci_method": "percentile", "null_value": 0.5,
                                 "ci_contains_null_value": False,
                                 "null": {"value": 0.52, "ci": [0.41, 0.63]},
                                 "n_folds": 5, "l2": 1.0,
                                 "pipeline_floor": _floor_entry(0.883, [0.81, 0.95], 0.84,
                                                                [0.76, 0.92])},
        },
        "pipeline_floor": {
            "particles": 5400, "particles_source": "median n_star_particles of the 40 rendered "
            "galaxies", "n_galaxies": 30, "exclusions": {},
            "definition": "self-simulation of the held-out observed galaxies' Sersic fits",
            "curve": [{"particles": c, "n_galaxies": 30,
                       "fine_structure": {"value": v, "ci": [v - 0.08, v + 0.08]},
                       "global_structure": {"value": g, "ci": [g - 0.08, g + 0.08]}}
                      for c, v, g in ((1000, 0.66, 0.9), (4000, 0.6, 0.85),
                                      (20000, 0.54, 0.7), (100000, 0.5, 0.55))],
            "vanishes_at_particles": 100000},
        "verdict": {
            "text": "The simulated galaxies differ from the observed ones in fine structure and are larger.",
            "fine_structure": "less typical", "global_structure": "differs",
            "too_few_galaxies": False,
        },
    }


def make_run(root: Path, *, seed: int = 0, sim: str = "demo", survey: str = "hsc",
             n_sim: int = 40, n_obs: int = 60, train_model: bool = False,
             appearance: bool = False) -> Path:
    """A run folder with every artefact run.json names (small but realistic).

    Scores, summary and morphology are made up (so tests know the answers); the
    density model is really trained (tiny) on the observed set when ``train_model``.
    """
    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True)
    sim_img, sim_mass, sim_rh = _galaxies(rng, n_sim, size_scale=1.25, clumps=True)
    obs_img, obs_mass, obs_rh = _galaxies(rng, n_obs, size_scale=1.0, clumps=False)
    sim_ids = np.arange(1000, 1000 + n_sim, dtype=np.int64)
    obs_ids = np.arange(5000, 5000 + n_obs, dtype=np.int64) * 3
    sfr = 10 ** rng.normal(0.0, 0.6, n_sim)
    sfr[:3] = 0.0
    var = np.ones_like(sim_img)
    imageset.write(data / "mocks.h5", imageset.ImageSet(
        images=sim_img, variance=var, psf=_psf(), kind="mock", survey=survey, bands=BANDS,
        pixel_scale_arcsec=PIXEL, zero_point=27.0,
        catalog={"object_id": sim_ids, "stellar_mass_msun": 10**sim_mass,
                 "half_mass_radius_kpc": sim_rh / PIXEL * 0.8, "sfr_msun_per_yr": sfr,
                 "redshift": np.full(n_sim, 0.3)},
        provenance={"exclusions": {"too_few_star_particles": 3, "wind_only": 1},
                    "excluded_ids": {"11": "too_few_star_particles", "13": "too_few_star_particles",
                                     "12": "too_few_star_particles", "77": "wind_only"},
                    "reader_exclusions": {"subhalo_flag_0": 5}, "seed": 0,
                    "psf": "Moffat beta=3, FWHM 0.6 arcsec"}))
    mask = np.zeros(obs_img.shape, np.uint8)
    mask[0, :, 0, 0] = 1
    imageset.write(data / "observed.h5", imageset.ImageSet(
        images=obs_img, variance=np.ones_like(obs_img), mask=mask, psf=_psf(), kind="observed",
        survey=survey, bands=BANDS, pixel_scale_arcsec=PIXEL, zero_point=27.0,
        catalog={"object_id": obs_ids, "stellar_mass_msun": 10**obs_mass,
                 "half_light_radius_arcsec": obs_rh, "redshift": np.full(n_obs, 0.3)},
        provenance={"exclusions": {"low_snr": 2}, "excluded_ids": {"low_snr": [15006, 15003]},
                    "removed_by_cuts": {}}))
    llr_sim = rng.normal(-3.0, 2.0, n_sim)
    llr_sim[5] = np.nan
    test = np.arange(n_obs) % 2 == 0
    llr_ref = rng.normal(0.0, 2.0, test.sum())
    pd.DataFrame({
        "object_id": sim_ids, "log_prob_nats": rng.normal(-2500, 30, n_sim),
        "bits_per_dim": rng.normal(1.2, 0.01, n_sim),
        "log_prob_background_nats": rng.normal(-2500, 30, n_sim),
        "llr_nats": llr_sim, "percentile": rng.uniform(0, 100, n_sim),
        "stellar_mass_msun": 10**sim_mass, "half_mass_radius_kpc": sim_rh / PIXEL * 0.8,
        "sfr_msun_per_yr": sfr,
    }).to_parquet(data / "sim_scores.parquet")
    pd.DataFrame({
        "object_id": obs_ids[test], "log_prob_nats": rng.normal(-2490, 30, test.sum()),
        "bits_per_dim": rng.normal(1.19, 0.01, test.sum()),
        "log_prob_background_nats": rng.normal(-2490, 30, test.sum()), "llr_nats": llr_ref,
        "percentile": rng.uniform(0, 100, test.sum()), "stellar_mass_msun": 10 ** obs_mass[test],
        "half_light_radius_arcsec": obs_rh[test],
    }).to_parquet(data / "reference_scores.parquet")
    _morph(rng, sim_ids, sim_rh, clumpy=True).to_parquet(data / "morphology_sim.parquet")
    _morph(rng, obs_ids, obs_rh, clumpy=False).to_parquet(data / "morphology_reference.parquet")
    (data / "summary.json").write_text(json.dumps(_summary(llr_sim, llr_ref), indent=2))
    if train_model:
        from simcompare.density import train

        train(data / "observed.h5", out=data / "model", levels=2, blocks=1, hidden=8, epochs=2,
              batch_size=16, background="sersic", device="cpu", seed=seed)
    else:
        (data / "model").mkdir()
    run = root / "run"
    run.mkdir()
    app_paths = {}
    if appearance:  # the appearance stage on this run, as simcompare score runs it
        from simcompare.appearance import add_to_summary
        from simcompare.appearance import run as run_appearance

        run_appearance(mocks=data / "mocks.h5", observed=data / "observed.h5", model=data / "model",
                       sim_scores=data / "sim_scores.parquet",
                       reference_scores=data / "reference_scores.parquet", out=data / "appearance",
                       seed=seed, n_bootstrap=100)
        summary = add_to_summary(json.loads((data / "summary.json").read_text()),
                                 data / "appearance" / "appearance.json")
        (data / "summary.json").write_text(json.dumps(summary, indent=2))
        app_paths = {"sim_scores": "../data/appearance/sim_scores.parquet",
                     "reference_scores": "../data/appearance/reference_scores.parquet",
                     "appearance": "../data/appearance/appearance.json",
                     "appearance_arrays": "../data/appearance/appearance.npz"}
    meta = {
        "sim": sim, "survey": survey, "sim_title": "synthetic demo population",
        "survey_title": "HSC-SSP Wide",
        "config": {"sim": sim, "survey": survey, "render": {"stamp_size": STAMP, "noise": "survey"},
                   "train": {"levels": 2, "blocks": 4, "epochs": 3}},
        "timings_s": {"render": 12.1, "train": 40.25, "evaluate": 3.5, "compare": 1.0},
        "paths": {"mocks": "../data/mocks.h5", "observed": str(data / "observed.h5"),
                  "model": "../data/model", "sim_scores": "../data/sim_scores.parquet",
                  "reference_scores": "../data/reference_scores.parquet",
                  "summary": "../data/summary.json", "morphology_sim": "../data/morphology_sim.parquet",
                  "morphology_reference": "../data/morphology_reference.parquet", **app_paths},
        "provenance": {"simcompare": "0.1.0", "versions": {"torch": "2.13.0", "numpy": "2.1.0"},
                       "input_hashes": {"mocks": "sha256:ab12", "observed": "sha256:cd34"},
                       "seeds": {"render": 0, "train": 1, "bootstrap": 7}},
    }
    (run / "run.json").write_text(json.dumps(meta, indent=2))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("fake"), train_model=True, appearance=True)


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(run_dir, out=tmp_path_factory.mktemp("reports") / "demo_hsc")


class _Outline(HTMLParser):
    """Section ids, headings (with their ids), image sources, scripts and links."""

    def __init__(self) -> None:
        super().__init__()
        self.outline: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self._heading: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.outline.append(f"section#{a.get('id')}")
        elif tag in ("h1", "h2", "h3"):
            self._heading, self._text = f"{tag}#{a.get('id', '')}", ""
        elif tag == "img":
            self.images.append(a["src"])
        elif tag in ("a", "link"):
            self.links.append(a.get("href", ""))
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._heading is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.outline.append(f"{self._heading} {' '.join(self._text.split())}")
            self._heading = None


def _outline(page: Path) -> _Outline:
    p = _Outline()
    p.feed(page.read_text(encoding="utf-8"))
    return p


# --------------------------------------------------------------------------- the report


def test_report_has_every_section_and_no_missing_notes(report: Path, run_dir: Path):
    text = report.read_text(encoding="utf-8")
    assert 'class="missing"' not in text
    out = report.parent
    assert filecmp.cmp(out / "summary.json", run_dir.parent / "data" / "summary.json", shallow=False)
    assert filecmp.cmp(out / "scores.parquet",
                       run_dir.parent / "data" / "appearance" / "sim_scores.parquet", shallow=False)
    meta = json.loads((out / "report.json").read_text())
    assert (meta["sim"], meta["survey"]) == ("demo", "hsc")
    plain = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    assert "simulation demo (synthetic demo population) rendered as survey hsc (HSC-SSP Wide)" in plain


def test_report_is_self_contained(report: Path):
    p = _outline(report)
    text = report.read_text(encoding="utf-8")
    assert p.scripts == 0
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "@import" not in text and "url(" not in text
    # 12 least + 12 most typical, each sim + look-alike, each 1 composite + 3 bands, and two
    # further look-alikes each; 12 maps x 2; 12 anomalies (composites); plus the floor-curve,
    # score, trend, appearance-map, training-curve and morphology figures
    assert len(p.images) == 2 * 12 * 2 * (1 + len(BANDS)) + 2 * 12 * 2 + 12 * 2 + 12 + 6
    for src in p.images:
        assert not src.startswith("/")
        path = report.parent / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_structure_snapshot(report: Path):
    assert _outline(report).outline == [
        "h1# Does demo look like hsc?",
        "section#verdict", "h2# Verdict",
        "h3# Fine structure", "h3# Global structure", "h3# Any difference",
        "section#floor", "h2# The pipeline's floor",
        "section#scores", "h2# Score distributions",
        "section#trends", "h2# Trends with galaxy properties",
        "h3#matched Comparison in matched bins", "h3#per-bin Per bin",
        "section#galleries", "h2# Galleries",
        "h3#least-typical The 12 least typical simulated galaxies",
        "h3#most-typical The 12 most typical simulated galaxies",
        "section#appearance", "h2# Any difference, and look-alikes by appearance",
        "h3#classifier Classifier two-sample test", "h3#alignment Alignment fraction",
        "h3#appearance-map Map of appearance",
        "section#mismatch", "h2# Where the mismatch is",
        "section#anomalies", "h2# Anomalies of the sky",
        "section#model", "h2# Density model",
        "section#morphology", "h2# Classical morphology",
        "h3#morphology-flags Flag rates",
        "section#provenance", "h2# Provenance",
        "h3#exclusions Excluded objects", "h3#versions Software versions", "h3#seeds Seeds",
        "h3#timings Stage timings", "h3#inputs Inputs and their hashes",
        "h3#config Full configuration",
    ]


def test_report_is_byte_identical_when_rewritten(run_dir: Path, report: Path, tmp_path: Path):
    again = write_report(run_dir, out=tmp_path / "demo_hsc")
    assert again.read_bytes() == report.read_bytes()
    cmp = filecmp.dircmp(report.parent / "figures", again.parent / "figures")
    assert cmp.left_only == [] and cmp.right_only == []
    _, mismatch, errors = filecmp.cmpfiles(report.parent / "figures", again.parent / "figures",
                                           cmp.common_files, shallow=False)
    assert mismatch == [] and errors == []
    assert len(cmp.common_files) > 100


def _verdict_text(report: Path) -> str:
    text = report.read_text(encoding="utf-8")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text.split('id="scores"')[0])).split())


def test_verdict_shows_both_axes_cis_and_null(report: Path):
    v = _verdict_text(report)
    assert "The simulated galaxies differ from the observed ones in fine structure and are larger." in v
    assert "0.713 [0.652, 0.771] AUROC (sim vs observed) on llr_nats" in v
    assert "null test (observed vs observed): 0.497 [0.431, 0.562]" in v
    assert "0.883 [0.81, 0.95] classifier AUROC on gini, m20, asymmetry, r_half_arcsec" in v
    assert "null test (observed vs observed): 0.52 [0.41, 0.63]" in v
    assert "typical-set fraction 0.62 [0.51, 0.72] 0.95 0.94 [0.9, 0.98]" in v
    # three axes (fine, global, any difference), two headline metrics
    assert v.count("CI excludes the no-difference value") == 5
    assert "Verdict: less typical" in v and "Verdict: differs" in v
    assert "KS p-value 1.2e-05" in v


def test_floor_beside_each_axis_and_its_curve(report: Path):
    v = _verdict_text(report)
    # beside each axis: the floor, the difference with its CI and the pipeline's share
    assert "pipeline floor (observed galaxies self-simulated at 5400 particles): 0.58 [0.5, 0.66]" in v
    assert "simulation − floor 0.133 [0.0333, 0.233] beyond the floor ;" in v
    assert "the pipeline alone makes 38% of the distance from 0.5" in v
    assert "pipeline floor (observed galaxies self-simulated at 5400 particles): 0.84 [0.76, 0.92]" in v
    assert "simulation − floor 0.043 [-0.0633, 0.149] within the floor ;" in v
    text = report.read_text(encoding="utf-8")
    floor = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text.split('id="floor"')[1]
                                          .split('id="scores"')[0])).split())
    assert "30 self-simulated galaxies at 5400 star particles each" in floor
    assert "The floor vanishes (every axis' CI holds 0.5) from 100000 particles per galaxy on." in floor
    assert "100000 30 0.5 [0.42, 0.58] 0.55 [0.47, 0.63]" in floor
    assert 'src="figures/floor_curve.png"' in text
    assert (report.parent / "figures" / "floor_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_trends_show_matched_and_per_bin_results(report: Path):
    block = report.read_text(encoding="utf-8").split('id="trends"')[1].split("</section>")[0]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", block)).split())
    assert "matched in stellar_mass_msun (log10)" in text
    assert "30 simulated and 30 observed galaxies in 4 bins" in text
    assert "AUROC (sim vs observed) 0.7 [0.63, 0.77] 0.5 0.51 [0.4, 0.62]" in text
    assert "log10 stellar_mass_msun [9.5, 10.5] 20 14 0.68 [0.55, 0.8] 0.6 [0.45, 0.75]" in text
    assert "[10.5, 11.5] 8 8 – – – fewer than 10 galaxies per side" in text


def _gallery_ids(report: Path, group: str) -> list[int]:
    text = report.read_text(encoding="utf-8")
    block = text.split(f'id="{group}"')[1].split("</div>\n</div>\n</div>\n</div>")[0]
    block = block.split("<h3")[0]
    return [int(m) for m in re.findall(r'alt="simulated galaxy (\d+)"', block)]


def test_galleries_rank_by_distance_from_observed_median(report: Path, run_dir: Path):
    data = run_dir.parent / "data"
    sim = pd.read_parquet(data / "sim_scores.parquet")
    ref = pd.read_parquet(data / "reference_scores.parquet")
    finite = sim[np.isfinite(sim["llr_nats"])]
    dist = (finite["llr_nats"] - ref["llr_nats"].median()).abs().to_numpy()
    ids = finite["object_id"].to_numpy()
    most = [int(i) for i in ids[np.argsort(dist, kind="stable")[:12]]]
    least = [int(i) for i in ids[np.argsort(-dist, kind="stable")[:12]]]
    assert _gallery_ids(report, "least-typical") == least
    assert _gallery_ids(report, "most-typical") == most
    assert not set(least) & set(most)
    assert 1005 not in least + most                     # NaN score is not ranked
    assert "1 simulated galaxies with a non-finite score" in report.read_text()


def test_galleries_two_sided_when_every_sim_scores_high(tmp_path: Path):
    """Simulated scores all above the observed ones: the least typical are the highest."""
    run = make_run(tmp_path / "a", n_sim=30, n_obs=20)
    data = run.parent / "data"
    sim = pd.read_parquet(data / "sim_scores.parquet")
    sim["llr_nats"] = 100.0 + np.arange(len(sim), dtype=float)
    sim.to_parquet(data / "sim_scores.parquet")
    meta = json.loads((run / "run.json").read_text())
    for key in ("model", "morphology_sim", "morphology_reference"):
        del meta["paths"][key]
    (run / "run.json").write_text(json.dumps(meta))
    page = write_report(run, out=tmp_path / "out")
    ids = sim["object_id"].tolist()
    assert _gallery_ids(page, "least-typical") == ids[::-1][:12]
    assert _gallery_ids(page, "most-typical") == ids[:12]
    assert "(above), ratio pct" in page.read_text(encoding="utf-8")


def test_lookalike_is_nearest_in_mass_and_size(run_dir: Path, tmp_path: Path):
    """Without the appearance stage's files, look-alikes are nearest in mass and size."""
    data = run_dir.parent / "data"
    meta = json.loads((run_dir / "run.json").read_text())
    meta["paths"] = {k: str((run_dir / v).resolve()) for k, v in meta["paths"].items()
                     if not k.startswith("appearance")}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    report = write_report(tmp_path / "run", out=tmp_path / "out")
    sim = pd.read_parquet(data / "sim_scores.parquet")
    ref = pd.read_parquet(data / "reference_scores.parquet")
    ms = pd.read_parquet(data / "morphology_sim.parquet").set_index("object_id")
    mr = pd.read_parquet(data / "morphology_reference.parquet").set_index("object_id")
    cat = imageset.read_catalog(data / "observed.h5")
    pool = np.isin(cat["object_id"], ref["object_id"])
    fo = np.stack([np.log10(cat["stellar_mass_msun"][pool]),
                   np.log10(mr.loc[cat["object_id"][pool], "r_half_arcsec"].to_numpy())], axis=1)
    worst = sim[np.isfinite(sim["llr_nats"])].sort_values("llr_nats", kind="stable").iloc[0]
    fs = np.array([np.log10(worst["stellar_mass_msun"]),
                   np.log10(ms.loc[worst["object_id"], "r_half_arcsec"])])
    d = np.sqrt((((fo - fs) / fo.std(axis=0)) ** 2).sum(axis=1))
    expected = int(cat["object_id"][pool][np.argmin(d)])
    text = report.read_text(encoding="utf-8")
    block = text.split('id="least-typical"')[1]
    first_obs = re.search(r'alt="observed look-alike (\d+)"', block).group(1)
    assert int(first_obs) == expected
    assert "nearest in log10 stellar mass (catalogue) and log10 half-light radius" in text


def test_mismatch_maps_come_from_the_appearance_stage(report: Path, run_dir: Path):
    from simcompare.density import evaluate

    text = report.read_text(encoding="utf-8")
    block = text.split('id="mismatch"')[1].split('id="anomalies"')[0]
    assert "Method: occlusion on a 8 x 8 grid of 4-pixel patches" in block
    assert ("log p_obs − log p_bg (observed model over the smooth-Sérsic background model, "
            "mean over 4 orientations)") in block
    assert block.count('alt="occlusion map of galaxy') == 12
    ids = [int(i) for i in re.findall(r'alt="occlusion map of galaxy (\d+)"', block)]
    assert ids == _gallery_ids(report, "least-typical")
    # the stage's score of the unchanged stamp is the one evaluate() gives for the same images
    data = run_dir.parent / "data"
    scored = evaluate(data / "model", data / "mocks.h5", out=None, device="cpu").set_index("object_id")
    shown = [float(v) for v in re.findall(r"; recomputed (-?[\d.e+-]+)\)", block)]
    assert np.allclose(shown, scored.loc[ids, "llr_nats"].to_numpy(), rtol=5e-3, atol=0.05)
    arrays = np.load(data / "appearance" / "appearance.npz")
    assert arrays["maps"].shape == (12, 8, 8)


def test_report_shows_the_appearance_axis_lookalikes_and_anomalies(report: Path, run_dir: Path):
    data = run_dir.parent / "data"
    summary = json.loads((data / "summary.json").read_text())
    ax = summary["axes"]["any_difference"]
    text = html.unescape(report.read_text(encoding="utf-8"))
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', text, flags=re.S))
    for sid in ("verdict", "galleries", "appearance", "mismatch", "anomalies"):
        assert 'class="missing"' not in sections[sid], sid
    assert f"{ax['value']:.3g}" in sections["verdict"] and "Any difference" in sections["verdict"]
    assert f"{ax['null']['value']:.3g}" in sections["appearance"]
    assert "Alignment fraction" in sections["appearance"] and "appearance_map.png" in sections["appearance"]
    assert (report.parent / "figures" / "appearance_map.png").is_file()
    # look-alikes by appearance: the stage's nearest observed galaxy of each shown galaxy
    arrays = np.load(data / "appearance" / "appearance.npz")
    nearest = dict(zip(arrays["sim_object_id"].tolist(), arrays["lookalike_object_id"][:, 0].tolist(),
                       strict=True))
    block = sections["galleries"].split('id="least-typical"')[1]
    sim_ids = [int(i) for i in re.findall(r'alt="simulated galaxy (\d+)"', block)]
    obs_ids = [int(i) for i in re.findall(r'alt="observed look-alike (\d+)"', block)]
    assert obs_ids == [nearest[i] for i in sim_ids]
    assert "nearest observed galaxies by appearance" in sections["galleries"]
    assert sections["galleries"].count('alt="further observed look-alike') == 2 * 24
    # anomalies: the lowest held-out observed scores, lowest first
    ref = pd.read_parquet(data / "reference_scores.parquet")
    lowest = ref.sort_values("llr_nats", kind="stable")["object_id"].tolist()[:12]
    shown = [int(i) for i in re.findall(r'alt="anomalous observed galaxy (\d+)"', sections["anomalies"])]
    assert shown == lowest
    # the score tables carry the out-of-fold probability of being simulated
    scores = pd.read_parquet(report.parent / "scores.parquet")
    assert "p_simulated" in scores.columns and np.isfinite(scores["p_simulated"]).all()
    assert scores["p_simulated"].between(0, 1).all()


def test_model_section_shows_training_record(report: Path, run_dir: Path):
    info = json.loads((run_dir.parent / "data" / "model" / "training.json").read_text())
    block = report.read_text(encoding="utf-8").split('id="model"')[1].split("</section>")[0]
    assert html.escape(info["preprocessing"]) in block
    assert "<td>model</td>" in block and "<td>background</td>" in block
    assert 'src="figures/training.png"' in block
    assert "1 ensemble member" in block
    # the method text names the score and says which axis is the stronger one, with figures
    assert "Fine-structure score: the log-likelihood ratio" in block and "one model" in block
    assert "classical morphology is the stronger axis" in block and "0.96" in block


def test_report_of_a_real_compare_summary(run_dir: Path, tmp_path: Path):
    """The summary as simcompare.comparison writes it (few resamples, so it is quick)."""
    from simcompare.comparison import compare

    data = run_dir.parent / "data"
    summary = compare(data / "sim_scores.parquet", data / "reference_scores.parquet",
                      n_bootstrap=20, n_null=2, seed=3, morphology=data / "morphology_sim.parquet",
                      morphology_reference=data / "morphology_reference.parquet")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    meta = json.loads((run_dir / "run.json").read_text())
    meta["paths"] = {k: str((run_dir / v).resolve()) for k, v in meta["paths"].items()}
    meta["paths"]["summary"] = str(tmp_path / "summary.json")
    del meta["paths"]["model"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    page = write_report(tmp_path / "run", out=tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', text, flags=re.S))
    for sid in ("verdict", "scores", "trends", "galleries", "morphology", "provenance"):
        assert 'class="missing"' not in sections[sid], sid
    verdict = html.unescape(sections["verdict"])
    assert summary["verdict"]["text"] in verdict
    for axis in ("fine_structure", "global_structure"):
        ax = summary["axes"][axis]
        assert f"{ax['value']:.3g}" in verdict and f"[{ax['ci'][0]:.3g}, {ax['ci'][1]:.3g}]" in verdict
        assert f"Verdict: <strong>{summary['verdict'][axis]}</strong>" in verdict
    assert sections["trends"].count("<td>log10 stellar_mass_msun</td>") == len(summary["per_bin"])
    for param, entry in summary["morphology"].items():
        if param in ("gini", "m20", "asymmetry"):
            assert f"{entry['auroc']['value']:.3g} [" in sections["morphology"]


def test_morphology_flag_rates(report: Path, run_dir: Path):
    data = run_dir.parent / "data"
    ms = pd.read_parquet(data / "morphology_sim.parquet")
    text = report.read_text(encoding="utf-8")
    block = text.split('id="morphology-flags"')[1]
    rate = f"{100 * (ms['flag'] != 0).mean():.1f}%"
    usable = f"{100 * ((ms['flag'] <= 1) & (ms['failure_reason'] == '')).mean():.1f}%"
    assert (f'<td>simulated</td><td class="num">{len(ms)}</td><td class="num">{usable}</td>'
            f'<td class="num">{rate}</td>') in block
    assert '<td>observed</td><td class="num">30</td>' in block      # the held-out half
    assert "observed morphology restricted to the 30 held-out galaxies" in block
    assert "sersic fit did not converge: " in block
    table = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text.split('id="morphology"')[1])).split())
    assert "asymmetry A 0.216" in table
    assert "0.05 [0.01, 0.1] differs 0.12 [0.1, 0.14] D = 0.8, p = 1e-09 0.07 [0.02, 0.12]" in table


def test_provenance_lists_exclusions_versions_and_config(report: Path):
    text = html.unescape(report.read_text(encoding="utf-8"))
    block = text.split('id="provenance"')[1]
    assert "too_few_star_particles</td><td class=\"num\">3</td><td>11, 12, 13" in block
    assert "wind_only</td><td class=\"num\">1</td><td>77" in block
    assert "subhalo_flag_0</td><td class=\"num\">5</td>" in block
    assert "Moffat beta=3, FWHM 0.6 arcsec" in block
    assert "low_snr</td><td class=\"num\">2</td><td>15003, 15006" in block
    assert "<th>torch</th><td>2.13.0</td>" in block
    assert "<th>simcompare</th><td>0.1.0</td>" in block
    assert "sha256:ab12" in block
    assert '"epochs": 3' in block
    assert "<th>total</th><th class=\"num\">56.9</th>" in block


def test_missing_inputs_become_notes(tmp_path: Path):
    run = make_run(tmp_path / "a", n_sim=15, n_obs=20)
    meta = json.loads((run / "run.json").read_text())
    for key in ("morphology_sim", "observed"):
        del meta["paths"][key]
    meta["paths"]["reference_scores"] = "../data/nowhere.parquet"
    (run / "run.json").write_text(json.dumps(meta))
    page = write_report(run, out=tmp_path / "out")
    text = page.read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', text, flags=re.S))
    assert "run.json names no &#39;morphology_sim&#39; file" in sections["morphology"]
    assert "nowhere.parquet) does not exist" in sections["scores"]
    assert "no observed look-alikes" in sections["galleries"]
    assert "no readable training.json" in sections["model"]
    assert 'class="missing"' not in sections["verdict"]
    assert "0.713" in sections["verdict"]
    assert (tmp_path / "out" / "scores.parquet").is_file()
    assert "run.json names no &#39;appearance&#39; file" in sections["mismatch"]
    assert "run.json names no &#39;appearance&#39; file" in sections["appearance"]
    del meta["paths"]["model"]
    (run / "run.json").write_text(json.dumps(meta))
    text = write_report(run, out=tmp_path / "out").read_text(encoding="utf-8")
    assert "run.json names no &#39;model&#39; file" in text


def test_unloadable_model_folder_is_a_typed_error(tmp_path: Path):
    from simcompare.mismatch import density_score

    (tmp_path / "model").mkdir()
    with pytest.raises(DataNotFoundError, match=r"no readable training\.json"):
        density_score(tmp_path / "model")


def test_run_folder_errors(tmp_path: Path):
    with pytest.raises(DataNotFoundError, match=r"no run\.json"):
        write_report(tmp_path, out=tmp_path / "out")
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        write_report(tmp_path, out=tmp_path / "out")


# --------------------------------------------------------------------------- the league table


def test_index_ranks_by_fine_structure_distance(tmp_path: Path, report: Path):
    reports = tmp_path / "reports"
    shutil.copytree(report.parent, reports / "demo_hsc")
    close = json.loads((report.parent / "summary.json").read_text())
    close["axes"]["fine_structure"].update(value=0.52, ci=[0.47, 0.57])
    (reports / "tng100_hsc").mkdir()
    (reports / "tng100_hsc" / "summary.json").write_text(json.dumps(close))
    (reports / "eagle100_sdss").mkdir()
    (reports / "eagle100_sdss" / "summary.json").write_text(json.dumps(close))
    (reports / "broken_hsc").mkdir()
    (reports / "broken_hsc" / "summary.json").write_text("{")
    page = write_index(reports)
    text = page.read_text(encoding="utf-8")
    p = _outline(page)
    assert [s for s in p.outline if s.startswith("section")] == ["section#survey-hsc", "section#survey-sdss"]
    hsc = text.split('id="survey-hsc"')[1].split("</section>")[0]
    assert hsc.index("tng100") < hsc.index("demo")
    assert '<a href="demo_hsc/index.html">demo</a>' in hsc
    assert "broken" not in hsc
    assert "Not ranked: broken_hsc: unreadable summary.json" in text
    assert write_index(reports).read_bytes() == page.read_bytes()
    assert "0.713" in hsc and "[0.652, 0.771]" in hsc


def test_index_of_empty_folder(tmp_path: Path):
    text = write_index(tmp_path).read_text(encoding="utf-8")
    assert "No reports found" in text
    with pytest.raises(DataNotFoundError):
        write_index(tmp_path / "absent")


# --------------------------------------------------------------------------- figures


def test_write_png_round_trip(tmp_path: Path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (4, 9), dtype=np.uint8)
    with Image.open(figures.write_png(tmp_path / "a.png", rgb)) as im:
        assert np.array_equal(np.asarray(im), rgb)
    with Image.open(figures.write_png(tmp_path / "b.png", grey)) as im:
        assert np.array_equal(np.asarray(im), grey)


def test_lupton_rgb_known_values():
    q, s = 8.0, 0.5
    x = np.array([[0.0, 0.01, 0.1, 1.0, -1.0]])
    grey = figures.lupton_rgb(x, x, x, stretch=s, q=q)
    expected = np.clip(np.arcsinh(q * np.clip(x, 0, None) / s) / q, 0, 1)
    assert np.allclose(grey[..., 0] / 255, expected, atol=0.5 / 255)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    # colour is kept: channel ratios survive the stretch (below saturation)
    col = figures.lupton_rgb(np.array([[0.2]]), np.array([[0.1]]), np.array([[0.05]]),
                             stretch=s, q=q).astype(float)[0, 0]
    assert col[0] / col[1] == pytest.approx(2.0, rel=0.02)
    assert col[1] / col[2] == pytest.approx(2.0, rel=0.05)
    # the calibrating percentile maps to full scale
    ref = np.linspace(0, 10, 1001)
    s_fit = figures.asinh_scale(ref, q=q, percentile=99.5)
    assert np.arcsinh(q * np.percentile(ref, 99.5) / s_fit) / q == pytest.approx(1.0)
    assert figures.asinh_scale(np.zeros(4)) == 1.0


def test_asinh_calibration_anchors():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:41, :41] - 20
    galaxy = 500.0 * np.exp(-np.hypot(xx, yy) / 3.0)
    stamps = galaxy[None] + rng.normal(0, 2.0, (20, 41, 41))
    q, s = figures.asinh_calibration(stamps, noise_brightness=0.08, percentile=99.9)
    edge = np.concatenate([stamps[:, :2].ravel(), stamps[:, -2:].ravel(),
                           stamps[:, :, :2].ravel(), stamps[:, :, -2:].ravel()])
    sigma = 1.4826 * np.median(np.abs(edge - np.median(edge)))
    assert sigma == pytest.approx(2.0, rel=0.05)
    assert np.arcsinh(q * sigma / s) / q == pytest.approx(0.08, rel=1e-6)
    assert np.arcsinh(q * np.percentile(stamps, 99.9) / s) / q == pytest.approx(1.0, rel=1e-6)
    # faint stamps: a linear stretch with the percentile at full scale
    q_lin, s_lin = figures.asinh_calibration(rng.normal(0, 1.0, (5, 20, 20)))
    assert q_lin < 0.01 and s_lin > 0


def test_rgb_band_choice():
    assert figures.rgb_band_choice(("g", "r", "i", "z", "y")) == (2, 1, 0)
    assert figures.rgb_band_choice(("z", "i", "r", "g")) == (1, 2, 3)
    assert figures.rgb_band_choice(("u", "v", "w", "x")) == (2, 1, 0)
    assert figures.rgb_band_choice(("vis",)) is None


def test_binned_medians_known_answer():
    from simcompare.stats.metrics import binned_medians

    rng = np.random.default_rng(3)
    x = np.repeat([0.5, 1.5, 2.5], 101)
    y = np.concatenate([rng.normal(m, 0.1, 101) for m in (1.0, 2.0, 3.0)])
    y[0] = np.nan
    out = binned_medians(x, y, edges=np.array([0.0, 1.0, 2.0, 3.0, 4.0]), rng=rng)
    assert list(out["count"]) == [100, 101, 101, 0]
    assert np.allclose(out["median"][:3], [np.nanmedian(y[:101]), np.median(y[101:202]),
                                           np.median(y[202:])])
    assert np.all(out["lo"][:3] <= out["median"][:3]) and np.all(out["hi"][:3] >= out["median"][:3])
    assert np.all(out["hi"][:3] - out["lo"][:3] < 0.1)
    assert np.isnan(out["median"][3])


def test_score_figure_is_deterministic(tmp_path: Path):
    rng = np.random.default_rng(5)
    panels = [{"title": "t", "xlabel": "x", "sim": rng.normal(size=50), "ref": rng.normal(size=40)}]
    a = figures.histogram_panels(panels, path=tmp_path / "a.png")
    b = figures.histogram_panels(panels, path=tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    assert b"tEXt" not in a.read_bytes() and b"Software" not in a.read_bytes()


def test_import_is_light():
    code = ("import sys, simcompare.reporting; "
            "print(any(m in sys.modules for m in ('matplotlib', 'jinja2', 'torch')))")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- in a real browser

_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  var src = t && t.getAttribute && t.getAttribute("src");
  window.__errors.push(src ? "failed to load " + src : "error: " + e.message);
}, true);
["error", "warn"].forEach(function (level) {
  var orig = console[level];
  console[level] = function () {
    window.__errors.push("console." + level + ": " + Array.prototype.join.call(arguments, " "));
    orig.apply(console, arguments);
  };
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.getAttribute("src"); });
  var pre = document.createElement("pre");
  pre.id = "__probe";
  pre.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors,
                                    height: document.documentElement.scrollHeight,
                                    width: document.documentElement.scrollWidth});
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium: found on PATH, else installed from Debian's packages when possible."""
    path = _browser()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        try:
            if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
                subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired):
            pass
        path = _browser()
    if path is None:
        pytest.skip("headless Chromium is not installed and cannot be installed here (needs root "
                    "and apt-get: run ci/install-browser.sh, or apt-get install chromium)")
    return path


def _chromium_args(chromium: str, profile: Path) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]


def _probe(chromium: str, page: Path, tmp: Path) -> dict:
    """Open a copy of ``page`` with the probe script and return what it saw."""
    text = page.read_text(encoding="utf-8")
    probe_page = page.with_name("_probe.html")
    probe_page.write_text(text.replace("<head>", "<head>\n" + _PROBE, 1), encoding="utf-8")
    res = subprocess.run(
        [*_chromium_args(chromium, tmp / "profile-probe"), "--window-size=1280,900",
         "--virtual-time-budget=10000",
         "--dump-dom", probe_page.as_uri()],
        capture_output=True, text=True, timeout=180)
    probe_page.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, flags=re.S)
    assert m, f"no probe output (rc {res.returncode}): {res.stderr[-2000:]}"
    out = json.loads(html.unescape(m.group(1)))
    out["console"] = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    return out


@pytest.mark.browser
def test_browser_probe_catches_a_broken_image(chromium: str, tmp_path: Path):
    """The probe can fail: a page with a missing image and a console error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>x</title></head><body>'
                    '<img src="absent.png" alt="x"><script>console.error("boom")</script></body></html>')
    seen = _probe(chromium, page, tmp_path)
    assert seen["broken"] == ["absent.png"]
    assert any("absent.png" in e for e in seen["errors"])
    assert any("boom" in e for e in seen["errors"])


@pytest.mark.browser
def test_report_in_headless_chromium(chromium: str, report: Path, tmp_path: Path):
    site = tmp_path / "site"
    shutil.copytree(report.parent, site)
    seen = _probe(chromium, site / "index.html", tmp_path)
    assert seen["errors"] == [] and seen["console"] == []
    assert seen["broken"] == []
    assert seen["images"] == len(_outline(report).images)
    assert seen["width"] <= 1280 + 1                      # no horizontal overflow at 1280 px
    artifacts = Path(os.environ.get("SIMCOMPARE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-demo_hsc.png"
    height = min(int(seen["height"]), 16000)
    res = subprocess.run(
        [*_chromium_args(chromium, tmp_path / "profile-shot"), f"--window-size=1280,{height}",
         "--virtual-time-budget=10000", f"--screenshot={shot}", (site / "index.html").as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] > 2000
    index = write_index(site.parent)
    res = subprocess.run(
        [*_chromium_args(chromium, tmp_path / "profile-index"), "--window-size=1280,600",
         f"--screenshot={artifacts / 'reports-index.png'}", index.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert (artifacts / "reports-index.png").is_file(), res.stderr[-2000:]


def test_report_imports_neither_torch_nor_the_density_model(run_dir: Path, tmp_path: Path):
    """The report reads result files only: writing one loads no torch and no density code."""
    code = ("import sys; from pathlib import Path; from simcompare.reporting import write_report; "
            f"write_report(Path({str(run_dir)!r}), out=Path({str(tmp_path / 'out')!r})); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('simcompare.density')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"
    text = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "occlusion map of galaxy" in text
