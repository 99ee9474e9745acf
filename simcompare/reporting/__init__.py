"""HTML reports: one page per simulation-survey run and a league table over all runs.

The report reads only serialised results (the files named in a run's ``run.json``),
imports matplotlib and Jinja2 lazily, and writes deterministic, self-contained HTML.
"""

from __future__ import annotations

from .html import write_index, write_report

__all__ = ["write_index", "write_report"]
