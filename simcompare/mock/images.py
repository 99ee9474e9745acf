"""Published simulated images into a mock ImageSet, through the same path as particle renders.

:func:`render_images` is what :func:`simcompare.mock.render` runs for a ``kind = "images"``
simulation descriptor (see :mod:`simcompare.sims.images` for the file layouts):

*idealised images* (``psf_convolved = false``)
    each plane, converted to survey flux per pixel, is resampled flux-conservingly to
    the survey's pixel scale (:func:`resample_flux`: exact pixel-overlap rebinning, the
    stamp centred on the image centre), convolved with the survey's effective PSF,
    given the survey's noise (or inserted into a real blank-sky field), and passed
    through the shared stamp preprocessing, exactly as a particle render's deposit is.
*survey-realistic images* (``psf_convolved = true``)
    already PSF-convolved, noised and inserted into real fields: read with their masks,
    variances and PSFs and passed only through the shared preprocessing, neighbour
    replacement included, as observed cutouts are (:func:`simcompare.observed.ingest`).

The catalogue keeps ``subhalo_id``, ``view``, ``file``, ``file_flux_<band>`` (the flux in
the file's own pixels, survey units), ``flux_<band>`` / ``mag_<band>`` (the flux in the
noise-free stamp) and, where the header gives magnitudes (``MAGn``, ``APMAG``),
``header_mag_<band>`` and ``mag_difference_<band>`` (header minus pixel magnitude: the
two need not be measured on the same frame). ``object_id`` is the subhalo id when every
subhalo has one image, else ``subhalo_id * 1000 + k`` for its k-th view (sorted by name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as _progress
from .._version import __version__
from ..config import SimDescriptor, SurveyDescriptor
from ..errors import ConfigError, DataFormatError, SimcompareError
from ..psf import PSF
from ..sims.image_units import flux_unit_name
from ..sims.images import (
    ImageFileExcluded,
    SimImage,
    catalog_columns,
    image_catalog,
    image_files,
    read_image_file,
)
from ..stamps import NeighbourConfig, preprocess_mock
from .blanksky import BLANK_SKY_STREAM, BlankSky
from .observe import NoiseModel, convolve

__all__ = ["render_images", "resample_flux"]

log = logging.getLogger(__name__)

#: Views per subhalo that object ids can tell apart (``subhalo_id * VIEW_ID_FACTOR + k``).
VIEW_ID_FACTOR = 1000


def _overlap_matrix(n_in: int, scale_in: float, n_out: int, scale_out: float) -> np.ndarray:
    """(n_out, n_in) fraction of each input pixel falling in each output pixel (1-D).

    Both grids are centred on the same point; columns sum to 1 where the input pixel lies
    wholly inside the output grid, so the rebinning conserves flux exactly.
    """
    e_in = (np.arange(n_in + 1) - n_in / 2.0) * scale_in
    e_out = (np.arange(n_out + 1) - n_out / 2.0) * scale_out
    lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
    hi = np.minimum(e_out[1:, None], e_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) / scale_in


def resample_flux(
    image: np.ndarray, *, scale_in_arcsec: float, scale_out_arcsec: float, size: int,
) -> np.ndarray:
    """Rebin (B, H, W) flux per pixel onto a ``size`` x ``size`` grid of another pixel scale.

    Each output pixel receives the flux of the input pixels' areas it overlaps (exact
    for axis-aligned grids), so the total flux is kept except for what falls outside the
    output stamp. Grids share their centres: the input array centre lands on the stamp
    centre pixel ``(size - 1) / 2``.

    Parameters
    ----------
    image : ndarray, shape (B, H, W)
        Flux per input pixel.
    scale_in_arcsec : float
        Input pixel side [arcsec].
    scale_out_arcsec : float
        Output pixel side [arcsec].
    size : int
        Output stamp side [pixels].

    Returns
    -------
    ndarray, float64, shape (B, size, size)
        Flux per output pixel.
    """
    img = np.nan_to_num(np.asarray(image, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    h, w = img.shape[-2:]
    my = _overlap_matrix(h, scale_in_arcsec, size, scale_out_arcsec)
    mx = _overlap_matrix(w, scale_in_arcsec, size, scale_out_arcsec)
    return np.einsum("ih,bhw,jw->bij", my, img, mx, optimize=True)


def _object_ids(images: list[SimImage]) -> list[int]:
    """Subhalo ids, or ``subhalo_id * 1000 + k`` when a subhalo has several views."""
    subs = [int(im.row["subhalo_id"]) for im in images]
    counts = Counter(subs)
    if all(c == 1 for c in counts.values()):
        return subs
    if max(counts.values()) > VIEW_ID_FACTOR:
        msg = f"more than {VIEW_ID_FACTOR} images of one subhalo; they cannot get distinct object ids"
        raise DataFormatError(msg)
    seen: Counter = Counter()
    out = []
    for s in subs:
        out.append(s * VIEW_ID_FACTOR + seen[s])
        seen[s] += 1
    return out


def render_images(
    sim: SimDescriptor, survey: SurveyDescriptor, *, out: Path, workspace: str | Path = ".",
    stamp_size: int | None = None, bands: Sequence[str] = (), noise: str = "survey",
    seed: int = 0, n_galaxies: int | None = None, progress: bool = False,
    max_flux_outside: float = 0.5, mask_neighbours: bool = True,
) -> Path:
    """Write a mock ImageSet from a ``kind = "images"`` simulation's FITS files.

    Parameters
    ----------
    sim : SimDescriptor
        ``kind = "images"`` descriptor.
    survey : SurveyDescriptor
    out : Path
        Output ImageSet (HDF5, kind "mock"), written atomically.
    workspace : path
        Workspace (relative image paths, blank-sky fields).
    stamp_size : int, optional
        Stamp side [pixels]; default the survey's.
    bands : sequence of str, optional
        Subset of the survey's bands; default all.
    noise : {"survey", "sky", "none", "blank-sky"}
        Noise of idealised images (as for particle renders); survey-realistic images
        keep their own noise whatever this says.
    seed : int
        Per image: ``default_rng([seed, object_id])``.
    n_galaxies : int, optional
        Use at most this many files (in name order).
    progress : bool
        Show a progress bar.
    max_flux_outside : float
        Idealised images with more than this fraction of their light outside the stamp
        are excluded (``larger_than_stamp``).
    mask_neighbours : bool
        Run the neighbour search of ``ingest`` and replace what it finds by noise, as for
        observed cutouts (default True): the other sources of survey-realistic images, and
        on idealised images the pieces the deblender cuts off (clumps, outskirts), which it
        cuts off observed galaxies alike.

    Returns
    -------
    Path
        ``out``.
    """
    from .. import imageset

    workspace = Path(workspace)
    bands = survey.select_bands(bands)
    stamp = int(stamp_size or survey.stamp_size)
    if sim.flux_unit:
        flux_unit_name(sim.flux_unit, where=sim.source or sim.name)  # a ConfigError names the key
    missing = [b for b in bands if b not in sim.bands]
    if missing:
        msg = (f"simulation {sim.name!r}: [bands] maps no plane to survey band(s) {missing}; "
               f"add them to {sim.source or 'the descriptor'} or pass --bands "
               f"{','.join(b for b in bands if b in sim.bands) or '<bands>'}")
        raise ConfigError(msg)
    files = image_files(sim, workspace=workspace)
    if n_galaxies is not None:
        files = files[: int(n_galaxies)]
    catalog = image_catalog(sim, workspace=workspace)
    realistic = bool(sim.psf_convolved)

    read: list[SimImage] = []
    excluded: dict[str, str] = {}

    def exclude(name: str, reason: str, message: str) -> None:
        log.warning("excluding %s (%s): %s", name, reason, message)
        excluded[name] = reason

    t0 = time.perf_counter()
    for path in _progress(files, desc="images", total=len(files), enable=progress, unit="file"):
        try:
            im = read_image_file(path, sim, bands=bands, zero_point=survey.zero_point,
                                 survey_flux_unit=survey.flux_unit, catalog=catalog)
        except ImageFileExcluded as exc:
            exclude(path.name, exc.reason, str(exc))
            continue
        if realistic and abs(im.pixel_scale_arcsec / survey.pixel_scale_arcsec - 1.0) > 0.01:
            exclude(path.name, "pixel_scale_mismatch",
                    f"{path.name}: survey-realistic pixels of {im.pixel_scale_arcsec:.4g}\" differ from "
                    f"the survey's {survey.pixel_scale_arcsec:.4g}\"; such images are not resampled")
            continue
        read.append(im)
    ids = _object_ids(read) if read else []

    psf = None if realistic else PSF.from_survey(survey, bands=bands, workspace=workspace,
                                                 kernel_size=2 * stamp + 1)
    noise_model = NoiseModel.from_survey(survey, bands=bands, mode=noise)
    blank_sky = (BlankSky.for_survey(survey, bands=bands, stamp_size=stamp, workspace=workspace)
                 if not realistic and noise == "blank-sky" else None)

    images, variances, masks, psfs, rows = [], [], [], [], []
    for oid, im in zip(ids, read, strict=True):
        rng = np.random.default_rng([int(seed), int(oid) & 0xFFFFFFFFFFFF])
        try:
            if realistic:
                got = _realistic(im, bands=bands, stamp=stamp, rng=rng, survey=survey,
                                 mask_neighbours=mask_neighbours)
            else:
                got = _idealised(im, bands=bands, stamp=stamp, rng=rng, survey=survey, psf=psf,
                                 noise_model=noise_model, blank_sky=blank_sky, seed=seed, oid=oid,
                                 max_flux_outside=max_flux_outside,
                                 neighbours=NeighbourConfig() if mask_neighbours else None)
        except ImageFileExcluded as exc:
            exclude(im.path.name, exc.reason, str(exc))
            continue
        image, variance, mask, obj_psf, extra = got
        images.append(image)
        variances.append(variance)
        masks.append(mask)
        psfs.append(obj_psf)
        rows.append({"object_id": int(oid), **im.row, **extra})
    if not images:
        msg = (f"no image of simulation {sim.name!r} could be used ({len(files)} files; exclusions: "
               f"{dict(Counter(excluded.values())) or 'none'}); see the log for each file's reason")
        raise SimcompareError(msg)

    config = {
        "sim": sim.name, "survey": survey.name, "stamp_size": stamp, "bands": list(bands),
        "planes": {b: sim.bands[b] for b in bands}, "psf_convolved": realistic,
        "noise": "file's own" if realistic else noise, "seed": int(seed),
        "n_galaxies": n_galaxies, "flux_unit_override": sim.flux_unit or None,
        "pixel_scale_arcsec_override": sim.pixel_scale_arcsec, "kpc_per_pixel_override": sim.kpc_per_pixel,
        "pixel_scale_arcsec": survey.pixel_scale_arcsec, "zero_point": survey.zero_point,
        "files_hash": hashlib.sha256(json.dumps([p.name for p in files]).encode()).hexdigest()[:16],
        "version": __version__,
    }
    provenance: dict[str, Any] = {
        "simcompare": __version__, "stage": "render", "source": "images", "config": config,
        "seeds": {"render": int(seed), "per_image": "numpy default_rng([seed, object_id])"},
        "image_folder": str(files[0].parent), "n_files": len(files), "n_rendered": len(images),
        "excluded_files": excluded, "exclusions": dict(Counter(excluded.values())),
        "unit_conversion": "simcompare.sims.image_units.to_survey_flux",
        "path": ("survey-realistic: read with the file's mask, variance and PSF; shared "
                 "preprocessing (neighbours replaced by noise) only") if realistic else
                ("idealised: flux-conserving pixel-overlap resampling to the survey pixel scale, "
                 "survey effective PSF, survey noise, shared preprocessing (the neighbour search of "
                 f"ingest {'on' if mask_neighbours else 'off'})"),
        "psf": None if psf is None else psf.description,
        "noise": None if realistic else {"mode": noise, "sky_sigma": list(noise_model.sky_sigma),
                                         "gain": list(noise_model.gain),
                                         "blank_sky": None if blank_sky is None else blank_sky.description},
        "not_modelled": ["redshifting: images are used at the distance they were made for"],
        "timings_s": {"render": time.perf_counter() - t0},
    }
    if realistic:
        psf_arr = np.stack(psfs).astype(np.float32)
        if np.all(psf_arr == psf_arr[:1]):
            psf_arr = psf_arr[0]
    else:
        psf_arr = psf.image.astype(np.float32)
    with_mask = realistic or blank_sky is not None
    iset = imageset.ImageSet(
        images=np.stack(images).astype(np.float32), catalog=catalog_columns(rows), kind="mock",
        survey=survey.name, bands=bands, pixel_scale_arcsec=survey.pixel_scale_arcsec,
        zero_point=survey.zero_point, flux_unit=survey.flux_unit,
        variance=np.stack(variances).astype(np.float32),
        mask=np.stack(masks).astype(np.uint8) if with_mask else None, psf=psf_arr,
        provenance=provenance)
    imageset.write(Path(out), iset)
    log.info("wrote %d images of %s into %s (excluded: %s)", len(images), sim.name, out,
             provenance["exclusions"])
    return Path(out)


def _idealised(
    im: SimImage, *, bands: Sequence[str], stamp: int, rng: np.random.Generator,
    survey: SurveyDescriptor, psf: PSF,
    noise_model: NoiseModel, blank_sky: BlankSky | None, seed: int, oid: int,
    max_flux_outside: float, neighbours: NeighbourConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, None, dict[str, Any]]:

    deposited = resample_flux(im.image, scale_in_arcsec=im.pixel_scale_arcsec,
                              scale_out_arcsec=survey.pixel_scale_arcsec, size=stamp)
    total = np.nansum(np.where(np.isfinite(im.image), im.image, 0.0), axis=(-2, -1))
    grand, inside = float(total.sum()), float(deposited.sum())
    if not grand > 0 or not inside > 0:
        msg = f"{im.path.name}: no light in the stamp"
        raise ImageFileExcluded(msg, reason="bad_data")
    outside = 1.0 - inside / grand
    if outside > max_flux_outside:
        msg = (f"{im.path.name}: {outside:.0%} of its light falls outside the {stamp}-pixel stamp; "
               "use a larger stamp_size")
        raise ImageFileExcluded(msg, reason="larger_than_stamp")
    model = convolve(deposited, psf.render_kernel())  # the resampled map is pixel-integrated
    variance = noise_model.variance(model)
    image = noise_model.apply(model, rng=rng)
    raw_mask = planes = None
    extra: dict[str, Any] = {"flux_fraction_in_stamp": inside / grand}
    if blank_sky is not None:
        prng = np.random.default_rng([int(seed), int(oid) & 0xFFFFFFFFFFFF, BLANK_SKY_STREAM])
        k, x0, y0 = blank_sky.place(prng, stamp)
        sky_img, sky_var, raw_mask = blank_sky.region(k, x0, y0, stamp)
        planes = blank_sky.mask_planes[k]
        image, variance = image + sky_img, variance + sky_var
        extra.update(blank_sky_field=blank_sky.field_ids[k], blank_sky_x=x0, blank_sky_y=y0)
    image, variance, info, mask = preprocess_mock(image, variance, stamp_size=stamp, rng=rng,
                                                  mask=raw_mask, mask_planes=planes,
                                                  neighbours=neighbours)
    for b, band in enumerate(bands):
        f = float(model[b].sum())
        extra[f"flux_{band}"] = f
        extra[f"mag_{band}"] = survey.zero_point - 2.5 * math.log10(f) if f > 0 else float("nan")
    for key, v in info.items():
        if isinstance(v, int | float | np.integer | np.floating):
            extra[f"prep_{key}"] = float(v)
    return image, variance, mask, None, extra


def _realistic(
    im: SimImage, *, bands: Sequence[str], stamp: int, rng: np.random.Generator,
    survey: SurveyDescriptor, mask_neighbours: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    from ..stamps import prepare_psf, preprocess_stamp

    try:
        prep = preprocess_stamp(im.image, variance=im.variance, mask=im.mask, stamp_size=stamp,
                                rng=rng, mask_neighbours=mask_neighbours, mask_planes=im.mask_planes)
    except DataFormatError as exc:
        msg = f"{im.path.name}: {exc}"
        raise ImageFileExcluded(msg, reason="bad_data") from None
    if prep.info["all_bad_bands"]:
        bad = [bands[b] for b in prep.info["all_bad_bands"]]
        msg = f"{im.path.name}: every pixel masked in band(s) {bad}"
        raise ImageFileExcluded(msg, reason="bad_data")
    size = int(survey.psf.size) | 1
    obj_psf = []
    model_psf = None
    for b, p in enumerate(im.psf):
        if p is None:
            if model_psf is None:
                model_psf = PSF.from_survey(survey, bands=tuple(bands)).image
            obj_psf.append(model_psf[b])
            continue
        try:
            obj_psf.append(prepare_psf(p, size=size))
        except DataFormatError as exc:
            msg = f"{im.path.name}: PSF of band {bands[b]}: {exc}"
            raise ImageFileExcluded(msg, reason="bad_data") from None
    extra: dict[str, Any] = {"psf_from_file": int(all(p is not None for p in im.psf)),
                             "n_neighbour_pixels": prep.info["n_neighbour_pixels"],
                             "masked_fraction": prep.info["masked_fraction"]}
    good = np.asarray(prep.mask) == 0
    for b, band in enumerate(bands):
        f = float(np.asarray(prep.image)[b][good[b]].sum())
        extra[f"flux_{band}"] = f
        extra[f"mag_{band}"] = survey.zero_point - 2.5 * math.log10(f) if f > 0 else float("nan")
    return (np.asarray(prep.image), np.asarray(prep.variance), np.asarray(prep.mask),
            np.stack(obj_psf), extra)
