"""The verdict in words, and each axis against the pipeline floor."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .metrics import FINE_STRUCTURE_COLUMN, MIN_GALAXIES


# ----------------------------------------------------------------------------------
# verdict
# ----------------------------------------------------------------------------------
def _fmt_ci(entry: Mapping[str, Any]) -> str:
    lo, hi = entry["ci"]
    return f"{entry['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def _verdict(summary: Mapping[str, Any], *, min_galaxies: int) -> dict[str, Any]:
    n = summary["n"]
    if min(n["sim"], n["reference"]) < min_galaxies:
        text = (f"No verdict: too few galaxies ({n['sim']} simulated, {n['reference']} "
                f"reference; at least {min_galaxies} per side are needed).")
        return {"text": text, "fine_structure": "too few galaxies",
                "global_structure": "too few galaxies", "too_few_galaxies": True}
    fine = summary["axes"]["fine_structure"]
    what = {"llr_nats": "likelihood ratio",
            "llr_footprint_nats": "likelihood ratio over the footprint",
            FINE_STRUCTURE_COLUMN: "peak likelihood ratio"}.get(
                summary["column"], f"score {summary['column']}")
    f_floor = _usable_floor(fine)
    if f_floor is not None:
        f_txt, f_short = _fine_against_floor(fine, f_floor, what)
    elif fine["ci_contains_null_value"]:
        f_txt = f"indistinguishable from observed galaxies (AUROC {_fmt_ci(fine)} on the {what})"
        f_short = "indistinguishable"
    elif fine["ci"][0] > 0.5:
        f_txt = (f"less typical than observed galaxies (AUROC {_fmt_ci(fine)} on the {what}; "
                 "0.5 = indistinguishable)")
        f_short = "less typical"
    else:
        # Higher scores than the sky's own galaxies are still a mismatch: the simulated
        # images sit in a different part of the density (e.g. stronger departures from a
        # smooth profile, which the smooth background penalises more), not "better".
        f_txt = (f"scored higher than observed galaxies (AUROC {_fmt_ci(fine)} on the {what}; "
                 "0.5 = indistinguishable), so their structure beyond a smooth profile "
                 "differs from the sky's")
        f_short = "scores higher"
    glob = summary["axes"]["global_structure"]
    g_floor = _usable_floor(glob) if glob.get("value") is not None else None
    if glob.get("value") is None:
        g_txt, g_short = "global structure was not measured", "not measured"
    elif g_floor is not None:
        g_txt, g_short = _global_against_floor(glob, g_floor, summary.get("morphology", {}))
    elif not glob.get("detected", not glob["ci_contains_null_value"]):
        g_txt = f"global structure matches (classifier AUROC {_fmt_ci(glob)})"
        g_short = "indistinguishable"
    else:
        g_txt = f"global structure differs (classifier AUROC {_fmt_ci(glob)}"
        detail = _largest_shift(summary.get("morphology", {}))
        g_txt += f"; {detail})" if detail else ")"
        g_short = "differs"
    text = f"On fine structure the simulated galaxies are {f_txt}; {g_txt}."
    text += _floor_sentence(summary.get("pipeline_floor"))
    return {"text": text, "fine_structure": f_short, "global_structure": g_short,
            "too_few_galaxies": False,
            "against_pipeline_floor": {"fine_structure": f_floor is not None,
                                       "global_structure": g_floor is not None}}


def _usable_floor(axis: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    pf = (axis or {}).get("pipeline_floor")
    if not pf or pf.get("value") is None or pf.get("difference") is None:
        return None
    return pf


def _share(axis: Mapping[str, Any], pf: Mapping[str, Any]) -> str:
    """'the pipeline alone makes 0.04 of the 0.10 distance from 0.5 (40%)'."""
    dist = abs(axis["value"] - 0.5)
    own = abs(pf["value"] - 0.5)
    if dist < 0.005:
        return f"the pipeline alone departs {own:.2f} from 0.5"
    return (f"the pipeline alone makes {own:.2f} of the {dist:.2f} distance from 0.5 "
            f"({min(own / dist, 9.99):.0%})")


def _floor_ci(pf: Mapping[str, Any]) -> str:
    d = pf["difference"]
    return (f"pipeline floor {_fmt_ci(pf)} at {pf['particles']} particles, difference "
            f"{d['value']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]")


def _beyond(axis: Mapping[str, Any], pf: Mapping[str, Any]) -> bool:
    """Whether the simulation departs from 0.5 further than the floor, or the other way.

    The floor only explains a departure away: a simulation on the floor's side of 0.5
    but nearer to it than the floor departs less than the pipeline alone would make
    its galaxies depart.
    """
    sim, own = axis["value"] - 0.5, pf["value"] - 0.5
    return sim * own <= 0 or abs(sim) > abs(own)


def _floor_note(pf: Mapping[str, Any]) -> str:
    """Said beside an axis at chance whose floor is not: the floor cannot make a difference."""
    lo, hi = pf["ci"]
    if lo <= 0.5 <= hi:
        return ""
    return ("; the pipeline floor is off 0.5 (its self-simulated galaxies are smooth "
            "Sersic fits, on which the particle sampling shows more than on structured "
            "galaxies), but a floor only explains departures away and this axis has none")


def _fine_against_floor(fine: Mapping[str, Any], pf: Mapping[str, Any], what: str
                        ) -> tuple[str, str]:
    d = pf["difference"]
    detail = f"AUROC {_fmt_ci(fine)} on the {what}; {_floor_ci(pf)}; {_share(fine, pf)}"
    if fine["ci_contains_null_value"]:
        return (f"indistinguishable from observed galaxies ({detail}{_floor_note(pf)})",
                "indistinguishable")
    if not d["ci_contains_zero"] and _beyond(fine, pf):
        if fine["value"] > 0.5:
            return (f"less typical than observed galaxies beyond the pipeline floor ({detail})",
                    "less typical")
        return (f"scored higher than observed galaxies beyond the pipeline floor ({detail}), "
                "so their structure beyond a smooth profile differs from the sky's",
                "scores higher")
    return (f"within the pipeline floor ({detail}){_within_note(pf)}",
            "within the pipeline floor")


def _global_against_floor(glob: Mapping[str, Any], pf: Mapping[str, Any],
                          morph: Mapping[str, Any]) -> tuple[str, str]:
    d = pf["difference"]
    detail = f"classifier AUROC {_fmt_ci(glob)}; {_floor_ci(pf)}; {_share(glob, pf)}"
    if not glob.get("detected", not glob["ci_contains_null_value"]):
        return f"global structure matches ({detail}{_floor_note(pf)})", "indistinguishable"
    if not d["ci_contains_zero"] and d["value"] > 0:
        shift = _largest_shift(morph)
        return (f"global structure differs beyond the pipeline floor ({detail}"
                + (f"; {shift})" if shift else ")"), "differs")
    return (f"global structure is within the pipeline floor ({detail}){_within_note(pf)}",
            "within the pipeline floor")


def _within_note(pf: Mapping[str, Any]) -> str:
    """Why an axis is within its floor: the pipeline's offset, or only the floor's noise."""
    lo, hi = pf["ci"]
    if lo <= 0.5 <= hi:
        return (": the simulation cannot be told from the self-simulated observed galaxies, "
                "although the floor itself holds 0.5; more floor galaxies (--floor-max) "
                "would sharpen this")
    return ": the render path alone moves the observed galaxies about as far, or further"


def _floor_sentence(block: Mapping[str, Any] | None) -> str:
    if not block:
        return ""
    if block.get("skipped"):
        return f" The pipeline floor was not measured ({block['skipped']})."
    curve = block.get("curve") or []
    if not curve:
        return ""
    at = block.get("vanishes_at_particles")
    top = max(p["particles"] for p in curve)
    if at is None:
        return (f" The pipeline floor does not vanish up to {top} particles per galaxy "
                "(floor curve in the report).")
    return (f" The pipeline floor vanishes (every axis' CI holds 0.5) from {at} particles "
            "per galaxy on.")


def attach_floor(summary: dict[str, Any], floor: Mapping[str, Any], *,
                 confidence: float = 0.95, min_galaxies: int = MIN_GALAXIES) -> dict[str, Any]:
    """Give every axis of ``summary`` its ``pipeline_floor`` (in place; returns it).

    ``floor`` is :func:`simcompare.floor.measure_floor`'s record. Each axis gets
    ``pipeline_floor = {value, ci, n, particles, difference, share_of_distance}``:
    the floor's own value and CI, and the difference simulation - floor with a CI from
    the two bootstrap distributions (each summarised by a normal of standard error =
    CI width / (2 z), so the difference has half-width z sqrt(se_sim^2 + se_floor^2)).
    The verdict calls an axis different only when that CI excludes 0.

    Parameters
    ----------
    summary : dict
        :func:`compare`'s record of the simulation against the observed galaxies.
    floor : mapping
        The floor stage's record.
    confidence : float
        Level of the difference's interval.
    min_galaxies : int
        Fewest galaxies per side for a verdict.

    Returns
    -------
    dict
        ``summary``, with ``pipeline_floor`` on every axis and the verdict redone.
    """
    block: dict[str, Any] = {k: floor.get(k) for k in (
        "particles", "particles_source", "typical_particles", "n_galaxies", "exclusions")}
    fs = floor.get("summary")
    reason = floor.get("skipped")
    if reason is None and fs is None:
        reason = "no floor summary"
    if reason is None and fs["verdict"].get("too_few_galaxies"):
        reason = (f"too few self-simulated galaxies ({fs['n']['sim']}; at least "
                  f"{min_galaxies} are needed)")
    # without the timings (floor.json keeps them): the summary is reproducible to the byte
    curve = [{k: v for k, v in p.items() if k != "seconds"} for p in floor.get("curve") or []]
    block["curve"] = curve
    block["vanishes_at_particles"] = vanishing_particles(curve) if curve else None
    if reason is not None:
        block["skipped"] = reason
        summary["pipeline_floor"] = block
        for axis in summary["axes"].values():
            if axis is not None:
                axis["pipeline_floor"] = None
        return summary
    block["definition"] = ("self-simulation of the held-out observed galaxies' Sersic fits "
                           "as star particles through the mock path, against their analytic "
                           "re-renderings with the survey's PSF and noise")
    summary["pipeline_floor"] = block
    n = {"sim": fs["n"]["sim"], "reference": fs["n"]["reference"]}
    for name, axis in summary["axes"].items():
        if axis is None:
            continue
        f_axis = fs["axes"].get(name) or {}
        axis["pipeline_floor"] = _floor_entry(axis, f_axis, n=f_axis.get("n", n),
                                              particles=floor["particles"],
                                              confidence=confidence)
    for p, entry in summary.get("morphology", {}).items():
        f_entry = fs.get("morphology", {}).get(p) or {}
        if "auroc" not in entry or "auroc" not in f_entry:
            continue
        entry["pipeline_floor"] = {
            "auroc": _floor_entry(entry["auroc"], f_entry["auroc"], n=f_entry.get("n"),
                                  particles=floor["particles"], confidence=confidence),
            "median": f_entry.get("median"),
            "median_shift": {k: f_entry["median_shift"].get(k) for k in ("value", "ci")}
            if f_entry.get("median_shift") else None,
        }
    return summary


def attach_any_difference_floor(summary: dict[str, Any], floor: Mapping[str, Any], *,
                                confidence: float = 0.95) -> dict[str, Any]:
    """Give ``axes.any_difference`` its ``pipeline_floor`` (in place; returns ``summary``).

    The image classifier's floor (``floor["any_difference"]``, measured by
    :func:`simcompare.floor.measure_floor`) in the form of the other axes' floors, and
    ``any_difference.floor_verdict``: "indistinguishable" when the classifier does not
    detect a difference, "differs beyond the pipeline floor" when it does and the
    difference to the floor's AUROC excludes 0 on the far side (the classifier is
    one-sided), else "within the pipeline floor". Without a measured classifier floor
    the axis gets ``pipeline_floor = None``.

    Parameters
    ----------
    summary : dict
        The comparison summary with ``axes.any_difference`` (the appearance stage's).
    floor : mapping
        The floor stage's record (:func:`simcompare.floor.measure_floor`).
    confidence : float
        Level of the difference's interval.
    """
    axis = (summary.get("axes") or {}).get("any_difference")
    if axis is None:
        return summary
    f_axis = floor.get("any_difference") if isinstance(floor, Mapping) else None
    if (not isinstance(f_axis, Mapping) or f_axis.get("value") is None or floor.get("skipped")):
        axis["pipeline_floor"] = None
        return summary
    pf = _floor_entry(axis, f_axis, n=f_axis.get("n"), particles=floor["particles"],
                      confidence=confidence)
    axis["pipeline_floor"] = pf
    d = (pf or {}).get("difference")
    if not axis.get("detected"):
        axis["floor_verdict"] = "indistinguishable"
    elif d is not None and not d["ci_contains_zero"] and d["value"] > 0:
        axis["floor_verdict"] = "differs beyond the pipeline floor"
    else:
        axis["floor_verdict"] = "within the pipeline floor"
    return summary


def _floor_entry(axis: Mapping[str, Any], f_axis: Mapping[str, Any], *, n: Any,
                 particles: int, confidence: float) -> dict[str, Any] | None:
    if f_axis.get("value") is None or f_axis.get("ci") is None:
        return None
    out: dict[str, Any] = {"value": f_axis["value"], "ci": list(f_axis["ci"]), "n": n,
                           "particles": int(particles), "difference": None,
                           "share_of_distance": None}
    if axis.get("value") is None or axis.get("ci") is None:
        return out
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se_s = (axis["ci"][1] - axis["ci"][0]) / (2 * z)
    se_f = (f_axis["ci"][1] - f_axis["ci"][0]) / (2 * z)
    d = float(axis["value"] - f_axis["value"])
    half = z * math.hypot(se_s, se_f)
    out["difference"] = {"value": d, "ci": [d - half, d + half],
                         "ci_contains_zero": bool(d - half <= 0.0 <= d + half),
                         "method": "normal approximation of the two bootstrap distributions "
                                   "(se = CI width / (2 z))"}
    dist = abs(axis["value"] - 0.5)
    out["share_of_distance"] = abs(f_axis["value"] - 0.5) / dist if dist > 0 else None
    return out


def _largest_shift(morph: Mapping[str, Any]) -> str:
    best, best_name = 0.0, None
    for name, entry in morph.items():
        a = entry.get("auroc")
        if not a or a.get("ci_contains_null_value", True):
            continue
        if abs(a["value"] - 0.5) > best:
            best, best_name = abs(a["value"] - 0.5), name
    if best_name is None:
        return ""
    med = morph[best_name]["median"]
    if best_name == "r_half_arcsec" and med["reference"] > 0:
        ratio = med["sim"] / med["reference"]
        return f"simulated half-light radii are {ratio:.2f}x the observed ones"
    return (f"largest difference in {best_name}: median {med['sim']:.3g} simulated vs "
            f"{med['reference']:.3g} observed")


def vanishing_particles(curve: list[dict[str, Any]]) -> int | None:
    """The smallest particle count from which on every axis' floor CI holds 0.5.

    The global axis counts as vanished when its CI's lower end is not above 0.5 (the
    classifier is one-sided). None when the floor does not vanish within the curve.
    """
    def vanished(point: dict[str, Any]) -> bool:
        if "skipped" in point:
            return False
        fine = point.get("fine_structure") or {}
        glob = point.get("global_structure") or {}
        ok = fine.get("ci") is not None and fine["ci"][0] <= 0.5 <= fine["ci"][1]
        if glob.get("ci") is not None:
            ok = ok and glob["ci"][0] <= 0.5
        return bool(ok)

    pts = sorted(curve, key=lambda p: p["particles"])
    found = None
    for p in reversed(pts):
        if not vanished(p):
            break
        found = p["particles"]
    return found
