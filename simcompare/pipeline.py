"""``simcompare score``: the whole chain, each stage cached.

render -> ingest -> train -> evaluate -> appearance -> measure -> floor -> compare -> report.

Every stage writes into ``<workspace>/.simcompare/cache/<stage>/<key>/``, where ``key``
hashes the stage's own configuration, the fingerprints of the input files it reads (see
:mod:`simcompare._fingerprint`) and the keys of the stages it reads from: an edited
catalogue, cutout or snapshot file gives a new key, so that stage and every stage after it
run again, and ``score`` logs for each stage whether it was reused or why it reran. A
stage writes into ``<key>.partial/`` and renames it to ``<key>/`` once complete, so a
killed run never leaves a folder that looks complete. A second identical run only
re-links the run folder and rewrites the report. One ``score`` at a time writes a
workspace (see :mod:`simcompare._lock`). The run folder
``<workspace>/.simcompare/runs/<sim>_<survey>/run.json`` names every artefact; the
report reads nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from ._io import write_json_atomic, write_parquet_atomic
from ._lock import workspace_lock
from ._stages import Stage, _stage, _Stages, stage_key
from ._version import __version__
from .cluster import Cluster
from .config import SCORE_DEFAULTS, ScoreConfig, SimDescriptor, SurveyDescriptor
from .errors import ConfigError
from .registry import find_sim, find_survey, list_sims, list_surveys

__all__ = ["cache_root", "file_sha256", "list_all", "score", "stage_key"]

log = logging.getLogger(__name__)

#: Packages whose versions every run records.
VERSIONED_PACKAGES = (
    "numpy", "scipy", "torch", "normflows", "illustris_python", "galsim", "speclite",
    "bagpipes", "statmorph", "photutils", "astropy", "h5py", "pandas", "pyarrow",
    "matplotlib", "jinja2", "numba", "dask",
)


def cache_root(workspace: str | os.PathLike) -> Path:
    """The cache folder of a workspace (``<workspace>/.simcompare``)."""
    return Path(workspace) / ".simcompare"


def file_sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _descriptor_text(desc: SimDescriptor | SurveyDescriptor) -> str:
    try:
        return Path(desc.source).read_text()
    except OSError:
        return json.dumps(dataclasses.asdict(desc), sort_keys=True, default=str)


def package_versions() -> dict[str, str]:
    """Installed versions of simcompare's main dependencies (without importing them)."""
    from importlib import metadata

    names = {"illustris_python": "illustris-python", "dask": "dask"}
    out = {"python": platform.python_version(), "simcompare": __version__}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(names.get(pkg, pkg))
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _check_options(cfg: ScoreConfig, survey: SurveyDescriptor) -> None:
    from .inference import PRECISIONS

    if cfg.precision not in PRECISIONS:
        msg = f"--precision must be one of {', '.join(PRECISIONS)} (got {cfg.precision!r})"
        raise ConfigError(msg)
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        msg = f"--device must be auto, cpu or cuda (got {cfg.device!r})"
        raise ConfigError(msg)
    if cfg.background not in ("sersic", "none"):
        msg = f"--background must be 'sersic' or 'none' (got {cfg.background!r})"
        raise ConfigError(msg)
    if cfg.background_conditions not in ("broad", "survey"):
        msg = ("--background-conditions must be 'broad' or 'survey' "
               f"(got {cfg.background_conditions!r})")
        raise ConfigError(msg)
    if cfg.noise not in ("survey", "none", "blank-sky"):
        msg = f"--noise must be 'survey', 'none' or 'blank-sky' (got {cfg.noise!r})"
        raise ConfigError(msg)
    survey.select_bands(cfg.bands)  # a ConfigError names an unknown band
    for name in ("epochs", "batch_size", "levels", "blocks", "hidden", "workers", "n_bootstrap",
                 "ensemble", "floor_max", "floor_particles"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            msg = f"--{name.replace('_', '-')} must be at least 1 (got {value})"
            raise ConfigError(msg)
    bad_curve = [c for c in cfg.floor_curve if int(c) < 1]
    if bad_curve:
        msg = f"--floor-curve particle counts must be at least 1 (got {bad_curve})"
        raise ConfigError(msg)
    stamp = cfg.stamp_size or survey.stamp_size
    if stamp % (2 ** (cfg.levels or 1)):
        msg = (f"stamp size {stamp} must be divisible by 2**levels = {2 ** cfg.levels}; "
               "change --stamp-size or --levels")
        raise ConfigError(msg)
    if cfg.n_galaxies is not None and cfg.n_galaxies < 1:
        msg = f"--n-galaxies must be at least 1 (got {cfg.n_galaxies})"
        raise ConfigError(msg)


def score(config: ScoreConfig) -> Path:
    """Run the whole comparison of one simulation against one survey.

    Parameters
    ----------
    config : ScoreConfig
        Options; ``None`` values take the simulation's ``[score_defaults]`` and then the
        real defaults.

    Returns
    -------
    Path
        The report folder, ``<workspace>/reports/<sim>_<survey>/``.
    """
    workspace = Path(config.workspace).resolve()
    sim = find_sim(config.sim, workspace=workspace)
    survey = find_survey(config.survey, workspace=workspace)
    cfg = config.resolved(sim.score_defaults)
    _check_options(cfg, survey)
    mock_survey = None
    if cfg.mock_survey is not None:
        mock_survey = find_survey(cfg.mock_survey, workspace=workspace)
        _check_mock_survey(mock_survey, survey, cfg)
    root = cache_root(workspace)
    with workspace_lock(workspace, what="score"):
        stages = _Stages(root, workspace)
        # one pool of workers for every stage; started only when a stage needs it
        cluster = Cluster(workers=cfg.workers, scheduler=cfg.scheduler)
        try:
            return _score(cfg, sim, survey, workspace, stages, cluster, mock_survey)
        finally:
            cluster.close()
            stages.close()


def _render_inputs(cfg: ScoreConfig, sim: SimDescriptor, survey: SurveyDescriptor,
                   workspace: Path) -> list[tuple[Path, bool]]:
    """The simulation files, PSF images and blank-sky fields the render stage reads."""
    from .observed.sample import _tree, psf_image_files
    from .sims import input_files

    files = input_files(sim, snapshot=cfg.snapshot, base_path=cfg.base_path, workspace=workspace)
    files += [(p, False) for p in psf_image_files(survey, workspace=workspace)]
    if cfg.noise == "blank-sky" and survey.noise.blank_sky:
        from .errors import DataNotFoundError
        from .mock.blanksky import resolve_blank_sky_path

        try:
            sky = resolve_blank_sky_path(survey.noise.blank_sky, workspace=workspace,
                                         descriptor_source=survey.source)
        except DataNotFoundError:
            sky = None  # the render stage says what is missing
        if sky is not None:
            files += [(sky, False)] if sky.is_file() else [(p, False) for p in _tree(sky)]
    return files + _sps_files(survey)


def _sps_files(survey: SurveyDescriptor) -> list[tuple[Path, bool]]:
    """The BC03 grid and the survey's filter curves (speclite names or files)."""
    import importlib.util

    from .errors import DataNotFoundError
    from .sps import bc03_grid_path

    files: list[tuple[Path, bool]] = []
    try:
        files.append((bc03_grid_path(), False))
    except DataNotFoundError:
        pass  # the render stage says what to install
    spec = importlib.util.find_spec("speclite")
    folder = (Path(spec.submodule_search_locations[0]) / "data" / "filters"
              if spec is not None and spec.submodule_search_locations else None)
    for name in survey.filters:
        path = Path(name).expanduser()
        if not path.is_file() and folder is not None:
            path = folder / f"{name}.ecsv"
        if path.is_file():
            files.append((path, True))
    return files


@dataclasses.dataclass
class _Run:
    """What every stage of one ``score`` reads: options, descriptors, workspace, stages."""

    cfg: ScoreConfig
    sim: SimDescriptor
    survey: SurveyDescriptor
    workspace: Path
    stages: _Stages
    cluster: Cluster
    mock_survey: SurveyDescriptor | None = None

    @property
    def render_survey(self) -> SurveyDescriptor:
        """The descriptor the mocks are rendered with (``--mock-survey``, else the survey)."""
        return self.mock_survey or self.survey

    @property
    def stamp(self) -> int:
        return self.cfg.stamp_size or self.survey.stamp_size

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.cfg.bands) or self.survey.bands

    @property
    def column(self) -> str:
        from .stats.metrics import FINE_STRUCTURE_COLUMN

        return FINE_STRUCTURE_COLUMN if self.cfg.background != "none" else "log_prob_nats"

    def key(self, stage: str) -> str | None:
        return self.stages.keys.get(stage)

    def out(self, stage: str, name: str = "") -> Path:
        """A file of a stage's (cached) output folder; the folder itself without ``name``."""
        final = self.stages.final(stage)
        return final / name if name else final


#: The cached stages in the order ``score`` runs them (the report follows).
STAGES = ("render", "observed", "train", "evaluate", "appearance", "morphology", "floor", "compare")


def _render_stage(r: _Run) -> Stage:
    """1. render the simulation."""
    cfg = r.cfg
    config = {
        "stage": "render", "version": __version__, "sim": _descriptor_text(r.sim),
        "survey": _descriptor_text(r.render_survey), "snapshot": cfg.snapshot, "n_galaxies": cfg.n_galaxies,
        "base_path": cfg.base_path, "stamp": r.stamp, "bands": r.bands, "noise": cfg.noise,
        "seed": cfg.seed,
    }
    if r.sim.kind == "images":  # published images: the files themselves are the input
        from .sims.images import image_fingerprint

        config["images"] = image_fingerprint(r.sim, workspace=r.workspace)
    else:  # particles drawn on sub-pixels: stamps rendered on whole pixels are not reused
        from .mock.project import LIGHT_MAP_MARGIN
        from .mock.render import RENDER_OVERSAMPLE

        config["oversample"] = RENDER_OVERSAMPLE
        config["light_map_margin"] = LIGHT_MAP_MARGIN

    def run(work: Path, resume: bool) -> None:
        from .mock import render

        render(
            r.sim, r.render_survey, out=work / "mocks.h5", snapshot=cfg.snapshot,
            n_galaxies=cfg.n_galaxies,
            base_path=cfg.base_path, workspace=r.workspace, stamp_size=r.stamp, bands=r.bands,
            noise=cfg.noise, seed=cfg.seed, cluster=r.cluster, progress=cfg.progress,
        )

    return Stage("render", config, run,
                 files=_render_inputs(cfg, r.sim, r.render_survey, r.workspace))


def _observed_stage(r: _Run) -> Stage:
    """2. the observed sample."""
    from .observed.sample import sample_input_files

    config = {"stage": "observed", "version": __version__, "survey": _descriptor_text(r.survey),
              "stamp": r.stamp, "bands": r.bands}
    files = sample_input_files(r.survey, workspace=r.workspace, stamp_size=r.stamp,
                               progress=r.cfg.progress)

    def run(work: Path, resume: bool) -> None:
        from .observed import load_sample

        load_sample(r.survey, out=work / "observed.h5", workspace=r.workspace, stamp_size=r.stamp,
                    bands=r.bands, progress=r.cfg.progress, cluster=r.cluster)

    return Stage("observed", config, run, files=files)


def _train_stage(r: _Run) -> Stage:
    """3. train the density model (and the background model); resumes from checkpoints."""
    cfg = r.cfg
    config = {
        "stage": "train", "version": __version__, "observed": r.key("observed"), "levels": cfg.levels,
        "blocks": cfg.blocks, "hidden": cfg.hidden, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "background": cfg.background,
        "background_conditions": cfg.background_conditions, "ensemble": cfg.ensemble,
    }

    def run(work: Path, resume: bool) -> None:
        from .density import train
        from .density.train import TrainOptions

        train(
            r.out("observed", "observed.h5"), out=work, levels=cfg.levels, blocks=cfg.blocks,
            hidden=cfg.hidden, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            seed=cfg.seed, device=cfg.device, background=cfg.background,
            background_conditions=cfg.background_conditions, ensemble=cfg.ensemble,
            resume=resume, progress=cfg.progress,
            # the reference scored as this run scores (a cached model scored otherwise is
            # re-scored by the evaluate stage)
            options=TrainOptions(score_orientations=cfg.orientations),
        )

    return Stage("train", config, run, upstream=("observed",), resumable=True)


def _evaluate_stage(r: _Run) -> Stage:
    """4. score the simulated images, and the held-out observed test split the same way.

    train() scored the test split in the model's own orientations
    (reference_scores.parquet); with another ``orientations`` it is scored again here,
    so that both sides of every comparison are scored alike.
    """
    cfg = r.cfg
    # the stage also writes the reference scores (stages of older versions did not)
    config = {"stage": "evaluate", "train": r.key("train"), "render": r.key("render"),
              "outputs": ["sim_scores.parquet", "reference_scores.parquet"]}
    if cfg.precision != "auto":  # auto is float32 on CPU; a named precision may change scores
        config["precision"] = cfg.precision
    if cfg.orientations != 1:  # in the key only when set (older keys scored one orientation)
        config["orientations"] = cfg.orientations

    def run(work: Path, resume: bool) -> None:
        from .density import evaluate
        from .density.evaluate import reference_table

        model = r.out("train")
        evaluate(model, r.out("render", "mocks.h5"), out=work / "sim_scores.parquet",
                 device=cfg.device, progress=cfg.progress, cluster=r.cluster,
                 precision=cfg.precision, use_torch_compile=cfg.compile,
                 orientations=cfg.orientations)
        # the model's own table, or the one evaluate() just scored for its percentiles
        write_parquet_atomic(reference_table(model, cfg.orientations, device=cfg.device,
                                             cluster=r.cluster),
                             work / "reference_scores.parquet")

    return Stage("evaluate", config, run, upstream=("train", "render"),
                 done=lambda key: {"train": r.key("train"), "render": r.key("render")})


def _appearance_stage(r: _Run) -> Stage:
    """4b. classifier test, appearance embedding, mismatch maps (simcompare.appearance)."""
    cfg = r.cfg
    config = {"stage": "appearance", "version": __version__, "evaluate": r.key("evaluate"),
              "observed": r.key("observed"), "seed": cfg.seed, "n_bootstrap": cfg.n_bootstrap}
    if cfg.lookalike_mass_window is not None:  # in the key only when set (older keys stay valid)
        config["lookalike_mass_window"] = cfg.lookalike_mass_window
    if cfg.classifier_epochs != SCORE_DEFAULTS["classifier_epochs"]:  # likewise
        config["classifier_epochs"] = cfg.classifier_epochs

    def run(work: Path, resume: bool) -> None:
        from .appearance import run as run_appearance

        run_appearance(mocks=r.out("render", "mocks.h5"), observed=r.out("observed", "observed.h5"),
                       model=r.out("train"), sim_scores=r.out("evaluate", "sim_scores.parquet"),
                       reference_scores=r.out("evaluate", "reference_scores.parquet"), out=work,
                       seed=cfg.seed, n_bootstrap=cfg.n_bootstrap or 500, device=cfg.device,
                       mass_window_dex=cfg.lookalike_mass_window,
                       classifier_epochs=cfg.classifier_epochs, orientations=cfg.orientations,
                       progress=cfg.progress)

    return Stage("appearance", config, run, upstream=("evaluate", "observed"))


def _morphology_stage(r: _Run) -> Stage:
    """5. classical morphology on the same stamps.

    Keyed on the held-out test ids, not the whole training stage: another background or
    architecture with the same split reuses the measurements.
    """
    cfg = r.cfg
    split = r.out("train", "split.json")
    test_ids = sorted(json.loads(split.read_text())["test"])
    config = {
        "stage": "morphology", "version": __version__, "render": r.key("render"),
        "observed": r.key("observed"), "test_ids": stage_key({"ids": test_ids}),
        "max": cfg.morphology_max, "seed": cfg.seed}

    def run(work: Path, resume: bool) -> None:
        from .morphology import measure

        _write_test_split(r.out("observed", "observed.h5"), split, work / "observed_test.h5")
        measure(r.out("render", "mocks.h5"), out=work / "morphology_sim.parquet",
                max_images=cfg.morphology_max, cluster=r.cluster, seed=cfg.seed,
                progress=cfg.progress)
        measure(work / "observed_test.h5", out=work / "morphology_reference.parquet",
                max_images=cfg.morphology_max, cluster=r.cluster, seed=cfg.seed,
                progress=cfg.progress)

    return Stage("morphology", config, run, upstream=("render", "observed"),
                 done=lambda key: {"key": key})


def _floor_stage(r: _Run) -> Stage | None:
    """6. the pipeline's own floor: the observed galaxies' smooth fits through the mock path."""
    cfg = r.cfg
    if not cfg.floor:
        return None
    config = {
        "stage": "floor", "version": __version__, "train": r.key("train"), "render": r.key("render"),
        "morphology": r.key("morphology"), "column": r.column, "particles": cfg.floor_particles,
        "curve": list(cfg.floor_curve), "max": cfg.floor_max or 2 * cfg.morphology_max,
        "n_bootstrap": cfg.n_bootstrap, "n_null": min(cfg.n_null, 10), "seed": cfg.seed,
        "analytic_side": "galsim"}  # exact Sersic drawings (were the background's mixture)
    if cfg.orientations != 1:  # in the key only when set (older keys scored one orientation)
        config["orientations"] = cfg.orientations
    config["classifier_epochs"] = cfg.classifier_epochs  # the any-difference axis' floor
    if r.mock_survey is not None:  # the self-simulations take the observed survey's PSF and noise
        config["psf_noise_of"] = _descriptor_text(r.survey)

    def run(work: Path, resume: bool) -> None:
        from .floor import measure_floor

        measure_floor(
            observed_test=r.out("morphology", "observed_test.h5"), mocks=r.out("render", "mocks.h5"),
            model=r.out("train"), out=work, survey=r.survey, workspace=r.workspace,
            column=r.column, n_particles=cfg.floor_particles, curve=tuple(cfg.floor_curve),
            max_galaxies=cfg.floor_max or 2 * cfg.morphology_max,
            n_bootstrap=cfg.n_bootstrap, n_null=min(cfg.n_null, 10), seed=cfg.seed,
            device=cfg.device, workers=cfg.workers, progress=cfg.progress, cluster=r.cluster,
            orientations=cfg.orientations, classifier_epochs=cfg.classifier_epochs)

    return Stage("floor", config, run, upstream=("train", "render", "morphology"))


def _compare_stage(r: _Run) -> Stage:
    """7. population statistics (simcompare.stats), with the appearance results merged in."""
    cfg = r.cfg
    config = {"stage": "compare", "version": __version__, "evaluate": r.key("evaluate"),
              "morphology": r.key("morphology"), "appearance": r.key("appearance"),
              "n_bootstrap": cfg.n_bootstrap, "n_null": cfg.n_null, "seed": cfg.seed,
              "floor": r.key("floor")}

    def run(work: Path, resume: bool) -> None:
        from .appearance import add_to_summary
        from .stats.compare import compare_tables
        from .stats.verdict import attach_any_difference_floor

        floor = (json.loads(r.out("floor", "floor.json").read_text()) if cfg.floor
                 else {"skipped": "switched off with --no-floor"})
        summary = compare_tables(
            r.out("evaluate", "sim_scores.parquet"), r.out("evaluate", "reference_scores.parquet"),
            column=r.column, n_bootstrap=cfg.n_bootstrap, n_null=cfg.n_null, seed=cfg.seed,
            morphology=r.out("morphology", "morphology_sim.parquet"),
            morphology_reference=r.out("morphology", "morphology_reference.parquet"), floor=floor,
        )
        summary = add_to_summary(summary, r.out("appearance", "appearance.json"))
        attach_any_difference_floor(summary, floor)
        write_json_atomic(work / "summary.json", summary)

    return Stage("compare", config, run, upstream=("evaluate", "morphology", "appearance", "floor"))


#: How each cached stage is built, in run order (a stage reads the keys and outputs of
#: the stages before it).
_STAGE_BUILDERS = (_render_stage, _observed_stage, _train_stage, _evaluate_stage,
                   _appearance_stage, _morphology_stage, _floor_stage, _compare_stage)


def _check_mock_survey(mock: SurveyDescriptor, survey: SurveyDescriptor, cfg: ScoreConfig) -> None:
    """``--mock-survey`` must draw the same pixels and bands as the survey it stands in for."""
    bands = tuple(cfg.bands) or survey.bands
    lacking = [b for b in bands if b not in mock.bands]
    if lacking:
        msg = (f"--mock-survey {mock.name!r} lacks band(s) {lacking} of survey {survey.name!r}; "
               "give it every band the comparison uses")
        raise ConfigError(msg)
    if abs(mock.pixel_scale_arcsec - survey.pixel_scale_arcsec) > 1e-9 * survey.pixel_scale_arcsec:
        msg = (f"--mock-survey {mock.name!r} has pixels of {mock.pixel_scale_arcsec}\" but survey "
               f"{survey.name!r} of {survey.pixel_scale_arcsec}\"; they must be the same")
        raise ConfigError(msg)


def _score(cfg: ScoreConfig, sim: SimDescriptor, survey: SurveyDescriptor, workspace: Path,
           stages: _Stages, cluster: Cluster, mock_survey: SurveyDescriptor | None = None) -> Path:
    root = cache_root(workspace)
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}
    t_start = time.perf_counter()
    versions = package_versions()
    r = _Run(cfg, sim, survey, workspace, stages, cluster, mock_survey)
    for build in _STAGE_BUILDERS:
        stage = build(r)
        if stage is not None:
            stages.run(stage, timings, reused)
    mocks, observed = r.out("render", "mocks.h5"), r.out("observed", "observed.h5")
    app_dir, morph_dir = r.out("appearance"), r.out("morphology")
    floor_json = r.out("floor", "floor.json") if cfg.floor else None

    # 8. the run folder and the report ----------------------------------------------
    # a run with --mock-survey is a variant of the plain run: its own folders
    name = f"{sim.name}_{survey.name}" + (f"_mocks-{mock_survey.name}" if mock_survey else "")
    run_dir = root / "runs" / name
    report_dir = workspace / "reports" / name
    hashes = {
        "sim_descriptor": hashlib.sha256(_descriptor_text(sim).encode()).hexdigest(),
        "survey_descriptor": hashlib.sha256(_descriptor_text(survey).encode()).hexdigest(),
        "mocks": _cached_sha(mocks), "observed": _cached_sha(observed),
        **{f"{stage}_input_files": digest for stage, digest in stages.input_digests().items()},
    }
    run = {
        "schema": "simcompare.run", "schema_version": 1,
        "sim": sim.name, "sim_title": sim.title, "survey": survey.name, "survey_title": survey.title,
        "config": dataclasses.asdict(cfg) | {"workspace": "."},
        "stage_keys": {name: r.key(name) for name in STAGES},
        "paths": {
            "mocks": str(mocks), "observed": str(observed),
            "observed_test": str(morph_dir / "observed_test.h5"), "model": str(r.out("train")),
            "sim_scores": str(app_dir / "sim_scores.parquet"),
            "reference_scores": str(app_dir / "reference_scores.parquet"),
            "appearance": str(app_dir / "appearance.json"),
            "appearance_arrays": str(app_dir / "appearance.npz"),
            "summary": str(r.out("compare", "summary.json")),
            "morphology_sim": str(morph_dir / "morphology_sim.parquet"),
            "morphology_reference": str(morph_dir / "morphology_reference.parquet"),
            "floor": None if floor_json is None else str(floor_json),
        },
        "timings_s": timings,
        "cached": reused,
        "stage_reasons": dict(stages.reasons),
        "provenance": {"simcompare": __version__, "versions": versions, "input_hashes": hashes,
                       "seeds": {"global": cfg.seed, "bootstrap": cfg.seed}},
    }
    write_json_atomic(run_dir / "run.json", run)
    with _stage("report", timings, lambda: False):
        from .reporting import write_index, write_report

        # written beside the report folder, then swapped in: a killed run never leaves a
        # half-written report in its place
        work = report_dir.with_name(f".{report_dir.name}.partial")
        old = report_dir.with_name(f".{report_dir.name}.old")
        for leftover in (work, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        write_report(run_dir, out=work)
        if report_dir.exists():
            os.rename(report_dir, old)
        os.rename(work, report_dir)
        shutil.rmtree(old, ignore_errors=True)
        write_index(workspace / "reports")
    timings["total"] = round(time.perf_counter() - t_start, 3)
    run["timings_s"] = timings
    write_json_atomic(run_dir / "run.json", run)
    log.info("report written to %s", report_dir / "index.html")
    return report_dir


def _cached_sha(path: Path) -> str:
    """sha256 of ``path``, cached beside it keyed by size and mtime."""
    stat = path.stat()
    memo = path.with_name(path.name + ".sha256.json")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if memo.exists():
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp:
            return data["sha256"]
    digest = file_sha256(path)
    memo.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def _write_test_split(observed: Path, split_json: Path, out: Path) -> None:
    """Write the held-out observed test split as its own ImageSet (for morphology, galleries)."""
    import numpy as np

    from . import imageset

    split = json.loads(split_json.read_text())
    test_ids = np.asarray(split["test"], dtype=np.int64)
    ids = imageset.read_catalog(observed)["object_id"]
    index = np.flatnonzero(np.isin(ids, test_ids))
    imageset.write(out, imageset.read(observed, index=index))


def list_all(*, workspace: str | os.PathLike = ".") -> dict[str, Any]:
    """Simulations, surveys and cached runs visible from ``workspace``."""
    workspace = Path(workspace)
    runs = {}
    runs_dir = cache_root(workspace) / "runs"
    if runs_dir.is_dir():
        for run_json in sorted(runs_dir.glob("*/run.json")):
            try:
                data = json.loads(run_json.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            runs[run_json.parent.name] = {
                "sim": data.get("sim"), "survey": data.get("survey"),
                "total_s": data.get("timings_s", {}).get("total"),
            }
    return {
        "sims": {k: str(v) for k, v in list_sims(workspace=workspace).items()},
        "surveys": {k: str(v) for k, v in list_surveys(workspace=workspace).items()},
        "runs": runs,
    }


def clear_cache(*, workspace: str | os.PathLike = ".") -> None:
    """Delete every cached stage of ``workspace`` (the reports stay)."""
    shutil.rmtree(cache_root(workspace) / "cache", ignore_errors=True)
