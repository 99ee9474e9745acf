"""simcompare.comparison: statistics against known answers, schema, matching, guards."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, wasserstein_distance

from simcompare.comparison import (
    auroc,
    compare,
    compare_files,
    cross_validated_auroc,
    league_table,
    typical_fraction,
    wasserstein1,
)
from simcompare.errors import ConfigError, DataNotFoundError


def score_table(n: int, *, shift: float = 0.0, rng: np.random.Generator, llr: bool = True,
                mass_lo: float = 9.5, mass_hi: float = 11.5, mass_slope: float = 0.0) -> pd.DataFrame:
    logm = rng.uniform(mass_lo, mass_hi, n)
    llr_v = rng.normal(shift, 1.0, n) + mass_slope * (logm - 10.5)
    return pd.DataFrame({
        "object_id": np.arange(n, dtype=np.int64),
        "log_prob_nats": rng.normal(-3000.0, 20.0, n) + 10 * shift,
        "bits_per_dim": rng.normal(2.0, 0.01, n),
        "log_prob_background_nats": rng.normal(-3000.0, 20.0, n),
        "llr_nats": llr_v if llr else np.full(n, np.nan),
        "llr_footprint_nats": llr_v if llr else np.full(n, np.nan),
        "llr_peak_nats": llr_v if llr else np.full(n, np.nan),
        "percentile": rng.uniform(0, 100, n),
        "stellar_mass_msun": 10**logm,
        "redshift": np.full(n, 0.3),
    })


def brute_auroc(sim: np.ndarray, ref: np.ndarray) -> float:
    diff = ref[:, None] - sim[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def test_auroc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 5, 37).astype(float)
    ref = rng.integers(1, 6, 29).astype(float)
    assert auroc(sim, ref) == pytest.approx(brute_auroc(sim, ref), abs=1e-12)
    # direction: reference scores higher -> above 0.5
    assert auroc(np.zeros(5), np.ones(5)) == 1.0
    assert auroc(np.ones(5), np.zeros(5)) == 0.0
    # vectorised over a leading axis
    batch = auroc(np.stack([sim, sim[::-1]]), np.stack([ref, ref]))
    assert batch == pytest.approx([brute_auroc(sim, ref)] * 2)


def test_wasserstein_and_typical_fraction_known_values() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=41), rng.normal(1.0, 2.0, size=67)
    assert wasserstein1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    assert wasserstein1(a, a + 0.7) == pytest.approx(0.7)
    ref = np.arange(100.0)
    # 5th percentile of 0..99 is 4.95: values above it
    assert typical_fraction(np.array([1.0, 5.0, 50.0, 4.0]), ref) == 0.5


def test_large_sample_estimates_match_theory() -> None:
    rng = np.random.default_rng(5)
    d = 0.8
    sim, ref = rng.normal(-d, 1, 20000), rng.normal(0, 1, 20000)
    assert auroc(sim, ref) == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=0.01)
    assert wasserstein1(sim, ref) == pytest.approx(d, abs=0.03)
    assert typical_fraction(sim, ref) == pytest.approx(1 - norm.cdf(norm.ppf(0.05) + d), abs=0.01)


def test_compare_schema_and_direction() -> None:
    rng = np.random.default_rng(0)
    sim, ref = score_table(200, shift=-0.6, rng=rng), score_table(150, rng=rng)
    s = compare(sim, ref, n_bootstrap=200, n_null=10, seed=1)
    json.dumps(s)  # serialisable
    assert s["schema"] == "simcompare.summary" and s["schema_version"] == 1
    assert s["column"] == "llr_peak_nats" and s["column_fallback_reason"] is None
    assert s["n"]["sim"] == 200 and s["n"]["reference"] == 150
    assert s["seeds"]["bootstrap"] == 1 and s["n_bootstrap"] == 200 and s["n_null"] == 10
    for name in ("auroc", "wasserstein", "median_shift", "typical_fraction",
                 "ks_pvalue", "ad_pvalue"):
        assert {"value", "ci", "null", "ci_contains_null_value"} <= set(s["metrics"][name])
    a = s["metrics"]["auroc"]
    assert a["value"] > 0.6 and a["ci"][0] > 0.5 and not a["ci_contains_null_value"]
    assert a["ci"][0] <= a["value"] <= a["ci"][1]
    assert abs(a["null"]["value"] - 0.5) < 0.12 and a["null"]["splits"]["n"] == 10
    assert s["metrics"]["median_shift"]["value"] < -0.3
    assert s["metrics"]["ks_pvalue"]["value"] < 1e-3
    assert s["axes"]["fine_structure"]["value"] == a["value"]
    assert s["axes"]["global_structure"]["value"] is None
    assert "less typical" in s["verdict"]["text"]
    assert s["verdict"]["global_structure"] == "not measured"


def test_compare_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(1)
    sim, ref = score_table(80, shift=-0.2, rng=rng), score_table(70, rng=rng)
    a = compare(sim, ref, n_bootstrap=100, n_null=5, seed=7)
    b = compare(sim, ref, n_bootstrap=100, n_null=5, seed=7)
    c = compare(sim, ref, n_bootstrap=100, n_null=5, seed=8)
    assert json.dumps(a) == json.dumps(b)
    assert a["metrics"]["auroc"]["ci"] != c["metrics"]["auroc"]["ci"]


def test_fallback_to_log_prob_when_no_background_model() -> None:
    rng = np.random.default_rng(2)
    sim = score_table(60, shift=-1.0, rng=rng, llr=False)
    ref = score_table(60, rng=rng, llr=False)
    s = compare(sim, ref, n_bootstrap=50, n_null=3, seed=0)
    assert s["column"] == "log_prob_nats" and s["column_requested"] == "llr_peak_nats"
    assert "no background model" in s["column_fallback_reason"]
    assert s["axes"]["fine_structure"]["column"] == "log_prob_nats"


def test_fallback_to_whole_stamp_ratio_for_older_tables() -> None:
    rng = np.random.default_rng(3)
    sim = score_table(60, shift=-1.0, rng=rng).drop(columns=["llr_footprint_nats",
                                                             "llr_peak_nats"])
    ref = score_table(60, rng=rng).drop(columns=["llr_footprint_nats", "llr_peak_nats"])
    s = compare(sim, ref, n_bootstrap=50, n_null=3, seed=0)
    assert s["column"] == "llr_nats" and s["column_requested"] == "llr_peak_nats"
    assert "older simcompare" in s["column_fallback_reason"]
    # an explicitly chosen column that is missing is still an error
    with pytest.raises(ConfigError, match="no column 'llr_level0_nats'"):
        compare(sim, ref, column="llr_level0_nats", n_bootstrap=10, n_null=2)


def test_unknown_column_and_missing_file_are_clear_errors(tmp_path) -> None:
    rng = np.random.default_rng(2)
    sim, ref = score_table(30, rng=rng), score_table(30, rng=rng)
    with pytest.raises(ConfigError, match="no column 'nope'"):
        compare(sim, ref, column="nope")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        compare(tmp_path / "missing.parquet", ref)
    with pytest.raises(ConfigError, match="n_bootstrap"):
        compare(sim, ref, n_bootstrap=2)


def test_too_few_galaxies_gives_no_verdict() -> None:
    rng = np.random.default_rng(3)
    s = compare(score_table(12, shift=-3, rng=rng), score_table(40, rng=rng),
                n_bootstrap=50, n_null=3)
    assert s["verdict"]["too_few_galaxies"] is True
    assert "too few galaxies" in s["verdict"]["text"]
    assert s["verdict"]["fine_structure"] == "too few galaxies"


def test_matching_removes_a_mass_driven_difference() -> None:
    # scores depend on stellar mass only; the simulation has more massive galaxies,
    # so unmatched scores differ but mass-matched ones do not
    rng = np.random.default_rng(11)
    sim = score_table(600, rng=rng, mass_lo=10.3, mass_hi=11.5, mass_slope=2.0)
    ref = score_table(600, rng=rng, mass_lo=9.5, mass_hi=11.5, mass_slope=2.0)
    s = compare(sim, ref, n_bootstrap=200, n_null=5, seed=0, n_bins=8)
    assert s["metrics"]["auroc"]["ci"][1] < 0.4  # sim scores higher (more massive)
    m = s["matched"]
    assert m["columns"] == ["stellar_mass_msun"]  # redshift is constant: not used
    assert m["n"]["sim"] == m["n"]["reference"] > 100
    assert m["metrics"]["auroc"]["ci"][0] < 0.5 < m["metrics"]["auroc"]["ci"][1] or \
        abs(m["metrics"]["auroc"]["value"] - 0.5) < 0.1
    assert abs(m["metrics"]["auroc"]["value"] - 0.5) < abs(s["metrics"]["auroc"]["value"] - 0.5) / 2
    bins = s["per_bin"]
    assert len(bins) == 8 and all(b["column"] == "stellar_mass_msun" for b in bins)
    assert sum(b["n"]["reference"] for b in bins) == 600
    # low-mass bins hold no simulated galaxies: skipped with a reason, not dropped
    assert any("skipped" in b for b in bins)
    assert all("metrics" in b for b in bins if "skipped" not in b)


def test_global_axis_rises_with_size_scale_on_parameter_tables() -> None:
    rng = np.random.default_rng(21)

    def morph(n: int, scale: float) -> pd.DataFrame:
        r = 0.5 * 10 ** rng.normal(0, 0.15, n) * scale
        return pd.DataFrame({
            "object_id": np.arange(n), "flag": np.zeros(n, int), "failure_reason": [""] * n,
            "r_half_arcsec": r, "sersic_n": 10 ** rng.normal(0.2, 0.15, n),
            "concentration": rng.normal(2.6, 0.2, n) - 0.2 * (scale - 1),
            "gini": rng.normal(0.5, 0.03, n), "m20": rng.normal(-1.7, 0.1, n),
        })

    ref = morph(120, 1.0)
    vals = []
    for scale in (1.0, 1.1, 1.3, 1.6):
        g = cross_validated_auroc(
            np.column_stack([np.log10(m[c]) if c == "r_half_arcsec" else m[c]
                             for c in ("r_half_arcsec", "concentration", "gini", "m20")
                             for m in [morph(120, scale)]]),
            np.column_stack([np.log10(ref[c]) if c == "r_half_arcsec" else ref[c]
                             for c in ("r_half_arcsec", "concentration", "gini", "m20")]),
            n_bootstrap=200, n_null=3, rng=np.random.default_rng(0))
        vals.append(g)
    aurocs = [g["value"] for g in vals]
    assert all(b > a for a, b in itertools.pairwise(aurocs)), aurocs
    assert not vals[0]["detected"]  # one-sided: no difference found above chance
    assert vals[-1]["ci"][0] > 0.8 and vals[-1]["detected"]
    assert vals[0]["null"]["ci"][0] <= 0.5  # the null detects nothing above chance


def test_compare_with_morphology_tables_names_both_axes(tmp_path) -> None:
    rng = np.random.default_rng(8)
    sim, ref = score_table(100, shift=-0.8, rng=rng), score_table(100, rng=rng)

    def morph(scores: pd.DataFrame, scale: float, n_fail: int) -> pd.DataFrame:
        n = len(scores)
        m = pd.DataFrame({
            "object_id": scores["object_id"], "flag": np.zeros(n, int),
            "failure_reason": [""] * n,
            "r_half_arcsec": 0.5 * scale * 10 ** rng.normal(0, 0.1, n),
            "sersic_n": 10 ** rng.normal(0.2, 0.1, n), "concentration": rng.normal(2.6, 0.2, n),
            "colour_g_r": rng.normal(0.5, 0.1, n),
        })
        m.loc[: n_fail - 1, "failure_reason"] = "low_snr"
        m.loc[: n_fail - 1, ["r_half_arcsec", "sersic_n", "concentration"]] = np.nan
        m.loc[: n_fail - 1, "flag"] = 4
        return m

    ms, mr = morph(sim, 1.5, 5), morph(ref, 1.0, 2)
    ms.to_parquet(tmp_path / "ms.parquet")
    s = compare(sim, ref, n_bootstrap=100, n_null=5, morphology=tmp_path / "ms.parquet",
                morphology_reference=mr)
    glob = s["axes"]["global_structure"]
    assert glob["metric"] == "classifier_auroc" and glob["value"] > 0.8
    assert not glob["ci_contains_null_value"] and glob["detected"]
    # compared at fixed stellar mass: matched samples (failed rows excluded first)
    assert glob["matched"] and glob["conditioned_on"] == ["stellar_mass_msun"]
    assert glob["n"]["sim"] == glob["n"]["reference"] <= 95
    assert "r_half_arcsec" in glob["parameters"] and "colour_g_r" in glob["parameters"]
    r = s["morphology"]["r_half_arcsec"]
    assert r["median"]["sim"] / r["median"]["reference"] == pytest.approx(1.5, rel=0.1)
    assert {"median_shift", "ks", "wasserstein"} <= set(r)
    assert r["median_shift"]["ci"][0] > 0 and r["ks"]["value"] > 0.5
    assert "matched" in r  # stellar mass comes from the score tables
    assert s["morphology_flags"]["sim"]["failures"] == {"low_snr": 5}
    v = s["verdict"]
    assert v["fine_structure"] == "less typical" and v["global_structure"] == "differs"
    assert "half-light radii are 1.5" in v["text"]


def test_compare_files_and_league_table(tmp_path) -> None:
    rng = np.random.default_rng(9)
    ref = score_table(120, rng=rng)
    ref.to_parquet(tmp_path / "ref.parquet")
    summaries = {}
    for name, shift in (("far", -1.5), ("close", 0.0), ("mid", -0.5)):
        score_table(120, shift=shift, rng=rng).to_parquet(tmp_path / f"{name}.parquet")
        out = tmp_path / name / "summary.json"
        s = compare_files(tmp_path / f"{name}.parquet", tmp_path / "ref.parquet", out=out,
                          n_bootstrap=100, n_null=5)
        assert json.loads(out.read_text())["metrics"]["auroc"]["value"] == s["metrics"]["auroc"]["value"]
        summaries[name] = out if name != "mid" else s
    rows = league_table(summaries, out_dir=tmp_path / "league")
    assert [r["name"] for r in rows] == ["close", "mid", "far"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    doc = json.loads((tmp_path / "league" / "league_table.json").read_text())
    assert doc["rows"][2]["fine_ci_low"] > 0.5
    with open(tmp_path / "league" / "league_table.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["name"] for r in csv_rows] == ["close", "mid", "far"]
    assert float(csv_rows[0]["fine_ci_low"]) < float(csv_rows[0]["fine_auroc"])


def test_classifier_auroc_ci_holds_chance_on_null_tables() -> None:
    """Both tables from one distribution: the CI holds 0.5 in ~95% of replicates.

    The features depend on a mass covariate that enters the classifier, as on the
    matched global axis. A bootstrap of the out-of-fold scores alone ignores that the
    classifier was fitted on the same galaxies and held 0.5 in 26 of these 30
    replicates (0.87; 0.82 over 150 replicates of 100 per side); the permutation spread
    restores the nominal coverage.
    """
    rng = np.random.default_rng(11)
    hits = detected = 0
    n_rep, n = 30, 40
    for r in range(n_rep):
        m_s, m_r = rng.uniform(9.5, 11, n), rng.uniform(9.5, 11, n)
        xs = np.column_stack([rng.standard_normal((n, 4)) + 0.8 * (m_s[:, None] - 10), m_s])
        xr = np.column_stack([rng.standard_normal((n, 4)) + 0.8 * (m_r[:, None] - 10), m_r])
        g = cross_validated_auroc(xs, xr, n_bootstrap=200, n_null=1, n_permutations=50, n_repeats=1,
                                  rng=np.random.default_rng([11, r]))
        assert g["ci"][0] <= g["value"] <= g["ci"][1]
        assert g["permutation_null"]["n"] == 50 and 0.0 < g["pvalue"] <= 1.0
        hits += g["ci"][0] <= 0.5 <= g["ci"][1]
        detected += g["detected"]
    assert hits >= 27, hits  # 28.5 expected at 95%
    assert detected <= 1, detected


def test_folds_balanced_per_matching_bin_remove_most_of_the_matched_bias() -> None:
    """Matched samples of one population: folds balanced per bin keep the AUROC nearer 0.5.

    With class-stratified folds alone, a fold that takes more of one class from a mass bin
    leaves the training folds with more of the other there; with mass-driven features the
    classifier learns that imbalance and scores the held-out galaxies the wrong way round.
    """
    import pandas as pd

    from simcompare.stats.classifier import cross_validated_auroc, matched_indices, stratified_folds

    vals: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(40):
        rng = np.random.default_rng(rep)

        def draw(n: int, rng=rng):
            lm = rng.uniform(9.5, 11.2, n)
            f = np.column_stack([0.25 * lm + rng.normal(0, 0.1, n), 0.5 * lm + rng.normal(0, 0.2, n),
                                 rng.normal(0, 1, n), lm])
            return pd.DataFrame({"stellar_mass_msun": 10**lm}), f

        ds, fs = draw(200)
        dr, fr = draw(160)
        m = matched_indices(ds, dr, columns=["stellar_mass_msun"], rng=rng)
        assert np.array_equal(np.bincount(m["sim_bin"]), np.bincount(m["ref_bin"]))
        xs, xr = fs[m["sim_index"]], fr[m["ref_index"]]
        for use in (True, False):
            r = cross_validated_auroc(xs, xr, n_bootstrap=10, n_null=0, n_permutations=0,
                                      rng=np.random.default_rng(rep),
                                      strata=(m["sim_bin"], m["ref_bin"]) if use else None)
            vals[use].append(r["value"])
    balanced, plain = np.mean(vals[True]), np.mean(vals[False])
    assert balanced > plain + 0.01
    assert abs(balanced - 0.5) < 0.03
    # every fold holds equal numbers of each class from every bin when the bin allows it
    y = np.repeat([0, 1], 40)
    strata = np.tile(np.repeat(np.arange(4), 10), 2)
    folds = stratified_folds(y, 5, np.random.default_rng(0), strata)
    for s in range(4):
        for f in range(5):
            sel = (strata == s) & (folds == f)
            assert (y[sel] == 0).sum() == (y[sel] == 1).sum() == 2
