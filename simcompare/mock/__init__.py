"""Mock rendering: star particles -> survey-like images (a "mock" ImageSet).

:func:`render` is the entry point; :mod:`.project` (orientation, adaptive smoothing,
pixel-integrated deposit), :mod:`.observe` (camera, cosmology, PSF, noise),
:mod:`.blanksky` (real blank-sky fields) and :mod:`.render` (per-galaxy rendering,
batching, process pool / dask, resume) hold the pieces.
"""

from __future__ import annotations

from ..psf import PSF, effective_psf
from .blanksky import BlankSky
from .observe import Camera, NoiseModel, choose_redshift
from .project import PROJECTIONS, deposit, deposit_numpy, projection_matrix
from .render import EXCLUSION_REASONS, GalaxyExcluded, RenderSpec, render, render_galaxy

__all__ = [
    "EXCLUSION_REASONS",
    "PROJECTIONS",
    "PSF",
    "BlankSky",
    "Camera",
    "GalaxyExcluded",
    "NoiseModel",
    "RenderSpec",
    "choose_redshift",
    "deposit",
    "deposit_numpy",
    "effective_psf",
    "projection_matrix",
    "render",
    "render_galaxy",
]
