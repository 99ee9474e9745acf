"""The ``compare`` stage: score tables in, ``summary.json`` out; and the league table.

The statistics themselves live in :mod:`simcompare.stats`: :func:`compare_tables`
(:mod:`simcompare.stats.compare`) computes the summary record of two score tables (and two
morphology tables) in memory; :func:`compare_files` (the ``compare`` verb,
``simcompare.compare``) runs it on files and writes ``summary.json``. ``compare`` is the
old name of :func:`compare_tables`, kept for callers; :func:`league_table` ranks several
summaries. This module also re-exports the metric functions of :mod:`simcompare.stats`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._io import atomic_path, load_table, write_text_atomic
from .errors import DataFormatError, DataNotFoundError
from .stats.classifier import cross_validated_auroc
from .stats.compare import (
    DEFAULT_MATCH_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    _jsonable,
    compare_tables,
)
from .stats.metrics import (
    FINE_STRUCTURE_COLUMN,
    MIN_GALAXIES,
    MIN_PER_BIN,
    auroc,
    bootstrap_metrics,
    typical_fraction,
    wasserstein1,
)
from .stats.morphology import MORPHOLOGY_PARAMETERS
from .stats.verdict import attach_floor

__all__ = [
    "DEFAULT_MATCH_COLUMNS",
    "FINE_STRUCTURE_COLUMN",
    "MIN_GALAXIES",
    "MIN_PER_BIN",
    "MORPHOLOGY_PARAMETERS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "attach_floor",
    "auroc",
    "bootstrap_metrics",
    "compare",
    "compare_files",
    "compare_tables",
    "cross_validated_auroc",
    "league_table",
    "load_table",
    "typical_fraction",
    "wasserstein1",
    "write_summary",
]

#: The old name of :func:`compare_tables` (the in-memory statistics).
compare = compare_tables

def write_summary(summary: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write a summary record to ``out`` as JSON (atomically); returns the path."""
    path = Path(out)
    write_text_atomic(path, json.dumps(_jsonable(summary), indent=2, sort_keys=False) + "\n")
    return path


def compare_files(
    scores_path: str | os.PathLike, reference_path: str | os.PathLike, *,
    out: str | os.PathLike, column: str = FINE_STRUCTURE_COLUMN, **kwargs: Any,
) -> dict[str, Any]:
    """:func:`compare_tables` on two score files; writes ``summary.json`` to ``out``.

    The ``compare`` verb (``simcompare.compare``). Extra keyword options (``n_bootstrap``,
    ``n_null``, ``seed``, ``morphology``, ``morphology_reference``, ...) are passed to
    :func:`compare_tables`. Returns the summary.

    Parameters
    ----------
    scores_path : str or os.PathLike
        Scores of the simulated galaxies (Parquet).
    reference_path : str or os.PathLike
        Scores of the reference galaxies (Parquet).
    out : str or os.PathLike
        Path of the ``summary.json`` to write.
    column : str, optional
        Score column compared (default :data:`FINE_STRUCTURE_COLUMN`, ``"llr_peak_nats"``).
    **kwargs
        Passed to :func:`compare_tables`.
    """
    summary = compare_tables(scores_path, reference_path, column=column, **kwargs)
    summary["inputs"] = {"scores": str(scores_path), "reference": str(reference_path)}
    write_summary(summary, out)
    return summary


_LEAGUE_FIELDS = (
    "rank", "name", "n_sim", "n_reference", "column",
    "fine_auroc", "fine_ci_low", "fine_ci_high", "fine_null", "fine_ci_contains_0.5",
    "global_auroc", "global_ci_low", "global_ci_high", "global_null", "global_ci_contains_0.5",
    "departure", "verdict",
)


def league_table(summaries: Mapping[str, Any], *, out_dir: str | os.PathLike) -> list[dict]:
    """Rank several simulations scored against one survey; writes JSON and CSV.

    Ranking: by the larger of ``|AUROC - 0.5|`` over the two axes (fine structure and,
    when measured, global structure), smallest first, ties broken by the fine-structure
    departure. Summaries with too few galaxies rank last.

    Parameters
    ----------
    summaries : mapping of name to summary dict or path of a summary.json
    out_dir : path-like
        Folder receiving ``league_table.json`` and ``league_table.csv``.

    Returns
    -------
    list of dict
        The rows in rank order (the fields of the CSV).
    """
    rows = []
    for name, s in summaries.items():
        if not isinstance(s, Mapping):
            p = Path(s)
            if not p.exists():
                msg = f"summary {p} for {name!r} does not exist; run 'simcompare compare' first"
                raise DataNotFoundError(msg)
            s = json.loads(p.read_text())
        if s.get("schema") != SCHEMA:
            msg = f"summary for {name!r} is not a simcompare summary (schema {s.get('schema')!r})"
            raise DataFormatError(msg)
        fine = s["axes"]["fine_structure"] or {}
        glob = s["axes"].get("global_structure") or {}

        def part(e: Mapping[str, Any]) -> tuple:
            if e.get("value") is None or e.get("ci") is None:
                return (None, None, None, None, None)
            null = (e.get("null") or {}).get("value")
            return (e["value"], e["ci"][0], e["ci"][1], null, e.get("ci_contains_null_value"))

        f, g = part(fine), part(glob)
        deps = [abs(f[0] - 0.5)] if f[0] is not None else []
        if g[0] is not None:  # a classifier AUROC below 0.5 is chance, not a departure
            deps.append(max(g[0] - 0.5, 0.0))
        too_few = bool(s.get("verdict", {}).get("too_few_galaxies"))
        departure = max(deps) if deps and not too_few else None
        rows.append(dict(zip(_LEAGUE_FIELDS, (
            None, name, s["n"]["sim"], s["n"]["reference"], s["column"], *f, *g, departure,
            s.get("verdict", {}).get("text", "")), strict=True)))
    rows.sort(key=lambda r: (r["departure"] is None, r["departure"] or 0.0,
                             abs((r["fine_auroc"] or 0.5) - 0.5), r["name"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "simcompare.league", "schema_version": 1,
           "ranking": "max over axes of |AUROC - 0.5|, smallest first", "rows": rows}
    write_text_atomic(out / "league_table.json", json.dumps(_jsonable(doc), indent=2) + "\n")
    with atomic_path(out / "league_table.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(_LEAGUE_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return rows
