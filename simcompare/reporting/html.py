"""The HTML report of one run, and the league table over all reports.

:func:`write_report` reads only the serialised results named in ``<run>/run.json``
(image sets, score tables, summary, morphology tables, the density model folder) and
writes ``<out>/index.html`` with its figures in ``<out>/figures/``, beside copies of
``summary.json`` and ``scores.parquet``. A missing or unreadable input turns its
section into a note that says what is missing and how to produce it; it never stops
the rest of the report. :func:`write_index` writes ``<reports>/index.html``, ranking
every report in the folder.

The HTML is deterministic: the same inputs give byte-identical pages and figures (no
timestamps, sorted keys, PNGs without metadata), so its structure can be snapshot
tested. The page needs no network and no JavaScript.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from ..errors import DataFormatError, DataNotFoundError, SimcompareError
from . import figures

__all__ = ["GALLERY_SIZE", "REPORT_SCHEMA", "write_index", "write_report"]

log = logging.getLogger(__name__)

#: Number of galaxies in each gallery (least and most typical).
GALLERY_SIZE = 12
#: Schema name of the small ``report.json`` written beside each report for the index.
REPORT_SCHEMA = "simcompare.report"

_HOW_TO_MAKE = {
    "mocks": "render the simulation with 'simcompare render'",
    "observed": "ingest the survey sample with 'simcompare ingest'",
    "model": "train the density model with 'simcompare train'",
    "sim_scores": "score the mocks with 'simcompare evaluate'",
    "reference_scores": "score the observed test split with 'simcompare evaluate --split test'",
    "summary": "run 'simcompare compare'",
    "morphology_sim": "measure the mocks with 'simcompare morphology'",
    "morphology_reference": "measure the observed stamps with 'simcompare morphology'",
    "appearance": "run 'simcompare score' (its appearance stage writes it)",
    "appearance_arrays": "run 'simcompare score' (its appearance stage writes it)",
}
_MORPH_COLUMNS = (
    ("gini", "Gini coefficient G", ""),
    ("m20", "M20", ""),
    ("concentration", "concentration C", ""),
    ("asymmetry", "asymmetry A", ""),
    ("smoothness", "smoothness S", ""),
    ("sersic_n", "Sérsic index n", ""),
    ("r_half_arcsec", "half-light radius", "arcsec"),
    ("ellipticity", "ellipticity", ""),
)
_SCORE_COLUMNS = (
    ("llr_peak_nats", "peak likelihood ratio",
     "log p_obs − log p_bg, largest eighth of the stamp [nats]"),
    ("llr_nats", "likelihood ratio", "log p_obs − log p_bg [nats]"),
    ("log_prob_nats", "raw log-likelihood", "log p_obs [nats]"),
    ("bits_per_dim", "bits per dimension", "bits/dim"),
)
#: How strongly the fine-structure axis detects missing fine structure, next to classical
#: morphology (``benchmarks/fine_structure_power.py``; docs/statistics.md, "Power of the
#: fine-structure scores"). The report must not present the weaker axis as the stronger.
FINE_STRUCTURE_POWER = (
    "Measured power: on HSC-like i-band stamps (32 x 32 pixels) of clumpy disc galaxies, "
    "removing the clumps that hold 20% of the light was detected by the peak ratio "
    "of a three-model ensemble with AUROC 0.90 (single models 0.80-0.88), by statmorph's "
    "asymmetry alone with 0.82, and by the classifier on all statmorph parameters (the "
    "global-structure axis of this report) with 0.96. For a difference of this kind "
    "classical morphology is the stronger axis; read the fine-structure result beside it."
)
_HEADLINE = ("auroc", "typical_fraction")
_METRIC_NAMES = {
    "auroc": "AUROC (sim vs observed)",
    "typical_fraction": "typical-set fraction",
    "wasserstein": "Wasserstein distance",
    "median_shift": "median shift",
    "ks_pvalue": "KS p-value",
    "ad_pvalue": "Anderson-Darling p-value",
    "classifier_auroc": "classifier AUROC",
}
_ORDER = ("auroc", "typical_fraction", "median_shift", "wasserstein", "ks_pvalue", "ad_pvalue")


class SectionUnavailable(SimcompareError):
    """A report section cannot be drawn; the message says what is missing."""


# --------------------------------------------------------------------------- formatting


def _num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; an en dash for missing values."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "–"
    if 1e3 <= abs(v) < 1e6:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def _ci(ci: Any) -> str:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return "–"
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _stat(entry: Any) -> str:
    """``value [lo, hi]`` (plus ``p = ...`` when present) of a summary statistic."""
    if not isinstance(entry, Mapping):
        return _num(entry)
    parts = []
    if "value" in entry:
        parts.append(_num(entry["value"]))
    if "ci" in entry:
        parts.append(_ci(entry["ci"]))
    for key in ("pvalue", "p_value"):
        if key in entry:
            parts.append(f"p = {_num(entry[key], 2)}")
    return " ".join(parts) if parts else "–"


def _background_text(info: dict[str, Any]) -> str:
    """'sersic' plus the observing conditions of its renderings, as training.json records them."""
    kind = str(info.get("background", "–"))
    bg = info.get("background_info") or {}
    if kind != "sersic" or "conditions" not in bg:
        return kind
    if bg["conditions"] == "survey":
        return "Sérsic re-renderings with the survey's PSF and noise"
    share = bg.get("fraction_at_survey_conditions")
    text = (f"Sérsic re-renderings, {bg['conditions']} observing conditions (noise ×"
            f"{_num(bg['noise_scale'][0], 2)}–{_num(bg['noise_scale'][1], 2)} in "
            f"{_num(100 * bg['noise_probability'], 2)} %, PSF width ×"
            f"{_num(bg['psf_scale'][0], 2)}–{_num(bg['psf_scale'][1], 2)} in "
            f"{_num(100 * bg['psf_probability'], 2)} % of them")
    if share is not None:
        text += f"; {_num(100 * share, 2)} % at the survey's own"
    return text + ")"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """run.json and lazily loaded inputs, with reasons for what is missing."""

    folder: Path
    meta: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> _Run:
        path = folder / "run.json"
        if not path.is_file():
            msg = (f"{path}: no run.json; point --run at a run folder written by "
                   "'simcompare score' (<workspace>/.simcompare/runs/<sim>_<survey>/)")
            raise DataNotFoundError(msg)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            msg = f"{path}: not valid JSON ({exc}); re-run 'simcompare score' to rewrite it"
            raise DataFormatError(msg) from None
        if not isinstance(meta, dict):
            msg = f"{path}: expected a JSON object, got {type(meta).__name__}"
            raise DataFormatError(msg)
        return cls(folder=folder, meta=meta)

    @property
    def name(self) -> str:
        return f"{self.meta.get('sim', '?')}_{self.meta.get('survey', '?')}"

    def path(self, key: str) -> Path:
        paths = self.meta.get("paths") or {}
        value = paths.get(key)
        if not value:
            msg = f"run.json names no '{key}' file; {_HOW_TO_MAKE.get(key, 'produce it')}"
            raise SectionUnavailable(msg)
        p = Path(value)
        if not p.is_absolute():
            p = self.folder / p
        if not p.exists():
            msg = (f"the '{key}' file named in run.json ({value}) does not exist; "
                   f"{_HOW_TO_MAKE.get(key, 'produce it')}")
            raise SectionUnavailable(msg)
        return p

    def _cached(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self.cache:
            try:
                self.cache[key] = load()
            except SectionUnavailable as exc:
                self.cache[key] = exc
            except (SimcompareError, OSError, ValueError, KeyError) as exc:
                self.cache[key] = SectionUnavailable(f"could not read the '{key}' input: {exc}")
        value = self.cache[key]
        if isinstance(value, SectionUnavailable):
            raise value
        return value

    def table(self, key: str) -> Any:
        import pandas as pd

        return self._cached(key, lambda: pd.read_parquet(self.path(key)))

    def summary(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            data = json.loads(self.path("summary").read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("schema") != "simcompare.summary":
                msg = "summary file is not a simcompare.summary JSON object; re-run 'simcompare compare'"
                raise SectionUnavailable(msg)
            return data

        return self._cached("summary", load)

    def appearance(self) -> dict[str, Any]:
        """The appearance stage's ``appearance.json`` (classifier test, alignment, maps)."""
        def load() -> dict[str, Any]:
            data = json.loads(self.path("appearance").read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("schema") != "simcompare.appearance":
                msg = ("the appearance file is not a simcompare.appearance JSON object; "
                       "re-run 'simcompare score'")
                raise SectionUnavailable(msg)
            return data

        return self._cached("appearance", load)

    def appearance_arrays(self) -> dict[str, np.ndarray]:
        """The appearance stage's arrays (``appearance.npz``)."""
        def load() -> dict[str, np.ndarray]:
            with np.load(self.path("appearance_arrays"), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}

        return self._cached("appearance_arrays", load)

    def catalog(self, key: str) -> dict[str, np.ndarray]:
        from .. import imageset

        return self._cached(f"{key}:catalog", lambda: imageset.read_catalog(self.path(key)))

    def header(self, key: str) -> Any:
        """The ImageSet with only its first image read (bands, provenance, pixel scale)."""
        from .. import imageset

        def load() -> Any:
            n = len(self.catalog(key)["object_id"])
            if n == 0:
                msg = f"the '{key}' image set is empty"
                raise SectionUnavailable(msg)
            return imageset.read(self.path(key), index=np.array([0]))

        return self._cached(f"{key}:header", load)

    def images(self, key: str, rows: Sequence[int]) -> np.ndarray:
        """Images of ``rows`` (in that order), masked pixels set to 0, shape (K, B, H, W)."""
        from .. import imageset

        rows = np.asarray(rows, int)
        if rows.size == 0:
            return np.zeros((0, 0, 0, 0), np.float32)
        uniq, inverse = np.unique(rows, return_inverse=True)
        try:
            s = imageset.read(self.path(key), index=uniq)
        except (SimcompareError, OSError) as exc:
            msg = f"could not read the '{key}' images: {exc}"
            raise SectionUnavailable(msg) from None
        img = s.images if s.mask is None else np.where(s.mask == 0, s.images, 0.0)
        return np.asarray(img, np.float32)[inverse]


def _rows_for(ids: np.ndarray, catalog_ids: np.ndarray, *, same_order: bool) -> np.ndarray:
    """Row of each id in an image set (-1 where absent); positional when ``same_order``."""
    if same_order:
        return np.arange(len(ids))
    first: dict[int, int] = {}
    for i, oid in enumerate(np.asarray(catalog_ids).tolist()):
        first.setdefault(int(oid), i)
    return np.array([first.get(int(o), -1) for o in np.asarray(ids).tolist()], int)


# --------------------------------------------------------------------------- sections


def _section(sid: str, title: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one section builder; an unavailable input becomes the section's note."""
    try:
        body = build()
        return {"id": sid, "title": title, "ok": True, "missing": [], **body}
    except SectionUnavailable as exc:
        log.warning("report section %r not drawn: %s", sid, exc)
        return {"id": sid, "title": title, "ok": False, "missing": [str(exc)]}


def _score_column(run: _Run) -> str:
    try:
        column = run.summary().get("column")
    except SectionUnavailable:
        column = None
    return str(column or "llr_peak_nats")


def _metric_row(name: str, entry: Mapping[str, Any], directions: Mapping[str, Any] | None = None,
                ) -> dict[str, Any]:
    null = entry.get("null")
    return {
        "key": name,
        "name": _METRIC_NAMES.get(name, name.replace("_", " ")),
        "value": _num(entry.get("value")),
        "ci": _ci(entry.get("ci")),
        "null_value": _num(entry.get("null_value")),
        "null": _num(null.get("value")) if isinstance(null, Mapping) else _num(null),
        "null_ci": _ci(null.get("ci")) if isinstance(null, Mapping) else "–",
        "contains": entry.get("ci_contains_null_value"),
        "meaning": str((directions or {}).get(name, "")),
    }


def _metric_rows(metrics: Any, directions: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows for a ``metrics`` mapping, the usual metrics first, then the rest by name."""
    if not isinstance(metrics, Mapping):
        return []
    keys = [k for k in _ORDER if k in metrics] + sorted(k for k in metrics if k not in _ORDER)
    return [_metric_row(k, metrics[k], directions) for k in keys if isinstance(metrics[k], Mapping)]


def _axis(key: str, title: str, what: str, ax: Any, metrics: Mapping[str, Any],
          label: str) -> dict[str, Any]:
    base = {"key": key, "title": title, "what": what, "label": label, "present": False,
            "reason": "the summary has no such axis"}
    if not isinstance(ax, Mapping):
        return base
    if ax.get("value") is None:
        return base | {"reason": str(ax.get("skipped") or "not computed")}
    metric = str(ax.get("metric") or "?")
    null = ax.get("null")
    contains = ax.get("ci_contains_null_value")
    if contains is None and isinstance(metrics.get(metric), Mapping):
        contains = metrics[metric].get("ci_contains_null_value")
    params = ax.get("parameters")
    on = (f"{ax['column']}" if ax.get("column") else
          ", ".join(str(p) for p in params) if isinstance(params, list) and params else "")
    return base | {
        "present": True, "reason": "",
        "metric": _METRIC_NAMES.get(metric, metric.replace("_", " ")), "on": on,
        "value": _num(ax.get("value")), "ci": _ci(ax.get("ci")),
        "null": _num(null.get("value")) if isinstance(null, Mapping) else "–",
        "null_ci": _ci(null.get("ci")) if isinstance(null, Mapping) else "–",
        "contains": contains,
        **_axis_floor(ax),
    }


def _axis_floor(ax: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline floor beside an axis: its value, CI, and the simulation's difference."""
    pf = ax.get("pipeline_floor")
    if not isinstance(pf, Mapping) or pf.get("value") is None:
        return {"floor": None}
    diff = pf.get("difference") if isinstance(pf.get("difference"), Mapping) else {}
    share = pf.get("share_of_distance")
    return {"floor": {
        "value": _num(pf.get("value")), "ci": _ci(pf.get("ci")),
        "particles": _num(pf.get("particles")),
        "diff": _num(diff.get("value")), "diff_ci": _ci(diff.get("ci")),
        "beyond": None if not diff else not diff.get("ci_contains_zero"),
        "share": "–" if share is None else f"{100 * float(share):.0f}%",
    }}


def _floor(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The pipeline's own floor: what the render path alone does to the observed galaxies."""
    s = run.summary()
    block = s.get("pipeline_floor")
    if not isinstance(block, Mapping):
        msg = "the summary has no pipeline floor; rerun 'simcompare score' with this version"
        raise SectionUnavailable(msg)
    if block.get("skipped"):
        msg = f"the pipeline floor was not measured: {block['skipped']}"
        raise SectionUnavailable(msg)
    axes_in = s.get("axes") if isinstance(s.get("axes"), Mapping) else {}
    rows = []
    for key, title in (("fine_structure", "fine structure (ratio AUROC)"),
                       ("global_structure", "global structure (classifier)")):
        ax = axes_in.get(key) if isinstance(axes_in.get(key), Mapping) else {}
        f = _axis_floor(ax).get("floor")
        rows.append({"axis": title, "sim": _num(ax.get("value")), "sim_ci": _ci(ax.get("ci")),
                     **(f or {"value": "–", "ci": "–", "diff": "–", "diff_ci": "–",
                              "share": "–", "beyond": None})})
    params = []
    morph = s.get("morphology") if isinstance(s.get("morphology"), Mapping) else {}
    for name, entry in morph.items():
        pf = entry.get("pipeline_floor") if isinstance(entry, Mapping) else None
        if not isinstance(pf, Mapping) or not isinstance(pf.get("auroc"), Mapping):
            continue
        a = pf["auroc"]
        diff = a.get("difference") if isinstance(a.get("difference"), Mapping) else {}
        params.append({"name": name, "sim": _stat(entry.get("auroc")),
                       "floor": _stat(a), "diff": _stat(diff),
                       "beyond": None if not diff else not diff.get("ci_contains_zero")})
    curve = [p for p in block.get("curve") or [] if isinstance(p, Mapping)]
    figure = None
    curve_rows = []
    for p in sorted(curve, key=lambda p: float(p.get("particles", 0))):
        fine = p.get("fine_structure") or {}
        glob = p.get("global_structure") or {}
        curve_rows.append({"particles": _num(p.get("particles")),
                           "n": _num(p.get("n_galaxies")),
                           "fine": _stat(fine), "global": _stat(glob)})
    if curve:
        figures.floor_curve(curve, path=fig_dir / "floor_curve.png",
                            marks={"simulation's count": block.get("particles")})
        figure = "figures/floor_curve.png"
    at = block.get("vanishes_at_particles")
    if not curve:
        vanish = ("The floor was measured at one particle count only; run 'simcompare score' "
                  "with --floor-curve to see at which count it vanishes.")
    elif at is None:
        vanish = (f"The floor does not vanish up to {_num(max(float(p['particles']) for p in curve))}"
                  " particles per galaxy.")
    else:
        vanish = f"The floor vanishes (every axis' CI holds 0.5) from {_num(at)} particles per galaxy on."
    return {"rows": rows, "params": params, "figure": figure, "curve": curve_rows,
            "vanish": vanish, "particles": _num(block.get("particles")),
            "particles_source": str(block.get("particles_source") or ""),
            "n_galaxies": _num(block.get("n_galaxies")),
            "definition": str(block.get("definition") or ""),
            "exclusions": _json(block.get("exclusions") or {})}


def _any_label(ax: Any) -> str:
    if not isinstance(ax, Mapping) or ax.get("value") is None:
        return ""
    return "differs" if ax.get("detected") else "indistinguishable"


def _verdict(run: _Run) -> dict[str, Any]:
    s = run.summary()
    metrics = s.get("metrics") if isinstance(s.get("metrics"), Mapping) else {}
    verdict = s.get("verdict") if isinstance(s.get("verdict"), Mapping) else {}
    directions = s.get("directions") if isinstance(s.get("directions"), Mapping) else {}
    axes_in = s.get("axes") if isinstance(s.get("axes"), Mapping) else {}
    axes = [
        _axis("fine_structure", "Fine structure",
              "structure beyond a smooth profile: the likelihood ratio of the flows",
              axes_in.get("fine_structure"), metrics, str(verdict.get("fine_structure", ""))),
        _axis("global_structure", "Global structure",
              "sizes, profiles, shapes: statmorph parameters on the same stamps",
              axes_in.get("global_structure"), metrics, str(verdict.get("global_structure", ""))),
    ]
    if "any_difference" in axes_in:  # summaries of 'simcompare compare' alone have two axes
        axes.append(_axis("any_difference", "Any difference",
                          "an image classifier (CNN) trained to tell simulated from observed "
                          "stamps, out-of-fold", axes_in.get("any_difference"), metrics,
                          _any_label(axes_in.get("any_difference"))))
    notes = []
    if s.get("column_fallback_reason"):
        notes.append(str(s["column_fallback_reason"]))
    if verdict.get("too_few_galaxies"):
        notes.append("too few galaxies for a verdict; render or ingest more galaxies")
    n = s.get("n") or {}
    return {
        "text": str(verdict.get("text", "")),
        "axes": axes,
        "headline": [r for r in _metric_rows(metrics, directions) if r["key"] in _HEADLINE],
        "metrics": _metric_rows(metrics, directions),
        "n_sim": _num(n.get("sim")), "n_ref": _num(n.get("reference")),
        "column": s.get("column", ""), "confidence": _num(s.get("confidence")),
        "n_bootstrap": _num(s.get("n_bootstrap")), "n_null": _num(s.get("n_null")),
        "notes": notes,
    }


def _scores(run: _Run, fig_dir: Path) -> dict[str, Any]:
    sim = run.table("sim_scores")
    try:
        ref = run.table("reference_scores")
        missing = []
    except SectionUnavailable as exc:
        ref, missing = None, [str(exc)]
    panels, rows = [], []
    for col, title, unit in _SCORE_COLUMNS:
        if col not in sim.columns:
            continue
        r = ref[col].to_numpy(float) if ref is not None and col in ref.columns else None
        s_vals = sim[col].to_numpy(float)
        panels.append({"title": title, "xlabel": unit, "sim": s_vals, "ref": r, "legend": True})
        rows.append({
            "name": title, "unit": unit,
            "sim_median": _num(np.nanmedian(s_vals) if np.isfinite(s_vals).any() else None),
            "ref_median": _num(np.nanmedian(r) if r is not None and np.isfinite(r).any() else None),
            "sim_nonfinite": int((~np.isfinite(s_vals)).sum()),
            "ref_nonfinite": "–" if r is None else int((~np.isfinite(r)).sum()),
        })
    if not panels:
        msg = (f"the sim_scores table has none of the score columns "
               f"{[c for c, _, _ in _SCORE_COLUMNS]}; re-run 'simcompare evaluate'")
        raise SectionUnavailable(msg)
    figures.histogram_panels(panels, path=fig_dir / "scores.png", ncols=len(panels))
    return {"figure": "figures/scores.png", "rows": rows, "notes": missing}


def _log_edges(x: np.ndarray, n_bins: int) -> np.ndarray | None:
    x = x[np.isfinite(x)]
    if x.size < 3:
        return None
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    return edges if edges.size >= 2 else None


def _trends(run: _Run, fig_dir: Path, *, seed: int, confidence: float) -> dict[str, Any]:
    sim = run.table("sim_scores")
    column = _score_column(run)
    if column not in sim.columns:
        msg = f"the sim_scores table has no '{column}' column (the summary's score column)"
        raise SectionUnavailable(msg)
    try:
        ref = run.table("reference_scores")
    except SectionUnavailable:
        ref = None
    sizes = {}
    for key, frame in (("morphology_sim", sim), ("morphology_reference", ref)):
        try:
            morph = run.table(key).drop_duplicates("object_id").set_index("object_id")
            if frame is not None and "r_half_arcsec" in morph.columns:
                sizes[key] = frame["object_id"].map(morph["r_half_arcsec"]).to_numpy(float)
        except (SectionUnavailable, KeyError):
            pass
    rng = np.random.default_rng(seed)
    panels, notes = [], []

    def values(frame: Any, col: str, *, log10: bool, floor: float | None = None) -> np.ndarray | None:
        if frame is None or col not in frame.columns:
            return None
        v = frame[col].to_numpy(float)
        if floor is not None:
            v = np.where(np.isfinite(v), np.maximum(v, floor), v)
        if log10:
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
        return v

    specs: list[tuple[str, str, Callable[[Any, str], np.ndarray | None]]] = [
        ("stellar mass", "log10 M* [Msun]",
         lambda f, _k: values(f, "stellar_mass_msun", log10=True)),
    ]
    if "morphology_sim" in sizes:
        specs.append(("size", "log10 r_half (statmorph, same stamps) [arcsec]",
                      lambda _f, k: _log10(sizes[k]) if k in sizes else None))
    else:
        for col, label in (("half_light_radius_arcsec", "log10 r_half [arcsec]"),
                           ("half_mass_radius_kpc", "log10 r_half,mass [kpc]")):
            if col in sim.columns:
                specs.append(("size", label, lambda f, _k, c=col: values(f, c, log10=True)))
                break
    specs.append(("star formation rate", "log10 SFR [Msun/yr] (floored at 1e-3)",
                  lambda f, _k: values(f, "sfr_msun_per_yr", log10=True, floor=1e-3)))
    y_sim = sim[column].to_numpy(float)
    y_ref = None if ref is None or column not in ref.columns else ref[column].to_numpy(float)
    for what, xlabel, get in specs:
        xs = get(sim, "morphology_sim")
        if xs is None or np.isfinite(xs).sum() < 3:
            notes.append(f"no {what} for the simulated galaxies: trend not drawn")
            continue
        edges = _log_edges(xs, 5)
        if edges is None:
            notes.append(f"too few distinct {what} values for bins")
            continue
        series = [{"label": "simulated", "kind": "sim", "x": xs, "y": y_sim,
                   "bins": figures.binned_medians(xs, y_sim, edges=edges, rng=rng,
                                                  confidence=confidence)}]
        xr = get(ref, "morphology_reference") if y_ref is not None else None
        if xr is not None and np.isfinite(xr).sum() >= 3:
            series.append({"label": "observed (held out)", "kind": "ref", "x": xr, "y": y_ref,
                           "bins": figures.binned_medians(xr, y_ref, edges=edges, rng=rng,
                                                          confidence=confidence)})
        else:
            notes.append(f"no {what} for the held-out observed galaxies")
        panels.append({"what": what, "xlabel": xlabel, "ylabel": f"score {column}", "series": series})
    if not panels:
        msg = "no galaxy property (stellar mass, size, SFR) in the score tables; trends not drawn"
        raise SectionUnavailable(msg)
    figures.trend_panels(panels, path=fig_dir / "trends.png")
    per_bin, matched = [], {}
    try:
        s = run.summary()
        per_bin = _per_bin_rows(s.get("per_bin"))
        matched = _matched(s.get("matched"), s.get("directions"))
    except SectionUnavailable as exc:
        notes.append(str(exc))
    return {"figure": "figures/trends.png", "whats": [p["what"] for p in panels], "notes": notes,
            "per_bin": per_bin, "matched": matched, "column": column,
            "confidence": _num(confidence)}


def _per_bin_rows(entries: Any) -> list[dict[str, Any]]:
    """One row per bin of the summary's ``per_bin`` list."""
    rows = []
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, Mapping):
            continue
        metrics = e.get("metrics") if isinstance(e.get("metrics"), Mapping) else {}
        n = e.get("n") if isinstance(e.get("n"), Mapping) else {}
        transform = e.get("transform")
        column = str(e.get("column", "?"))
        rows.append({
            "column": f"log10 {column}" if transform == "log10" else column,
            "bin": _ci(e.get("bin")),
            "n_sim": _num(n.get("sim")), "n_ref": _num(n.get("reference")),
            "auroc": _stat(metrics.get("auroc")) if "auroc" in metrics else "–",
            "typical": _stat(metrics.get("typical_fraction")) if "typical_fraction" in metrics else "–",
            "shift": _stat(metrics.get("median_shift")) if "median_shift" in metrics else "–",
            "skipped": str(e.get("skipped", "")),
        })
    return rows


def _matched(entry: Any, directions: Any) -> dict[str, Any]:
    """The matched comparison: method, columns, sizes and metrics (or why it was skipped)."""
    if not isinstance(entry, Mapping):
        return {}
    n = entry.get("n") if isinstance(entry.get("n"), Mapping) else {}
    columns = entry.get("columns") if isinstance(entry.get("columns"), list) else []
    transform = entry.get("transform") if isinstance(entry.get("transform"), Mapping) else {}
    return {
        "columns": ", ".join(f"{c} ({transform.get(c, 'none')})" for c in columns) or "–",
        "method": str(entry.get("method", "")),
        "n_sim": _num(n.get("sim")), "n_ref": _num(n.get("reference")),
        "n_bins": _num(entry.get("n_bins_used")),
        "metrics": _metric_rows(entry.get("metrics"),
                                directions if isinstance(directions, Mapping) else None),
        "skipped": str(entry.get("skipped", "")),
    }


@dataclass
class _Stamps:
    """Writes composites and per-band stamps with one shared stretch."""

    fig_dir: Path
    bands: tuple[str, ...]
    q: float
    stretch: float
    choice: tuple[int, int, int] | None

    def composite(self, image: np.ndarray) -> np.ndarray:
        if self.choice is None:
            return figures.asinh_grey(image.mean(axis=0), stretch=self.stretch, q=self.q)
        r, g, b = (image[i] for i in self.choice)
        return figures.lupton_rgb(r, g, b, stretch=self.stretch, q=self.q)

    def write(self, stem: str, image: np.ndarray, *, bands: bool = True) -> dict[str, Any]:
        figures.write_png(self.fig_dir / f"{stem}.png", self.composite(image))
        if not bands:
            return {"src": f"figures/{stem}.png", "bands": []}
        out = []
        for i, band in enumerate(self.bands):
            name = f"{stem}_{_safe(band)}.png"
            figures.write_png(self.fig_dir / name,
                              figures.asinh_grey(image[i], stretch=self.stretch, q=self.q))
            out.append({"band": band, "src": f"figures/{name}"})
        return {"src": f"figures/{stem}.png", "bands": out}


def _stamp_writer(fig_dir: Path, bands: tuple[str, ...], calib: np.ndarray) -> _Stamps:
    """A stamp writer whose asinh stretch is calibrated on the stamps ``calib``."""
    choice = figures.rgb_band_choice(bands)
    intensity = calib[:, list(choice)].mean(axis=1) if choice else calib.mean(axis=1)
    q, stretch = figures.asinh_calibration(intensity)
    return _Stamps(fig_dir=fig_dir, bands=bands, q=q, stretch=stretch, choice=choice)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))


def _ranked(run: _Run) -> dict[str, Any]:
    """Least and most typical simulated galaxies, their image rows and look-alikes."""
    def build() -> dict[str, Any]:
        sim = run.table("sim_scores")
        column = _score_column(run)
        if column not in sim.columns:
            msg = f"the sim_scores table has no '{column}' column"
            raise SectionUnavailable(msg)
        score = sim[column].to_numpy(float)
        ids = sim["object_id"].to_numpy()
        mock_ids = run.catalog("mocks")["object_id"]
        same = len(mock_ids) == len(ids) and np.array_equal(mock_ids, ids)
        rows = _rows_for(ids, mock_ids, same_order=same)
        good = np.flatnonzero(np.isfinite(score) & (rows >= 0))
        if good.size == 0:
            msg = "no simulated galaxy has both a finite score and an image"
            raise SectionUnavailable(msg)
        try:
            ref = run.table("reference_scores")
            ref_scores = ref[column].to_numpy(float) if column in ref.columns else None
        except SectionUnavailable:
            ref = ref_scores = None
        centre = (np.nanmedian(ref_scores) if ref_scores is not None and np.isfinite(ref_scores).any()
                  else float(np.median(score[good])))
        # typicality: distance from the observed median on either side (both tails are
        # atypical); the most typical are the closest, the least typical the furthest
        distance = np.abs(score[good] - centre)
        order = np.lexsort((np.arange(good.size), distance))
        k = min(GALLERY_SIZE, good.size)
        most = good[order[:k]]
        far = order[::-1]
        if good.size >= 2 * k:
            far = far[~np.isin(far, order[:k])]
        least = good[far[:k]]
        return {"sim": sim, "score": score, "rows": rows, "least": least, "most": most,
                "centre": centre, "column": column, "ref": ref,
                "n_unranked": int(len(score) - good.size)}

    return run._cached("ranked", build)


def _lookalikes(run: _Run, sim_pos: np.ndarray) -> dict[str, Any]:
    """Nearest observed galaxy to each simulated galaxy at ``sim_pos`` (rows of sim_scores).

    By appearance (the appearance stage's embedding) when the run has it; otherwise
    nearest in stellar mass and size, or in pixels.
    """
    try:
        return _lookalikes_by_appearance(run, sim_pos)
    except SectionUnavailable:
        pass
    ranked = _ranked(run)
    sim = ranked["sim"]
    obs_cat = run.catalog("observed")
    obs_ids = np.asarray(obs_cat["object_id"])
    pool = np.arange(len(obs_ids))
    ref = ranked["ref"]
    pool_note = "all observed galaxies in the sample"
    if ref is not None and "object_id" in ref.columns:
        in_ref = np.isin(obs_ids, ref["object_id"].to_numpy())
        if in_ref.any():
            pool = np.flatnonzero(in_ref)
            pool_note = "the held-out observed galaxies (the reference of the comparison)"
    feats_sim, feats_obs, names = [], [], []
    if "stellar_mass_msun" in sim.columns and "stellar_mass_msun" in obs_cat:
        feats_sim.append(_log10(sim["stellar_mass_msun"].to_numpy(float)[sim_pos]))
        feats_obs.append(_log10(np.asarray(obs_cat["stellar_mass_msun"], float)[pool]))
        names.append("log10 stellar mass (catalogue)")
    try:
        ms = run.table("morphology_sim").drop_duplicates("object_id").set_index("object_id")
        mr = run.table("morphology_reference").drop_duplicates("object_id").set_index("object_id")
        if "r_half_arcsec" in ms.columns and "r_half_arcsec" in mr.columns:
            rs = sim["object_id"].iloc[sim_pos].map(ms["r_half_arcsec"]).to_numpy(float)
            ro = pd_series(obs_ids[pool]).map(mr["r_half_arcsec"]).to_numpy(float)
            if np.isfinite(ro).sum() >= 1 and np.isfinite(rs).all():
                feats_sim.append(_log10(rs))
                feats_obs.append(_log10(ro))
                names.append("log10 half-light radius (statmorph on the same stamps)")
    except SectionUnavailable:
        pass
    if names and all(np.isfinite(f).all() for f in feats_sim):
        fo = np.stack(feats_obs, axis=1)
        keep = np.isfinite(fo).all(axis=1)
        fo, pool_k = fo[keep], pool[keep]
        if pool_k.size:
            std = fo.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            fs = np.stack(feats_sim, axis=1)
            d = np.sqrt((((fs[:, None, :] - fo[None, :, :]) / std) ** 2).sum(axis=2))
            best = np.argmin(d, axis=1)
            return {"rows": pool_k[best], "distance": d[np.arange(len(best)), best],
                    "definition": (f"nearest in {' and '.join(names)}, each standardised by "
                                   f"its spread among {pool_note} (Euclidean distance)"),
                    "ids": obs_ids[pool_k[best]]}
    # pixel space: flux-normalised images, Euclidean distance
    pool = pool[:2000]
    sim_img = run.images("mocks", ranked["rows"][sim_pos])
    obs_img = run.images("observed", pool)
    if sim_img.shape[1:] != obs_img.shape[1:]:
        msg = "simulated and observed stamps differ in shape; no look-alikes can be matched"
        raise SectionUnavailable(msg)
    a = _normalised(sim_img)
    b = _normalised(obs_img)
    d = np.sqrt(np.maximum(
        (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0))
    best = np.argmin(d, axis=1)
    return {"rows": pool[best], "distance": d[np.arange(len(best)), best],
            "definition": (f"nearest in pixel space among {pool_note} (first 2000): "
                           "Euclidean distance between stamps each divided by its total flux"),
            "ids": obs_ids[pool[best]]}


def _lookalikes_by_appearance(run: _Run, sim_pos: np.ndarray) -> dict[str, Any]:
    arrays = run.appearance_arrays()
    info = run.appearance().get("lookalikes") or {}
    sim = _ranked(run)["sim"]
    sim_ids = np.asarray(arrays["sim_object_id"])
    where = _rows_for(sim["object_id"].to_numpy()[sim_pos], sim_ids, same_order=False)
    if (where < 0).any():
        msg = "the appearance arrays do not cover every simulated galaxy shown"
        raise SectionUnavailable(msg)
    obs_ids = np.asarray(run.catalog("observed")["object_id"])
    look_ids = np.asarray(arrays["lookalike_object_id"])[where, 0]
    rows = _rows_for(look_ids, obs_ids, same_order=False)
    if (rows < 0).any():
        msg = "a look-alike by appearance is not in the observed image set"
        raise SectionUnavailable(msg)
    return {"rows": rows, "ids": look_ids,
            "distance": np.asarray(arrays["lookalike_distance"])[where, 0],
            "definition": str(info.get("definition", "nearest by appearance")) + " (among "
                          + str(info.get("pool", "the observed galaxies")) + ")",
            "all_ids": np.asarray(arrays["lookalike_object_id"])[where],
            "all_distance": np.asarray(arrays["lookalike_distance"])[where]}


def pd_series(values: np.ndarray) -> Any:
    """A pandas Series of ``values`` (kept as a helper so pandas stays a lazy import)."""
    import pandas as pd

    return pd.Series(values)


def _normalised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    total = np.abs(flat).sum(axis=1, keepdims=True)
    return flat / np.where(total > 0, total, 1.0)


def _log10(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)


def _galleries(run: _Run, fig_dir: Path) -> dict[str, Any]:
    ranked = _ranked(run)
    header = run.header("mocks")
    bands = tuple(header.bands)
    sim, score, column = ranked["sim"], ranked["score"], ranked["column"]
    notes = []
    if ranked["n_unranked"]:
        notes.append(f"{ranked['n_unranked']} simulated galaxies with a non-finite score or no "
                     "image are not ranked")
    positions = np.concatenate([ranked["least"], ranked["most"]])
    try:
        look = _lookalikes(run, positions)
        obs_bands = tuple(run.header("observed").bands)
        if obs_bands != bands:
            msg = f"observed bands {list(obs_bands)} differ from simulated bands {list(bands)}"
            raise SectionUnavailable(msg)
        obs_img = run.images("observed", look["rows"])
        more_img = None
        if "all_ids" in look:
            obs_ids_all = np.asarray(run.catalog("observed")["object_id"])
            pairs = [(j, m) for j in range(look["all_ids"].shape[0])
                     for m in range(1, look["all_ids"].shape[1]) if look["all_ids"][j, m] >= 0]
            extra_rows = _rows_for(np.array([look["all_ids"][p] for p in pairs], np.int64),
                                   obs_ids_all, same_order=False)
            if pairs and (extra_rows >= 0).all():
                more_img = dict(zip(pairs, run.images("observed", extra_rows), strict=True))
    except SectionUnavailable as exc:
        look, obs_img, more_img = None, None, None
        notes.append(f"no observed look-alikes: {exc}")
    sim_img = run.images("mocks", ranked["rows"][positions])
    calib = obs_img if obs_img is not None and len(obs_img) else sim_img
    stamps = _stamp_writer(fig_dir, bands, calib)
    run.cache["stamps"] = stamps
    choice, stretch = stamps.choice, stamps.stretch
    ref_ids = None if ranked["ref"] is None else ranked["ref"]["object_id"].to_numpy()
    ref_scores = (None if ranked["ref"] is None or column not in ranked["ref"].columns
                  else ranked["ref"][column].to_numpy(float))
    groups = []
    for gid, title, pos_slice in (("least-typical", "least typical", slice(0, len(ranked["least"]))),
                                  ("most-typical", "most typical",
                                   slice(len(ranked["least"]), len(positions)))):
        items = []
        for j in range(pos_slice.start, pos_slice.stop):
            p = positions[j]
            rank = j - pos_slice.start + 1
            stem = f"{gid}_{rank:02d}"
            item = {"rank": rank, "object_id": int(sim["object_id"].iloc[p]),
                    "score": _num(score[p]),
                    "side": "above" if score[p] > ranked["centre"] else "below",
                    "percentile": (_num(sim["percentile"].iloc[p]) if "percentile" in sim.columns
                                   else "–"),
                    "sim": stamps.write(f"{stem}_sim", sim_img[j]), "obs": None, "more": []}
            if look is not None:
                oid = int(look["ids"][j])
                obs_score = "–"
                if ref_ids is not None and ref_scores is not None:
                    hit = np.flatnonzero(ref_ids == oid)
                    obs_score = _num(ref_scores[hit[0]]) if hit.size else "–"
                item["obs"] = {"object_id": oid, "distance": _num(look["distance"][j]),
                               "score": obs_score, **stamps.write(f"{stem}_obs", obs_img[j])}
                if "all_ids" in look and more_img is not None:
                    for m in range(1, look["all_ids"].shape[1]):
                        mid = int(look["all_ids"][j, m])
                        if mid < 0:
                            continue
                        item["more"].append({
                            "object_id": mid, "distance": _num(look["all_distance"][j, m]),
                            **stamps.write(f"{stem}_obs{m + 1}", more_img[(j, m)], bands=False)})
            items.append(item)
        groups.append({"id": gid, "title": title, "items": items})
    rgb = ("grey (mean of all bands)" if choice is None
           else f"R = {bands[choice[0]]}, G = {bands[choice[1]]}, B = {bands[choice[2]]}")
    return {
        "groups": groups, "notes": notes, "column": column, "centre": _num(ranked["centre"]),
        "definition": None if look is None else look["definition"],
        "stretch": {"rgb": rgb, "q": _num(stamps.q), "s": _num(stretch),
                    "unit": header.flux_unit,
                    "calibrated_on": ("the observed look-alike stamps" if obs_img is not None
                                      else "the simulated stamps shown")},
    }


def _training_info(model_dir: Path) -> dict[str, Any] | None:
    """``training.json`` of a model folder (None when absent or unreadable)."""
    try:
        info = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _mismatch(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """Occlusion maps of the least typical simulated galaxies (computed by the appearance stage)."""
    ranked = _ranked(run)
    info = run.appearance().get("maps") or {}
    arrays = run.appearance_arrays()
    ids = np.asarray(arrays["map_object_id"])
    if ids.size == 0:
        msg = str(info.get("note") or "the appearance stage wrote no mismatch maps")
        raise SectionUnavailable(msg)
    maps, base = np.asarray(arrays["maps"]), np.asarray(arrays["map_score"])
    patch = int(arrays["map_patch"])
    sim = ranked["sim"]
    sim_ids = sim["object_id"].to_numpy()
    mock_rows = _rows_for(ids, run.catalog("mocks")["object_id"], same_order=False)
    if (mock_rows < 0).any():
        msg = "a galaxy with a mismatch map is not in the mock image set"
        raise SectionUnavailable(msg)
    images = run.images("mocks", mock_rows)
    stamps = run.cache.get("stamps")
    if not isinstance(stamps, _Stamps):
        stamps = _stamp_writer(fig_dir, tuple(run.header("mocks").bands), images)
    items = []
    for j, oid in enumerate(ids.tolist()):
        stem = f"mismatch_{j + 1:02d}"
        stamps.write(f"{stem}_image", images[j], bands=False)
        m = maps[j]
        limit = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
        big = np.kron(m, np.ones((patch, patch)))
        figures.write_png(fig_dir / f"{stem}_map.png", figures.diverging_rgb(big, limit=limit))
        hit = np.flatnonzero(sim_ids == oid)
        score = ranked["score"][hit[0]] if hit.size else np.nan
        peak = np.unravel_index(int(np.nanargmax(m)), m.shape) if np.isfinite(m).any() else (0, 0)
        items.append({
            "rank": j + 1, "object_id": int(oid),
            "image": f"figures/{stem}_image.png", "map": f"figures/{stem}_map.png",
            "score": _num(score), "recomputed": _num(base[j]),
            "side": "above" if score > ranked["centre"] else "below",
            "limit": _num(limit), "max": _num(float(np.nanmax(m))),
            "min": _num(float(np.nanmin(m))),
            "peak": f"x {peak[1] * patch}-{(peak[1] + 1) * patch - 1}, "
                    f"y {peak[0] * patch}-{(peak[0] + 1) * patch - 1}",
        })
    return {"items": items, "what": str(info.get("score") or "the score"),
            "grid": _num(info.get("grid")), "patch": _num(patch),
            "model": str((run.meta.get("paths") or {}).get("model"))}


def _appearance(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The classifier axis in detail, the alignment fraction and the 2-D appearance map."""
    app = run.appearance()
    c2 = app.get("any_difference") or {}
    try:
        captured = ((run.summary().get("axes") or {}).get("any_difference") or {}).get("captured") or {}
    except SectionUnavailable:
        captured = {}
    null = c2.get("null") or {}
    align = app.get("alignment") or {}
    anull = align.get("null") or {}
    out: dict[str, Any] = {
        "auroc": _num(c2.get("value")), "ci": _ci(c2.get("ci")),
        "null": _num(null.get("value")), "null_ci": _ci(null.get("ci")),
        "null_note": str(null.get("skipped") or ""),
        "detected": "yes" if c2.get("detected") else "no",
        "method": str(c2.get("method", "")), "n": c2.get("n") or {},
        "options": _json(c2.get("options") or {}),
        "captured": [{"axis": name, "share": "–" if captured.get(key) is None
                      else f"{100 * float(captured[key]):.0f}%"}
                     for key, name in (("fine_structure", "fine structure (likelihood ratio)"),
                                       ("global_structure", "global structure (morphology)"))],
        "captured_definition": str(captured.get("definition", "")),
        "alignment": _num(align.get("value")), "alignment_ci": _ci(align.get("ci")),
        "alignment_null": _num(anull.get("value")), "alignment_null_ci": _ci(anull.get("ci")),
        "alignment_definition": str(align.get("definition", "")),
        "observed_share": _num(align.get("mean_observed_share")),
        "expected_share": _num(align.get("expected_rate")),
        "embedding": str((app.get("embedding") or {}).get("method", "")),
        "map_text": str((app.get("embedding") or {}).get("map", "")), "figure": None,
        "timings": _json(app.get("timings_s") or {}),
    }
    arrays = run.appearance_arrays()
    sim_xy, obs_xy = np.asarray(arrays["sim_xy"]), np.asarray(arrays["obs_xy"])
    if len(sim_xy) and len(obs_xy):
        xy = np.concatenate([sim_xy, obs_xy])
        lo, hi = np.percentile(xy, 2, axis=0), np.percentile(xy, 98, axis=0)
        n_grid = 5
        gx, gy = np.linspace(lo[0], hi[0], n_grid), np.linspace(lo[1], hi[1], n_grid)
        cell = (hi - lo) / max(n_grid - 1, 1)
        picks: list[tuple[str, int, float, float]] = []
        for yv in gy:
            for xv in gx:
                d = np.hypot((xy[:, 0] - xv) / max(cell[0], 1e-12), (xy[:, 1] - yv) / max(cell[1], 1e-12))
                k = int(np.argmin(d))
                if d[k] < 0.5:
                    side = "sim" if k < len(sim_xy) else "obs"
                    picks.append((side, k if side == "sim" else k - len(sim_xy), float(xv), float(yv)))
        stamps_rgb = []
        for key, cat_key, side in (("sim", "mocks", "sim"), ("obs", "observed", "obs")):
            chosen = [p for p in picks if p[0] == side]
            if not chosen:
                continue
            ids = np.asarray(arrays["sim_object_id" if side == "sim" else "obs_object_id"])
            rows = _rows_for(ids[[p[1] for p in chosen]], run.catalog(cat_key)["object_id"],
                             same_order=False)
            img = run.images(cat_key, rows)
            writer = run.cache.get("stamps")
            if not isinstance(writer, _Stamps):
                writer = _stamp_writer(fig_dir, tuple(run.header(cat_key).bands), img)
                run.cache["stamps"] = writer
            stamps_rgb += [(p[2], p[3], writer.composite(im), key) for p, im in zip(chosen, img, strict=True)]
        figures.embedding_map(sim_xy, obs_xy, stamps_rgb, cell=cell, path=fig_dir / "appearance_map.png")
        out["figure"] = "figures/appearance_map.png"
        out["n_stamps"] = len(stamps_rgb)
    return out


def _anomalies(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The held-out observed galaxies the density model finds least typical."""
    column = _score_column(run)
    ref = run.table("reference_scores")
    if column not in ref.columns:
        msg = f"the reference_scores table has no '{column}' column"
        raise SectionUnavailable(msg)
    rows, table = anomaly_rows(ref, column=column, n=GALLERY_SIZE)
    obs_rows = _rows_for(ref["object_id"].to_numpy()[rows], run.catalog("observed")["object_id"],
                         same_order=False)
    items = []
    if (obs_rows >= 0).all() and len(obs_rows):
        img = run.images("observed", obs_rows)
        stamps = run.cache.get("stamps")
        if not isinstance(stamps, _Stamps):
            stamps = _stamp_writer(fig_dir, tuple(run.header("observed").bands), img)
        for j, r in enumerate(table):
            items.append({**r, **stamps.write(f"anomaly_{j + 1:02d}", img[j], bands=False)})
    return {"items": items, "rows": table, "column": column, "n_ref": len(ref),
            "rule": ANOMALY_RULE}


def write_anomaly_page(out: Path, *, survey: str, rows: list[dict[str, Any]], images: np.ndarray,
                       bands: tuple[str, ...], column: str, rule: str, n_ranked: int) -> Path:
    """The gallery page of ``simcompare anomalies`` (``out/index.html`` and ``out/figures/``).

    Parameters
    ----------
    out : Path
        Output folder.
    survey : str
        Survey name (the title).
    rows : list of dict
        Display rows, least typical first (:func:`anomaly_rows`).
    images : ndarray, shape (N, B, H, W)
        The galaxies' stamps, in ``rows`` order.
    bands : tuple of str
        Band names of ``images``.
    column : str
        The score ranked.
    rule : str
        How the galaxies were ranked, in words.
    n_ranked : int
        Galaxies ranked.

    Returns
    -------
    Path
        ``out/index.html``.
    """
    import html as _html

    fig_dir = Path(out) / "figures"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir(parents=True)
    cards, table = [], []
    if len(images):
        stamps = _stamp_writer(fig_dir, bands, images)
        for j, r in enumerate(rows):
            src = stamps.write(f"anomaly_{j + 1:02d}", images[j], bands=False)["src"]
            cards.append(f'<figure><img class="stamp" src="{src}" alt="anomalous observed galaxy '
                         f'{r["object_id"]}" width="124" height="124"><figcaption>#{r["rank"]} id '
                         f'{r["object_id"]}<br>score {r["score"]}</figcaption></figure>')
    if rows:
        keys = list(rows[0].keys())
        table.append("<tr>" + "".join(f"<th>{_html.escape(k)}</th>" for k in keys) + "</tr>")
        for r in rows:
            table.append("<tr>" + "".join(f"<td>{_html.escape(str(r[k]))}</td>" for k in keys) + "</tr>")
    esc = _html.escape
    text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Anomalies of "
            f"{esc(survey)}</title><style>figure{{display:inline-block;margin:4px;font-size:12px}}"
            f"td,th{{padding:2px 6px}}</style></head><body><h1>Anomalies of the sky: {esc(survey)}</h1>"
            f"<p>The {len(rows)} of {n_ranked} ranked galaxies with {esc(rule)} (score "
            f"<code>{esc(column)}</code>); table: <code>anomalies.parquet</code>.</p>"
            f"<div class=\"gallery\">{''.join(cards)}</div><table>{''.join(table)}</table>"
            "</body></html>\n")
    page = Path(out) / "index.html"
    _write_text(page, text)
    return page


#: How the anomalies of the sky are chosen (the report and ``simcompare anomalies``).
ANOMALY_RULE = ("the lowest scores among galaxies the density model did not train on: the "
                "galaxies the model finds least like the rest of the survey")


def anomaly_rows(table: Any, *, column: str, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows of the ``n`` lowest finite ``column`` values of a score table, and display rows.

    Parameters
    ----------
    table : DataFrame
        A score table.
    column : str
        The score to rank by (lowest first).
    n : int
        Rows to return.

    Returns
    -------
    (ndarray, list of dict)
        Row positions and one display row per galaxy.
    """
    v = table[column].to_numpy(float)
    good = np.flatnonzero(np.isfinite(v))
    rows = good[np.lexsort((good, v[good]))][:n]
    extra = [c for c in ("percentile", "p_simulated", "stellar_mass_msun", "redshift")
             if c in table.columns]
    out = []
    for rank, r in enumerate(rows, 1):
        out.append({"rank": rank, "object_id": int(table["object_id"].iloc[r]),
                    "score": _num(v[r]),
                    **{c: _num(table[c].iloc[r]) for c in extra}})
    return rows, out


def _model(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The density model's training record: held-out curves, preprocessing, options."""
    model_dir = run.path("model")
    info = _training_info(model_dir)
    if info is None:
        msg = (f"the model folder {model_dir} has no readable training.json; "
               "train the model with 'simcompare train'")
        raise SectionUnavailable(msg)
    records = [r for r in info.get("models") or [] if isinstance(r, Mapping)]
    curves = []
    for r in records:
        hist = [h for h in r.get("history") or [] if isinstance(h, Mapping)]
        if hist:
            curves.append({"label": str(r.get("label", "?")),
                           "epoch": np.array([float(h.get("epoch", np.nan)) for h in hist]),
                           "train": np.array([float(h.get("train_bits_per_dim", np.nan)) for h in hist]),
                           "val": np.array([float(h.get("val_bits_per_dim", np.nan)) for h in hist])})
    figure = None
    if curves:
        figures.training_curves(curves, path=fig_dir / "training.png")
        figure = "figures/training.png"
    rows = [{"label": str(r.get("label", "?")), "epochs": _num(r.get("epochs_run")),
             "best_epoch": _num(r.get("best_epoch")), "best_val": _num(r.get("best_val_bits_per_dim"), 5),
             "stopped_early": "yes" if r.get("stopped_early") else "no",
             "nan_events": len(r.get("nan_events") or []),
             "n_train": _num(r.get("n_train")), "n_val": _num(r.get("n_validation"))}
            for r in records]
    return {
        "figure": figure, "rows": rows,
        "preprocessing": str(info.get("preprocessing", "not recorded")),
        "masked": str(info.get("masked_pixels", "not recorded")),
        "noise_sigma": ", ".join(_num(v, 4) for v in info.get("noise_sigma") or []) or "–",
        "bands": ", ".join(str(b) for b in info.get("bands") or []) or "–",
        "stamp_size": _num(info.get("stamp_size")),
        "background": _background_text(info),
        "options": _json(info.get("options") or {}),
        "background_info": _json(info.get("background_info") or {}),
        "n_members": len(info.get("members") or []),
        "fine_score": _fine_score_text(_score_column(run), len(info.get("members") or [])),
        "power": FINE_STRUCTURE_POWER,
    }


def _fine_score_text(column: str, n_members: int) -> str:
    what = {"llr_peak_nats": "the log-likelihood ratio of the observed-galaxy model to the "
                             "smooth-Sersic background model, summed over the eighth of the "
                             "stamp where it is largest",
            "llr_footprint_nats": "the log-likelihood ratio of the observed-galaxy model to "
                                  "the smooth-Sersic background model, summed over the "
                                  "galaxy's footprint",
            "llr_nats": "the log-likelihood ratio of the observed-galaxy model to the "
                        "smooth-Sersic background model over the whole stamp",
            "log_prob_nats": "the raw log-likelihood (no background model)"}.get(
                column, f"the score column {column}")
    mean = f", mean of {n_members} models" if n_members > 1 else ", one model"
    return what + mean


def _usable(frame: Any) -> np.ndarray:
    """Rows usable for morphology: no failure reason and statmorph flag <= 1 (good, suspect)."""
    keep = np.ones(len(frame), bool)
    if "failure_reason" in frame.columns:
        keep &= (frame["failure_reason"].fillna("").astype(str) == "").to_numpy()
    if "flag" in frame.columns:
        keep &= np.asarray(frame["flag"], float) <= 1
    return keep


def _morph_stats(entry: Any) -> dict[str, str]:
    """Formatted AUROC, median shift, KS and matched AUROC of one morphology parameter."""
    if not isinstance(entry, Mapping):
        return {"auroc": "–", "shift": "–", "ks": "–", "matched": "–", "skipped": ""}
    ks = entry.get("ks") if isinstance(entry.get("ks"), Mapping) else None
    matched = entry.get("matched") if isinstance(entry.get("matched"), Mapping) else {}
    return {
        "auroc": _stat({k: v for k, v in entry["auroc"].items() if k in ("value", "ci")})
        if isinstance(entry.get("auroc"), Mapping) else "–",
        "contains": entry["auroc"].get("ci_contains_null_value")
        if isinstance(entry.get("auroc"), Mapping) else None,
        "shift": _stat(entry.get("median_shift")) if "median_shift" in entry else "–",
        "ks": (f"D = {_num(ks.get('value'))}, p = {_num(ks.get('pvalue'), 2)}" if ks else "–"),
        "matched": _stat({k: v for k, v in matched["auroc"].items() if k in ("value", "ci")})
        if isinstance(matched.get("auroc"), Mapping) else "–",
        "skipped": str(entry.get("skipped", "")),
    }


def _morphology(run: _Run, fig_dir: Path) -> dict[str, Any]:
    ms = run.table("morphology_sim")
    notes = []
    try:
        mr = run.table("morphology_reference")
    except SectionUnavailable as exc:
        mr = None
        notes.append(str(exc))
    if mr is not None and "object_id" in mr.columns:
        # as the comparison does: the reference is the held-out scored objects, when they overlap
        try:
            ref_ids = run.table("reference_scores")["object_id"]
            keep = mr["object_id"].isin(ref_ids)
            if keep.any() and not keep.all():
                mr = mr[keep].reset_index(drop=True)
                notes.append(f"observed morphology restricted to the {int(keep.sum())} held-out "
                             "galaxies that were scored")
        except (SectionUnavailable, KeyError):
            pass

    def good(frame: Any, col: str) -> np.ndarray | None:
        if frame is None or col not in frame.columns:
            return None
        v = frame[col].to_numpy(float)[_usable(frame)]
        return v[np.isfinite(v)]

    summary_morph: Mapping[str, Any] = {}
    try:
        summary_morph = run.summary().get("morphology") or {}
    except SectionUnavailable as exc:
        notes.append(str(exc))
    panels, rows = [], []
    for col, title, unit in _MORPH_COLUMNS:
        vs = good(ms, col)
        if vs is None:
            continue
        vr = good(mr, col)
        label = f"{title} [{unit}]" if unit else title
        panels.append({"title": "", "xlabel": label, "sim": vs, "ref": vr})
        rows.append({
            "name": label,
            "sim_median": _num(np.median(vs)) if vs.size else "–",
            "ref_median": _num(np.median(vr)) if vr is not None and vr.size else "–",
            "n_sim": int(vs.size), "n_ref": "–" if vr is None else int(vr.size),
            **_morph_stats(summary_morph.get(col) if isinstance(summary_morph, Mapping) else None),
        })
    if not panels:
        msg = "the morphology_sim table has none of the statmorph columns; re-run 'simcompare morphology'"
        raise SectionUnavailable(msg)
    figures.histogram_panels(panels, path=fig_dir / "morphology.png", ncols=4, ref_label="observed")
    flags = []
    for label, frame in (("simulated", ms), ("observed", mr)):
        if frame is None:
            continue
        n = len(frame)
        entry = {"population": label, "n": n, "usable": "–", "flagged": "–", "values": [],
                 "reasons": []}
        if n:
            entry["usable"] = f"{100.0 * float(np.mean(_usable(frame))):.1f}%"
        if "flag" in frame.columns and n:
            f = frame["flag"].to_numpy()
            entry["flagged"] = f"{100.0 * float(np.mean(f != 0)):.1f}%"
            vals, counts = np.unique(f, return_counts=True)
            entry["values"] = [{"flag": int(v), "count": int(c)}
                               for v, c in zip(vals, counts, strict=True)]
        if "failure_reason" in frame.columns:
            reasons = frame["failure_reason"].dropna().astype(str)
            reasons = reasons[reasons != ""]
            entry["reasons"] = [{"reason": r, "count": int(c)}
                                for r, c in sorted(reasons.value_counts().items())]
        flags.append(entry)
    return {"figure": "figures/morphology.png", "rows": rows, "flags": flags, "notes": notes}


def _ids_by_reason(excluded_ids: Any) -> dict[str, list[Any]]:
    """Excluded ids grouped by reason, from ``{reason: [ids]}`` or ``{id: reason}``."""
    out: dict[str, list[Any]] = {}
    if not isinstance(excluded_ids, Mapping):
        return out
    for key, value in excluded_ids.items():
        if isinstance(value, list | tuple):
            out.setdefault(str(key), []).extend(value)
        else:
            out.setdefault(str(value), []).append(key)
    return out


def _exclusion_rows(exclusions: Any, excluded_ids: Any = None) -> list[dict[str, Any]]:
    """Table rows (reason, count, ids) from an exclusion ledger.

    ``exclusions`` maps reason to a count, a list of ids, or ``{"count", "ids"}``;
    ``excluded_ids`` (optional) adds the ids, as ``{reason: [ids]}`` or ``{id: reason}``.
    """
    by_reason = _ids_by_reason(excluded_ids)
    rows = []
    ledger = dict(exclusions) if isinstance(exclusions, Mapping) else {}
    for reason in by_reason:
        ledger.setdefault(reason, len(by_reason[reason]))
    for reason, v in sorted(ledger.items(), key=lambda kv: str(kv[0])):
        ids: list[Any] = list(by_reason.get(str(reason), []))
        if isinstance(v, Mapping):
            ids = ids or list(v.get("ids", []) or [])
            count = v.get("count", len(ids))
        elif isinstance(v, list | tuple):
            ids = ids or list(v)
            count = len(v)
        else:
            count = v
        ids = sorted(ids, key=lambda i: (len(str(i)), str(i)))
        shown = ", ".join(str(i) for i in ids[:20])
        if len(ids) > 20:
            shown += f" … ({len(ids) - 20} more in the image set's provenance)"
        rows.append({"reason": str(reason), "count": _num(count), "ids": shown})
    return rows


def _provenance(run: _Run) -> dict[str, Any]:
    meta = run.meta
    prov = meta.get("provenance") or {}
    versions = dict(prov.get("versions") or {})
    if "simcompare" in prov:
        versions = {"simcompare": prov["simcompare"], **versions}
    exclusions, recipes, notes = [], [], []
    for key, label in (("mocks", "simulated galaxies (rendering)"),
                       ("observed", "observed galaxies (ingest)")):
        try:
            p = dict(run.header(key).provenance)
        except SectionUnavailable as exc:
            notes.append(str(exc))
            continue
        if isinstance(p.get("reader_exclusions"), Mapping):
            exclusions.append({"population": "simulated galaxies (selection from the catalogue)",
                               "rows": _exclusion_rows(p["reader_exclusions"])})
        exclusions.append({"population": label,
                           "rows": _exclusion_rows(p.get("exclusions"), p.get("excluded_ids"))})
        if isinstance(p.get("removed_by_cuts"), Mapping) and p["removed_by_cuts"]:
            exclusions.append({"population": f"{label}: removed by catalogue cuts",
                               "rows": _exclusion_rows(p["removed_by_cuts"])})
        recipe = {k: v for k, v in p.items()
                  if k not in ("exclusions", "excluded_ids", "reader_exclusions")}
        recipes.append({"population": label, "json": _json(recipe)})
    if isinstance(prov.get("exclusions"), Mapping):
        exclusions.append({"population": "run", "rows": _exclusion_rows(prov["exclusions"])})
    paths = [{"key": k, "path": str(v)} for k, v in sorted((meta.get("paths") or {}).items())]
    timings = {k: v for k, v in (meta.get("timings_s") or {}).items() if k != "total"}
    cached = meta.get("cached") if isinstance(meta.get("cached"), Mapping) else {}
    keys = meta.get("stage_keys") if isinstance(meta.get("stage_keys"), Mapping) else {}
    total = (meta.get("timings_s") or {}).get("total")
    if total is None and timings:
        total = sum(float(v) for v in timings.values() if isinstance(v, int | float))
    return {
        "versions": [{"name": k, "version": str(v)} for k, v in sorted(versions.items())],
        "hashes": [{"name": k, "hash": str(v)}
                   for k, v in sorted((prov.get("input_hashes") or {}).items())],
        "seeds": [{"name": k, "seed": str(v)} for k, v in sorted((prov.get("seeds") or {}).items())],
        "timings": [{"stage": k, "seconds": _num(v),
                     "cached": "reused from cache" if cached.get(k) else "",
                     "key": str(keys.get(k, ""))} for k, v in sorted(timings.items())],
        "total_time": _num(total),
        "config": _json(meta.get("config") or {}),
        "extra": _json({k: v for k, v in prov.items()
                        if k not in ("simcompare", "versions", "input_hashes", "seeds", "exclusions")}),
        "exclusions": exclusions, "recipes": recipes, "paths": paths, "notes": notes,
    }


# --------------------------------------------------------------------------- rendering


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(("html", "j2")),
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    return env


_write_text = write_text_atomic


def write_report(run: Path, *, out: Path) -> Path:
    """Write the HTML report of one run.

    Parameters
    ----------
    run : Path
        Run folder holding ``run.json`` (written by ``simcompare score``).
    out : Path
        Report folder, usually ``<workspace>/reports/<sim>_<survey>/``; created if
        needed. Receives ``index.html``, ``figures/``, ``summary.json``,
        ``scores.parquet`` (the simulated scores) and ``report.json``.

    Returns
    -------
    Path
        The written ``index.html``.

    Raises
    ------
    DataNotFoundError
        ``run`` has no ``run.json``.
    DataFormatError
        ``run.json`` is not a JSON object.
    """
    run_obj = _Run.open(Path(run))
    out = Path(out)
    fig_dir = out / "figures"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir(parents=True)
    seed, confidence = 0, 0.95
    try:
        s = run_obj.summary()
        seed = int((s.get("seeds") or {}).get("bootstrap", 0))
        confidence = float(s.get("confidence", 0.95))
    except (SectionUnavailable, TypeError, ValueError):
        pass
    sections = [
        _section("verdict", "Verdict", lambda: _verdict(run_obj)),
        _section("floor", "The pipeline's floor", lambda: _floor(run_obj, fig_dir)),
        _section("scores", "Score distributions", lambda: _scores(run_obj, fig_dir)),
        _section("trends", "Trends with galaxy properties",
                 lambda: _trends(run_obj, fig_dir, seed=seed, confidence=confidence)),
        _section("galleries", "Galleries", lambda: _galleries(run_obj, fig_dir)),
        _section("appearance", "Any difference, and look-alikes by appearance",
                 lambda: _appearance(run_obj, fig_dir)),
        _section("mismatch", "Where the mismatch is", lambda: _mismatch(run_obj, fig_dir)),
        _section("anomalies", "Anomalies of the sky", lambda: _anomalies(run_obj, fig_dir)),
        _section("model", "Density model", lambda: _model(run_obj, fig_dir)),
        _section("morphology", "Classical morphology", lambda: _morphology(run_obj, fig_dir)),
        _section("provenance", "Provenance", lambda: _provenance(run_obj)),
    ]
    copied = []
    for key, name in (("summary", "summary.json"), ("sim_scores", "scores.parquet")):
        try:
            shutil.copyfile(run_obj.path(key), out / name)
            copied.append(name)
        except SectionUnavailable:
            (out / name).unlink(missing_ok=True)
    meta = {"schema": REPORT_SCHEMA, "schema_version": 1, "sim": run_obj.meta.get("sim"),
            "survey": run_obj.meta.get("survey"), "files": copied}
    _write_text(out / "report.json", _json(meta) + "\n")
    html = _environment().get_template("report.html.j2").render(
        sim=str(run_obj.meta.get("sim", "?")), survey=str(run_obj.meta.get("survey", "?")),
        sim_title=str(run_obj.meta.get("sim_title") or ""),
        survey_title=str(run_obj.meta.get("survey_title") or ""),
        version=str((run_obj.meta.get("provenance") or {}).get("simcompare", "?")),
        sections={s["id"]: s for s in sections}, order=[s["id"] for s in sections],
        copied=copied,
    )
    index = out / "index.html"
    _write_text(index, html)
    log.info("report written to %s", index)
    return index


def _index_entry(folder: Path) -> dict[str, Any]:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            msg = "not a JSON object"
            raise TypeError(msg)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        log.warning("skipping %s in the league table: %s", folder, exc)
        return {"skipped": f"{folder.name}: unreadable summary.json ({exc})"}
    meta: dict[str, Any] = {}
    try:
        meta = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        pass
    sim, survey = meta.get("sim"), meta.get("survey")
    if not sim or not survey:
        sim, _, survey = folder.name.rpartition("_")
        sim = sim or folder.name
        survey = survey or "?"
    axes = summary.get("axes") or {}
    metrics = summary.get("metrics") or {}

    def axis(key: str) -> dict[str, Any]:
        a = axes.get(key)
        if not isinstance(a, Mapping):
            return {"present": False, "distance": math.inf}
        null = a.get("null") or {}
        try:
            distance = abs(float(a["value"]) - float(null.get("value", 0.5)))
        except (KeyError, TypeError, ValueError):
            distance = math.inf
        metric = str(a.get("metric", "?"))
        return {"present": True, "metric": _METRIC_NAMES.get(metric, metric),
                "value": _num(a.get("value")), "ci": _ci(a.get("ci")),
                "null": _num(null.get("value")), "null_ci": _ci(null.get("ci")),
                "distance": distance}

    tf = metrics.get("typical_fraction") if isinstance(metrics.get("typical_fraction"), Mapping) else {}
    n = summary.get("n") or {}
    has_page = (folder / "index.html").is_file()
    return {"sim": str(sim), "survey": str(survey), "href": f"{folder.name}/index.html" if has_page else None,
            "fine": axis("fine_structure"), "global": axis("global_structure"),
            "typical": {"value": _num(tf.get("value")), "ci": _ci(tf.get("ci"))},
            "n_sim": _num(n.get("sim")), "n_ref": _num(n.get("reference")),
            "verdict": str((summary.get("verdict") or {}).get("text", ""))}


def write_index(reports_dir: Path) -> Path:
    """Write the league table ``<reports_dir>/index.html`` over every report in it.

    Every ``<reports_dir>/*/summary.json`` becomes a row; rows are grouped by survey
    and ranked by the fine-structure axis: the absolute difference between its value
    and the observed-vs-observed null value (closest to the null first), ties broken
    by the global-structure axis, then by name.

    Parameters
    ----------
    reports_dir : Path
        The reports folder, usually ``<workspace>/reports``.

    Returns
    -------
    Path
        The written ``index.html``.

    Raises
    ------
    DataNotFoundError
        ``reports_dir`` does not exist.
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        msg = f"{reports_dir}: no such reports folder; write a report first with 'simcompare report'"
        raise DataNotFoundError(msg)
    found = [_index_entry(f) for f in sorted(p.parent for p in reports_dir.glob("*/summary.json"))]
    entries = [e for e in found if "skipped" not in e]
    skipped = [e["skipped"] for e in found if "skipped" in e]
    surveys = []
    for survey in sorted({e["survey"] for e in entries}):
        rows = sorted((e for e in entries if e["survey"] == survey),
                      key=lambda e: (e["fine"]["distance"], e["global"]["distance"], e["sim"]))
        for rank, row in enumerate(rows, start=1):
            row["rank"] = rank
        surveys.append({"name": survey, "rows": rows})
    html = _environment().get_template("index.html.j2").render(
        surveys=surveys, n=len(entries), skipped=skipped)
    index = reports_dir / "index.html"
    _write_text(index, html)
    log.info("league table written to %s (%d reports)", index, len(entries))
    return index
