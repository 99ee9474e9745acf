"""Find and prepare the observed sample named by a survey descriptor's ``[sample]``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import SurveyDescriptor
from ..registry import as_survey
from .cutouts import read_manifest
from .demo import demo_sample_root, make_demo_sample
from .ingestion import _resolve, ingest

__all__ = ["DEMO_REDSHIFT", "load_sample", "psf_image_files", "sample_input_files"]

log = logging.getLogger(__name__)

#: Redshift at which both demo populations are observed (docs/ARCHITECTURE.md).
#: Default observation redshift of the demo sample (the descriptor's ``demo_redshift``).
DEMO_REDSHIFT = 0.5


def psf_image_files(survey: SurveyDescriptor, *, workspace: str | os.PathLike = ".") -> list[Path]:
    """The PSF image files of a ``[psf] kind = "image"`` survey (relative paths: to the workspace)."""
    if survey.psf.kind != "image" or not survey.psf.image:
        return []
    out = []
    for b in survey.bands:
        p = Path(survey.psf.image.replace("{band}", b)).expanduser()
        out.append(p if p.is_absolute() else Path(workspace) / p)
    return sorted(set(out))


def _tree(folder: Path) -> list[Path]:
    """Every file below ``folder`` (sorted; none when it is missing)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def sample_input_files(
    survey: SurveyDescriptor | str, *, workspace: str | os.PathLike = ".", stamp_size: int | None = None,
    progress: bool = False,
) -> list[tuple[Path, bool]]:
    """The files :func:`load_sample` reads, for the observed stage's cache key.

    The catalogue (hashed in full) and every file below the cutout folder, or the
    manifest (in full) and every image, variance, sigma, mask and PSF file it names, and
    the survey's PSF images. For a demo sample the synthetic cutouts are written first
    (as :func:`load_sample` would) and fingerprinted like real ones.

    Parameters
    ----------
    survey : SurveyDescriptor or str
        Survey (or its name) whose ``[sample]`` is read.
    workspace : str or os.PathLike, optional
        Workspace folder (default ``"."``).
    stamp_size : int, optional
        Stamp side of a demo sample (default the descriptor's).
    progress : bool, optional
        Show a progress bar while a demo sample is written (default False).

    Returns
    -------
    list of (Path, bool)
        Each file and whether it is hashed in full whatever its size.
    """
    sv = as_survey(survey, workspace=workspace)
    size = int(stamp_size or sv.stamp_size)
    files: list[tuple[Path, bool]] = [(p, False) for p in psf_image_files(sv, workspace=workspace)]
    s = sv.sample
    if s.demo:
        root = demo_sample_root(sv, workspace=workspace, n_galaxies=s.demo_n_galaxies, seed=s.demo_seed,
                                stamp_size=size, redshift=s.demo_redshift)
        cutouts, catalog = make_demo_sample(sv, root=root, n_galaxies=s.demo_n_galaxies, seed=s.demo_seed,
                                            stamp_size=size, redshift=s.demo_redshift, progress=progress)
        return [*files, (catalog, True), *((p, False) for p in _tree(cutouts))]
    base = Path(sv.source).parent if sv.source else Path(workspace)
    manifest = _resolve(s.manifest or None, base)
    if manifest is not None:
        files.append((manifest, True))
        if manifest.is_file():
            rows, _ = read_manifest(manifest)
            names = set()
            for col in ("image", "variance", "sigma", "mask", "psf"):
                if col in rows.columns:
                    names.update(str(v) for v in rows[col].dropna() if str(v).strip())
            files.extend((manifest.parent / n, False) for n in sorted(names))
        return files
    catalog = _resolve(s.catalog or None, base)
    cutouts = _resolve(s.cutout_dir or None, base)
    if catalog is not None:
        files.append((catalog, True))
    if cutouts is not None:
        files.extend((p, False) for p in _tree(cutouts))
    return files


def load_sample(
    survey: SurveyDescriptor | str, *, out: str | os.PathLike, workspace: str | os.PathLike = ".",
    stamp_size: int | None = None, bands: Sequence[str] = (), progress: bool = False,
    cuts: Mapping[str, Sequence[float | None]] | None = None, seed: int = 0,
    cluster: Any = None,
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
    cluster : Cluster, optional
        Workers to ingest on (see :mod:`simcompare.cluster`); default this process.

    Returns
    -------
    Path
    """
    sv = as_survey(survey, workspace=workspace)
    size = int(stamp_size or sv.stamp_size)
    if sv.sample.demo:
        root = demo_sample_root(sv, workspace=workspace, n_galaxies=sv.sample.demo_n_galaxies,
                                seed=sv.sample.demo_seed, stamp_size=size, redshift=sv.sample.demo_redshift)
        cutouts, catalog = make_demo_sample(sv, root=root, n_galaxies=sv.sample.demo_n_galaxies,
                                            seed=sv.sample.demo_seed, stamp_size=size,
                                            redshift=sv.sample.demo_redshift, progress=progress)
        return ingest(sv, out=out, cutouts=cutouts, catalog=catalog, workspace=workspace, stamp_size=size,
                      bands=bands, progress=progress, cuts=cuts, seed=seed, cluster=cluster)
    return ingest(sv, out=out, workspace=workspace, stamp_size=size, bands=bands, progress=progress,
                  cuts=cuts, seed=seed, cluster=cluster)
