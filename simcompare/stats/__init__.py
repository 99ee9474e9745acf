"""Population statistics: metrics, matching, the classifier test, morphology and the verdict.

:func:`compare_tables` (:mod:`simcompare.stats.compare`) assembles them into the
``summary.json`` record of two score tables.
"""

from .compare import compare_tables

__all__ = ["compare_tables"]
