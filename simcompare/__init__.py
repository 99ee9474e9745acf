"""simcompare: do the galaxies of a simulation look like the galaxies a survey sees?

The stages are importable functions of the same names as the command-line verbs::

    import simcompare
    simcompare.score(simcompare.ScoreConfig(sim="demo", survey="hsc"))

Heavy dependencies (torch, galsim, statmorph) are imported lazily, inside the stages.
"""

from __future__ import annotations

from ._version import __version__
from .config import ScoreConfig

__all__ = ["ScoreConfig", "__version__"]
