"""simcompare: whether the galaxies of a simulation look like the galaxies a survey sees.

The command-line verbs are importable functions of the same names::

    import simcompare
    report_dir = simcompare.score(simcompare.ScoreConfig(sim="demo", survey="hsc"))

``render``, ``ingest``, ``train``, ``evaluate``, ``measure``, ``compare``, ``report``,
``score``, ``list_runs``, ``fetch``, ``crosscheck``, ``validate`` and ``anomalies`` are loaded on
first use, so ``import simcompare`` stays cheap (torch, galsim and statmorph are imported
only by the stages that need them). ``simcompare.list`` is the same function as
``list_runs`` (the verb's name); it is not in ``__all__``, so ``from simcompare import *``
does not shadow the builtin ``list``.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .config import ScoreConfig

__all__ = [
    "ScoreConfig",
    "__version__",
    "anomalies",
    "compare",
    "crosscheck",
    "evaluate",
    "fetch",
    "ingest",
    "list_runs",
    "measure",
    "render",
    "report",
    "score",
    "train",
    "validate",
]

_VERBS = {
    "score": ("simcompare.pipeline", "score"),
    "anomalies": ("simcompare.sky_anomalies", "anomalies"),
    "render": ("simcompare.mock", "render"),
    "ingest": ("simcompare.observed", "ingest"),
    "train": ("simcompare.density", "train"),
    "evaluate": ("simcompare.density", "evaluate"),
    "compare": ("simcompare.comparison", "compare_files"),
    "report": ("simcompare.reporting", "write_report"),
    "list_runs": ("simcompare.pipeline", "list_all"),
    "list": ("simcompare.pipeline", "list_all"),
    "measure": ("simcompare.morphology", "measure"),
    "crosscheck": ("simcompare.cross_check", "crosscheck"),
    "fetch": ("simcompare.sims.tng_api", "fetch"),
    "validate": ("simcompare.imageset_validate", "validate"),
}


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        module, attr = _VERBS[name]
        return getattr(importlib.import_module(module), attr)
    msg = f"module 'simcompare' has no attribute {name!r}"
    raise AttributeError(msg)
