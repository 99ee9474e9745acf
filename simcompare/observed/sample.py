"""Find and prepare the observed sample named by a survey descriptor's ``[sample]``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import SurveyDescriptor
from .cutouts import _survey, ingest
from .demo import demo_sample_root, make_demo_sample

__all__ = ["DEMO_REDSHIFT", "load_sample"]

log = logging.getLogger(__name__)

#: Redshift at which both demo populations are observed (docs/ARCHITECTURE.md).
#: Default observation redshift of the demo sample (the descriptor's ``demo_redshift``).
DEMO_REDSHIFT = 0.5


def load_sample(
    survey: SurveyDescriptor | str, *, out: str | os.PathLike, workspace: str | os.PathLike = ".",
    stamp_size: int | None = None, bands: Sequence[str] = (), progress: bool = False,
    cuts: Mapping[str, Sequence[float | None]] | None = None, seed: int = 0,
) -> Path:
    """Write the survey's observed sample as an ImageSet at ``out``.

    With ``[sample] demo = true`` the synthetic demo sample is generated (or reused) in
    ``<workspace>/.simcompare/observed/<survey>-demo-<hash>/`` with
    :func:`~simcompare.observed.make_demo_sample` and read back through the HSC-layout
    reader; otherwise the descriptor's ``cutout_dir`` + ``catalog`` or ``manifest`` are
    ingested.

    Parameters
    ----------
    survey : SurveyDescriptor or str
    out : path
        Output ImageSet.
    workspace : path
    stamp_size : int, optional
        Default the survey's ``stamp_size``.
    bands : sequence of str, optional
        Default all survey bands.
    progress : bool
    cuts : mapping, optional
        Catalogue cuts, as in :func:`~simcompare.observed.ingest`.
    seed : int
        Seed of the neighbour-replacement noise.

    Returns
    -------
    Path
    """
    sv = _survey(survey, workspace)
    size = int(stamp_size or sv.stamp_size)
    if sv.sample.demo:
        root = demo_sample_root(sv, workspace=workspace, n_galaxies=sv.sample.demo_n_galaxies,
                                seed=sv.sample.demo_seed, stamp_size=size, redshift=sv.sample.demo_redshift)
        cutouts, catalog = make_demo_sample(sv, root=root, n_galaxies=sv.sample.demo_n_galaxies,
                                            seed=sv.sample.demo_seed, stamp_size=size,
                                            redshift=sv.sample.demo_redshift, progress=progress)
        return ingest(sv, out=out, cutouts=cutouts, catalog=catalog, workspace=workspace, stamp_size=size,
                      bands=bands, progress=progress, cuts=cuts, seed=seed)
    return ingest(sv, out=out, workspace=workspace, stamp_size=size, bands=bands, progress=progress,
                  cuts=cuts, seed=seed)
