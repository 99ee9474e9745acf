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
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError
from ._common import (  # noqa: F401
    _METRIC_NAMES,
    FINE_STRUCTURE_POWER,
    GALLERY_SIZE,
    REPORT_SCHEMA,
    SectionUnavailable,
    _ci,
    _json,
    _num,
    _Run,
    _section,
    _write_text,
    log,
)
from .galleries import (  # noqa: F401
    ANOMALY_RULE,
    _anomalies,
    _appearance,
    _galleries,
    _mismatch,
    anomaly_rows,
    write_anomaly_page,
)
from .sections import _floor, _model, _morphology, _provenance, _scores, _trends, _verdict

__all__ = ["GALLERY_SIZE", "REPORT_SCHEMA", "write_index", "write_report"]


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
