"""The report's sections of numbers and figures.

Verdict and floor, scores, trends, model, morphology, provenance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..stats.metrics import binned_medians, quantile_bin_edges
from . import figures
from ._common import (
    _HEADLINE,
    _METRIC_NAMES,
    _MORPH_COLUMNS,
    _SCORE_COLUMNS,
    FINE_STRUCTURE_POWER,
    SectionUnavailable,
    _background_text,
    _ci,
    _json,
    _log10,
    _metric_rows,
    _num,
    _Run,
    _score_column,
    _stat,
    _usable,
)


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
                       ("global_structure", "global structure (classifier)"),
                       ("any_difference", "any difference (image classifier)")):
        if key == "any_difference" and not isinstance(axes_in.get(key), Mapping):
            continue
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
    if ax.get("floor_verdict"):  # against the classifier's own pipeline floor
        return {"differs beyond the pipeline floor": "differs"}.get(ax["floor_verdict"],
                                                                    ax["floor_verdict"])
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
        edges = quantile_bin_edges(xs, 5)
        if edges is None:
            notes.append(f"too few distinct {what} values for bins")
            continue
        series = [{"label": "simulated", "kind": "sim", "x": xs, "y": y_sim,
                   "bins": binned_medians(xs, y_sim, edges=edges, rng=rng,
                                                  confidence=confidence)}]
        xr = get(ref, "morphology_reference") if y_ref is not None else None
        if xr is not None and np.isfinite(xr).sum() >= 3:
            series.append({"label": "observed (held out)", "kind": "ref", "x": xr, "y": y_ref,
                           "bins": binned_medians(xr, y_ref, edges=edges, rng=rng,
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


def _training_info(model_dir: Path) -> dict[str, Any] | None:
    """``training.json`` of a model folder (None when absent or unreadable)."""
    try:
        info = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


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
        "fine_score": _fine_score_text(_score_column(run), len(info.get("members") or []),
                                       (run.meta.get("config") or {}).get(
                                           "orientations", info.get("score_orientations", 1))),
        "power": FINE_STRUCTURE_POWER,
    }


def _fine_score_text(column: str, n_members: int, orientations: Any = 1) -> str:
    what = {"llr_peak_nats": "the log-likelihood ratio of the observed-galaxy model to the "
                             "smooth-Sersic background model, mapped onto the finest flow "
                             "grid and summed over the 1/32 of its cells where it is largest",
            "llr_footprint_nats": "the log-likelihood ratio of the observed-galaxy model to "
                                  "the smooth-Sersic background model, summed over the "
                                  "galaxy's footprint",
            "llr_nats": "the log-likelihood ratio of the observed-galaxy model to the "
                        "smooth-Sersic background model over the whole stamp",
            "log_prob_nats": "the raw log-likelihood (no background model)"}.get(
                column, f"the score column {column}")
    mean = f", mean of {n_members} models" if n_members > 1 else ", one model"
    try:
        turns = int(orientations)
    except (TypeError, ValueError):
        turns = 1
    if turns > 1:
        kind = "quarter turns" if turns == 4 else "quarter turns and their mirror images"
        mean += f", each averaged over the image's {turns} {kind}"
    return what + mean


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
