"""Typed, frozen configuration objects and the TOML descriptor loader.

Descriptors (``sims/<name>.toml`` and ``observed/<name>.toml``) are parsed into frozen
dataclasses. Unknown keys are an error that names the key, so typos never pass
silently. ``${ENV_VAR}`` in string values is expanded from the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, RangeError

__all__ = [
    "SCORE_DEFAULTS",
    "Cosmology",
    "DemoSimConfig",
    "NoiseConfig",
    "PSFConfig",
    "SampleConfig",
    "ScoreConfig",
    "ScoreDefaults",
    "SelectionConfig",
    "SimDescriptor",
    "SurveyDescriptor",
    "apply_overrides",
    "from_mapping",
    "load_sim_descriptor",
    "load_survey_descriptor",
]


# ---------------------------------------------------------------------------
# Simulation descriptors
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Cosmology:
    """Flat LambdaCDM parameters of a simulation (H0 in km/s/Mpc)."""

    H0: float = 67.74
    Om0: float = 0.3089
    Ob0: float = 0.0486

    @property
    def h(self) -> float:
        """Dimensionless Hubble parameter H0 / (100 km/s/Mpc)."""
        return self.H0 / 100.0

    def astropy(self):
        """Return the equivalent :class:`astropy.cosmology.FlatLambdaCDM`."""
        from astropy.cosmology import FlatLambdaCDM

        return FlatLambdaCDM(H0=self.H0, Om0=self.Om0, Ob0=self.Ob0)

    def kpc_per_arcsec(self, redshift: float) -> float:
        """Proper kpc subtended by one arcsec at ``redshift`` (angular-diameter distance).

        The one kpc <-> arcsec conversion of the package (mock camera, image-kind
        simulations with kpc pixels, demo samples); its inverse converts kpc to arcsec.

        Parameters
        ----------
        redshift : float
            Observation redshift, > 0.

        Returns
        -------
        float
            kpc per arcsec.
        """
        d_a_kpc = float(self.astropy().angular_diameter_distance(redshift).to("kpc").value)
        return d_a_kpc * math.pi / 180.0 / 3600.0


@dataclass(frozen=True)
class SelectionConfig:
    """Which subhalos become galaxies to render.

    Masses are physical Msun (never h-scaled). ``mass_definition`` is ``"in_rad"``
    (stellar mass within twice the stellar half-mass radius, the TNG convention) or
    ``"total"`` (all bound stars).
    """

    min_stellar_mass_msun: float = 1e10
    max_stellar_mass_msun: float = float("inf")
    mass_definition: str = "in_rad"
    centrals: str = "all"  # "all" | "centrals" | "satellites"
    min_star_particles: int = 100
    require_subhalo_flag: bool = True
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class DemoSimConfig:
    """Parameters of the built-in synthetic simulation (``reader = "demo"``)."""

    n_galaxies: int = 300
    seed: int = 20261122
    min_log_mass: float = 9.5
    max_log_mass: float = 11.5
    snapshot: int = 78
    redshift: float = 0.3
    size_scale: float = 1.25
    clump_fraction: float = 0.03


@dataclass(frozen=True)
class ScoreDefaults:
    """Per-simulation defaults for ``simcompare score`` (the demo uses small ones).

    Any value left unset falls back to :class:`ScoreConfig`'s default; options given on
    the command line always win.
    """

    n_galaxies: int | None = None
    stamp_size: int | None = None
    levels: int | None = None
    blocks: int | None = None
    hidden: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    morphology_max: int | None = None
    n_bootstrap: int | None = None
    ensemble: int | None = None
    classifier_epochs: int | None = None
    orientations: int | None = None


@dataclass(frozen=True)
class SimDescriptor:
    """A simulation: where its data lives and how to read it.

    ``kind = "particles"`` (the default) names a particle ``reader``; ``kind = "images"``
    names a folder of FITS images (``path`` + ``pattern``), see
    :mod:`simcompare.sims.images`: ``[bands]`` maps each survey band to a plane by the
    file's filter name, ``psf_convolved`` says whether the images already carry a PSF
    (and noise, i.e. are survey-realistic), and ``flux_unit``, ``pixel_scale_arcsec`` or
    ``kpc_per_pixel`` override what the files' headers say (``BUNIT``, ``CDELT1``).
    ``catalog`` names a table beside the images (object id, view, redshift, stellar
    mass). An image descriptor may also name a particle ``reader`` and ``base_path`` for
    the same galaxies (``simcompare crosscheck``).
    """

    name: str
    title: str
    reader: str = ""
    kind: str = "particles"
    path: str = ""
    pattern: str = "*.fits"
    psf_convolved: bool = False
    bands: dict[str, str] = field(default_factory=dict)
    flux_unit: str = ""
    pixel_scale_arcsec: float | None = None
    kpc_per_pixel: float | None = None
    catalog: str = ""
    base_path: str = ""
    snapshots: tuple[int, ...] = ()
    default_snapshot: int | None = None
    box_size_ckpc_h: float | None = None
    softening_kpc: float = 0.5
    observation_redshift: float | None = None
    cosmology: Cosmology = field(default_factory=Cosmology)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    demo: DemoSimConfig = field(default_factory=DemoSimConfig)
    score_defaults: ScoreDefaults = field(default_factory=ScoreDefaults)
    notes: str = ""
    source: str = ""  # path of the TOML file it was read from (filled by the loader)


# ---------------------------------------------------------------------------
# Survey descriptors
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PSFConfig:
    """Per-band PSF model: ``kind`` is ``moffat``, ``kolmogorov``, ``gaussian`` or ``image``.

    ``fwhm_arcsec`` maps band name to the FWHM of the atmospheric PSF. The PSF does not
    include the pixel response; rendering adds it exactly once.
    """

    kind: str = "moffat"
    beta: float = 3.5
    fwhm_arcsec: Mapping[str, float] = field(default_factory=dict)
    image: str = ""
    size: int = 25


@dataclass(frozen=True)
class NoiseConfig:
    """Per-band noise: sky standard deviation per pixel (flux units) and the gain.

    ``gain`` converts flux units to detected photo-electrons for the source Poisson
    noise (electrons per flux unit); ``0`` disables source noise. ``blank_sky``
    optionally names real blank-sky cutouts (a folder of ``<field_id>/<band>.fits`` in
    the HSC layout, or FITS cubes; see :mod:`simcompare.mock.blanksky`) into which
    ``noise = "blank-sky"`` renders insert the noise-free mocks.
    """

    sky_sigma: Mapping[str, float] = field(default_factory=dict)
    gain: Mapping[str, float] = field(default_factory=dict)
    blank_sky: str = ""


@dataclass(frozen=True)
class SampleConfig:
    """Where the observed sample lives: a cutout folder + catalogue, a manifest, or demo.

    ``cuts`` selects catalogue rows, e.g. ``[sample.cuts]`` ``redshift = [0.1, 0.5]``
    (inclusive [min, max] per column; checked when the sample is ingested).
    """

    cutout_dir: str = ""
    catalog: str = ""
    manifest: str = ""
    demo: bool = False
    demo_n_galaxies: int = 1500
    demo_seed: int = 7
    demo_redshift: float = 0.5
    cuts: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class SurveyDescriptor:
    """An imaging survey: bands, filters, pixels, PSF, noise and observed sample."""

    name: str
    title: str
    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    zero_point: float
    filters: tuple[str, ...] = ()  # speclite curves: needed only to render star particles
    flux_unit: str = "counts"
    stamp_size: int = 64
    default_redshift: float = 0.1
    psf: PSFConfig = field(default_factory=PSFConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    notes: str = ""
    source: str = ""

    def select_bands(self, bands: Sequence[str] = ()) -> tuple[str, ...]:
        """The bands asked for (all the survey's when none are); an unknown band is a ConfigError."""
        unknown = [b for b in bands if b not in self.bands]
        if unknown:
            msg = f"band(s) {unknown} are not bands of survey {self.name!r} ({list(self.bands)})"
            raise ConfigError(msg)
        return tuple(bands) if bands else tuple(self.bands)

    def filters_for(self, bands: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The SPS filter curve of each band; a ConfigError when the survey names none.

        ``filters`` is needed only to render star particles (and the synthetic observed
        demo sample): image-kind simulations and real cutouts do without it.
        """
        if not self.filters:
            where = self.source or "the survey descriptor"
            msg = (f"survey {self.name!r} has no 'filters' (speclite filter curves, one per band): "
                   "they are needed to render star particles or the demo sample; add "
                   f"filters = [...] to {where}, or score a kind = \"images\" simulation")
            raise ConfigError(msg)
        return tuple(self.filters[self.bands.index(b)] for b in bands)

    def band_values(self, mapping: Mapping[str, float], what: str) -> list[float]:
        """Return ``mapping`` ordered by :attr:`bands`; a missing band is a ConfigError."""
        missing = [b for b in self.bands if b not in mapping]
        if missing:
            where = self.source or "the descriptor"
            msg = f"survey {self.name!r}: {what} has no value for band(s) {missing}; add them to {where}"
            raise ConfigError(msg)
        return [float(mapping[b]) for b in self.bands]


# ---------------------------------------------------------------------------
# The score command
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreConfig:
    """Everything ``simcompare score`` needs; mirrors the command-line options.

    Options left as ``None`` take the simulation descriptor's ``[score_defaults]``
    (the demo uses small values there) and then the real defaults in
    :data:`SCORE_DEFAULTS` (64x64 stamps, a mid-size Glow). Call :meth:`resolved`
    to obtain a copy with every option filled in.
    """

    sim: str
    survey: str
    snapshot: int | None = None
    n_galaxies: int | None = None
    base_path: str | None = None
    workspace: str = "."
    device: str = "auto"
    workers: int | None = None
    scheduler: str | None = None
    stamp_size: int | None = None
    bands: tuple[str, ...] = ()
    levels: int | None = None
    blocks: int | None = None
    hidden: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 1e-3
    background: str = "sersic"
    background_conditions: str = "broad"
    ensemble: int | None = None
    n_bootstrap: int | None = None
    n_null: int = 50
    seed: int = 0
    noise: str = "survey"
    morphology_max: int | None = None
    progress: bool = False
    floor: bool = True
    floor_max: int | None = None
    floor_particles: int | None = None
    floor_curve: tuple[int, ...] = ()
    lookalike_mass_window: float | None = None
    classifier_epochs: int | None = None
    orientations: int | None = None
    mock_survey: str | None = None
    precision: str = "auto"
    compile: bool = False

    def resolved(self, defaults: ScoreDefaults | None = None) -> ScoreConfig:
        """Fill every ``None`` option from ``defaults`` and then :data:`SCORE_DEFAULTS`."""
        updates: dict[str, Any] = {}
        if self.workers is None:  # a local process pool over the machine's cores (at most 4)
            updates["workers"] = max(1, min(4, os.cpu_count() or 1))
        for key, fallback in SCORE_DEFAULTS.items():
            if getattr(self, key) is None:
                value = getattr(defaults, key, None) if defaults is not None else None
                updates[key] = fallback if value is None else value
        out = dataclasses.replace(self, **updates)
        if out.orientations not in (1, 4, 8):
            msg = f"orientations must be 1, 4 or 8, got {out.orientations!r}"
            raise ConfigError(msg)
        return out


#: Real defaults of the tunable score options (descriptor [score_defaults] come first).
SCORE_DEFAULTS: dict[str, Any] = {
    "n_galaxies": None,
    "stamp_size": None,  # the survey descriptor's stamp_size
    "levels": 3,
    "blocks": 16,
    "hidden": 128,
    "epochs": 20,
    "batch_size": 32,
    "morphology_max": 500,
    "n_bootstrap": 1000,
    # three independently seeded models: their mean ratio is the score. On the closure
    # benchmark (benchmarks/fine_structure_power.py) the ensemble is what lifts the
    # fine-structure AUROC and shrinks its spread between training seeds
    "ensemble": 3,
    # the image classifier's epochs per fold: on the closure benchmark clump removal read
    # 0.84 at 10, 0.85-0.90 at 25 and 0.94-0.97 at 50, the same population 0.48-0.50
    "classifier_epochs": 50,
    # every image scored in its four quarter turns, the maps averaged: on the closure
    # benchmark the fine-structure AUROC's spread over seeds went 0.034 -> 0.010
    "orientations": 4,
}


# ---------------------------------------------------------------------------
# Generic mapping -> frozen dataclass conversion with unknown-key checks
# ---------------------------------------------------------------------------
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1), ""), value)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            msg = f"{where} must be a table, got {type(value).__name__}"
            raise ConfigError(msg)
        return from_mapping(tp, value, where=where)
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            msg = f"{where} must be a list, got {value!r}"
            raise ConfigError(msg)
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Mapping or tp is Mapping:
        if not isinstance(value, Mapping):
            msg = f"{where} must be a table such as {{g = 0.8, r = 0.7}}, got {value!r}"
            raise ConfigError(msg)
        table = {}
        for k, v in value.items():
            try:
                if isinstance(v, bool):
                    raise TypeError
                table[str(k)] = float(v)
            except (TypeError, ValueError):
                msg = f"{where}: the value of {str(k)!r} must be a number, got {v!r}"
                raise ConfigError(msg) from None
        return types.MappingProxyType(table)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            msg = f"{where} must be a number, got {value!r}"
            raise ConfigError(msg)
        try:
            return float(value)
        except ValueError:
            msg = f"{where} must be a number, got {value!r}"
            raise ConfigError(msg) from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{where} must be an integer, got {value!r}"
            raise ConfigError(msg)
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            msg = f"{where} must be true or false, got {value!r}"
            raise ConfigError(msg)
        return value
    if tp is str:
        if not isinstance(value, str):
            msg = f"{where} must be a string, got {value!r}"
            raise ConfigError(msg)
        return _expand_env(value)
    return value


def from_mapping(cls: type, data: Mapping[str, Any], *, where: str = "config") -> Any:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        msg = (f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
               " (check the spelling)")
        raise ConfigError(msg)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            msg = f"{where}: required key {f.name!r} is missing; add it"
            raise ConfigError(msg)
    return cls(**kwargs)


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML ({exc}); fix the file"
        raise ConfigError(msg) from None


def load_sim_descriptor(path: str | os.PathLike) -> SimDescriptor:
    """Read a simulation descriptor TOML file."""
    path = Path(path)
    data = _load_toml(path)
    data["source"] = str(path)
    desc = from_mapping(SimDescriptor, data, where=path.name)
    if desc.kind not in {"particles", "images"}:
        msg = f"{path.name}: kind must be 'particles' or 'images' (got {desc.kind!r})"
        raise ConfigError(msg)
    if desc.kind == "images":
        _check_image_descriptor(desc, path.name)
        if not desc.reader:
            return desc
    if not desc.reader:
        msg = (f"{path.name}: missing key 'reader'; add reader = \"tng\", \"tng-api\", \"eagle\" or "
               f"\"demo\" (or kind = \"images\" for a folder of FITS images)")
        raise ConfigError(msg)
    if desc.reader not in {"tng", "tng-api", "eagle", "demo"}:
        msg = f"{path.name}: reader must be one of tng, tng-api, eagle, demo (got {desc.reader!r})"
        raise ConfigError(msg)
    for key, value in (("softening_kpc", desc.softening_kpc), ("box_size_ckpc_h", desc.box_size_ckpc_h)):
        if value is not None and not value > 0:
            msg = f"{path.name}: {key} must be positive, got {value}; set it to the simulation's value"
            raise RangeError(msg, value=float(value), min=0.0)
    if desc.selection.min_star_particles < 0:
        msg = (f"{path.name}: selection.min_star_particles must be >= 0, got "
               f"{desc.selection.min_star_particles}; set a particle count (0: no cut)")
        raise RangeError(msg, value=desc.selection.min_star_particles, min=0.0)
    if desc.observation_redshift is not None and desc.observation_redshift < 0:
        msg = (f"{path.name}: observation_redshift must be >= 0, got {desc.observation_redshift}; "
               "set it to the redshift the galaxies are observed at")
        raise RangeError(msg, value=desc.observation_redshift, min=0.0)
    return desc


def _check_image_descriptor(desc: SimDescriptor, where: str) -> None:
    """The keys ``kind = "images"`` needs: path and a [bands] table of plane names."""
    if not desc.path:
        msg = (f"{where}: kind = \"images\" needs path = \"<folder of FITS files>\" "
               "(relative to the descriptor or the workspace)")
        raise ConfigError(msg)
    if not isinstance(desc.bands, Mapping) or not desc.bands or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in desc.bands.items()):
        msg = (f"{where}: kind = \"images\" needs a [bands] table mapping each survey band to "
               "the file's filter name, e.g. [bands] i = \"SUBARU_HSC.I\"")
        raise ConfigError(msg)
    for key in ("pixel_scale_arcsec", "kpc_per_pixel"):
        value = getattr(desc, key)
        if value is not None and not value > 0:
            msg = f"{where}: {key} must be positive (got {value})"
            raise ConfigError(msg)
    if desc.pixel_scale_arcsec is not None and desc.kpc_per_pixel is not None:
        msg = f"{where}: give pixel_scale_arcsec or kpc_per_pixel, not both"
        raise ConfigError(msg)


def load_survey_descriptor(path: str | os.PathLike) -> SurveyDescriptor:
    """Read a survey descriptor TOML file and check per-band tables cover every band."""
    path = Path(path)
    data = _load_toml(path)
    data["source"] = str(path)
    desc = from_mapping(SurveyDescriptor, data, where=path.name)
    if desc.filters and len(desc.filters) != len(desc.bands):
        msg = f"{path.name}: 'filters' must name one filter curve per band ({len(desc.bands)})"
        raise ConfigError(msg)
    if desc.psf.kind != "image":
        desc.band_values(desc.psf.fwhm_arcsec, "psf.fwhm_arcsec")
    desc.band_values(desc.noise.sky_sigma, "noise.sky_sigma")
    if desc.stamp_size < 8:
        msg = f"{path.name}: stamp_size must be at least 8 pixels"
        raise ConfigError(msg)
    return desc


def apply_overrides(obj: Any, overrides: list[str]) -> Any:
    """Return a copy of dataclass ``obj`` with ``key=value`` overrides applied.

    Nested keys use dots (``psf.beta=3.0``); values are parsed as TOML scalars.
    """
    for item in overrides:
        if "=" not in item:
            msg = f"override {item!r} must look like key=value"
            raise ConfigError(msg)
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        obj = _set_path(obj, key.strip().split("."), value)
    return obj


def _set_path(obj: Any, keys: list[str], value: Any) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if keys[0] not in names:
        msg = f"unknown key {keys[0]!r} in override; allowed: {sorted(names)}"
        raise ConfigError(msg)
    if len(keys) == 1:
        hints = typing.get_type_hints(type(obj))
        return dataclasses.replace(obj, **{keys[0]: _convert(hints[keys[0]], value, keys[0])})
    return dataclasses.replace(obj, **{keys[0]: _set_path(getattr(obj, keys[0]), keys[1:], value)})
