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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _fingerprint
from ._io import write_json_atomic
from ._lock import workspace_lock
from ._version import __version__
from .cluster import Cluster
from .config import ScoreConfig, SimDescriptor, SurveyDescriptor
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


def stage_key(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable stage configuration."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


@contextmanager
def _stage(
    name: str, timings: dict[str, float], cached: Callable[[], bool],
    reused: dict[str, bool] | None = None,
) -> Iterator[bool]:
    """Time one stage and log its duration; yields whether its output is cached."""
    t0 = time.perf_counter()
    is_cached = cached()
    if reused is not None:
        reused[name] = is_cached
    yield is_cached
    dt = time.perf_counter() - t0
    timings[name] = round(dt, 3)
    log.info("stage %-10s %7.1f s%s", name, dt, "  (cached)" if is_cached else "")


def _complete(marker: Path) -> bool:
    return marker.exists()


def _mark_complete(marker: Path, info: Mapping[str, Any]) -> None:
    write_json_atomic(marker, info)


class _Stages:
    """Keys, work folders, completion and the reuse/rerun log of the pipeline's stages."""

    def __init__(self, root: Path, workspace: Path) -> None:
        self.root = root
        self.workspace = workspace
        self.memo = _fingerprint.FingerprintMemo(root / "fingerprints.sqlite")
        self.reasons: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self._inputs: dict[str, dict[str, str]] = {}
        self._config_keys: dict[str, str] = {}

    def key(self, stage: str, config: Mapping[str, Any],
            files: list[tuple[Path, bool]] | None = None) -> str:
        """The stage's key: its configuration plus the fingerprints of ``files``."""
        config_key = stage_key(config)
        prints = _fingerprint.fingerprints(files or [], memo=self.memo, workspace=self.workspace)
        self.memo.save()
        key = stage_key({"config": config_key, "inputs": _fingerprint.combined(prints)})
        self.keys[stage] = key
        self._inputs[stage] = prints
        self._config_keys[stage] = config_key
        return key

    def final(self, stage: str) -> Path:
        return self.root / "cache" / stage / self.keys[stage]

    def work(self, stage: str, *, keep: bool = False) -> Path:
        """A fresh ``<key>.partial`` folder to write the stage into (``keep``: resume in it)."""
        final = self.final(stage)
        partial = final.with_name(final.name + ".partial")
        if final.exists():  # an incomplete folder of an older layout
            shutil.rmtree(final)
        if partial.exists() and not keep:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        return partial

    def is_complete(self, stage: str) -> bool:
        return _complete(self.final(stage) / "done.json")

    def finish(self, stage: str, work: Path, info: Mapping[str, Any]) -> None:
        """Mark ``work`` complete and rename it into place."""
        write_json_atomic(work / "inputs.json", self._inputs[stage])
        _mark_complete(work / "done.json", {**info, "config_key": self._config_keys[stage],
                                            "key": self.keys[stage]})
        os.replace(work, self.final(stage))

    def explain(self, stage: str, cached: bool, upstream: tuple[str, ...] = ()) -> str:
        """Why the stage is reused or reruns (logged; kept in run.json)."""
        if cached:
            why = "reused"
        else:
            why = self._why_rerun(stage, upstream)
        self.reasons[stage] = why
        log.info("stage %-10s %s", stage, why)
        return why

    def _why_rerun(self, stage: str, upstream: tuple[str, ...]) -> str:
        reran = [u for u in upstream if self.reasons.get(u, "reused") != "reused"]
        config_key = self._config_keys[stage]
        final = self.final(stage)
        if final.with_name(final.name + ".partial").exists():
            return ("rerun: resuming an interrupted run" if stage == "train"
                    else "rerun: an earlier run was interrupted in this stage")
        for done in sorted((self.root / "cache" / stage).glob("*/done.json"),
                           key=lambda p: p.stat().st_mtime_ns, reverse=True):
            try:
                info = json.loads(done.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info.get("config_key") != config_key:
                continue
            try:
                old = json.loads((done.parent / "inputs.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            changed = _fingerprint.changed_names(old, self._inputs[stage])
            if changed:
                more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
                return f"rerun: input changed: {changed[0]}{more}"
            break
        if reran:
            return f"rerun: upstream stage changed: {', '.join(reran)}"
        return "rerun: new configuration"

    def input_digests(self) -> dict[str, str]:
        """sha256 over the input-file fingerprints of each stage that reads input files."""
        return {stage: _fingerprint.combined(prints) for stage, prints in self._inputs.items() if prints}

    def close(self) -> None:
        self.memo.close()


def _check_options(cfg: ScoreConfig, survey: SurveyDescriptor) -> None:
    from .scoring import PRECISIONS

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
    unknown = [b for b in cfg.bands if b not in survey.bands]
    if unknown:
        msg = f"band(s) {unknown} are not bands of survey {survey.name!r} ({', '.join(survey.bands)})"
        raise ConfigError(msg)
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
    root = cache_root(workspace)
    with workspace_lock(workspace, what="score"):
        stages = _Stages(root, workspace)
        # one pool of workers for every stage; started only when a stage needs it
        cluster = Cluster(workers=cfg.workers, scheduler=cfg.scheduler)
        try:
            return _score(cfg, sim, survey, workspace, stages, cluster)
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


def _score(cfg: ScoreConfig, sim: SimDescriptor, survey: SurveyDescriptor, workspace: Path,
           stages: _Stages, cluster: Cluster) -> Path:
    stamp = cfg.stamp_size or survey.stamp_size
    bands = tuple(cfg.bands) or survey.bands
    root = cache_root(workspace)
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}
    t_start = time.perf_counter()
    versions = package_versions()

    # 1. render the simulation ------------------------------------------------------
    render_cfg = {
        "stage": "render", "version": __version__, "sim": _descriptor_text(sim),
        "survey": _descriptor_text(survey), "snapshot": cfg.snapshot, "n_galaxies": cfg.n_galaxies,
        "base_path": cfg.base_path, "stamp": stamp, "bands": bands, "noise": cfg.noise,
        "seed": cfg.seed,
    }
    if sim.kind == "images":  # published images: the files themselves are the input
        from .sims.images import image_fingerprint

        render_cfg["images"] = image_fingerprint(sim, workspace=workspace)
    render_key = stages.key("render", render_cfg, _render_inputs(cfg, sim, survey, workspace))
    render_dir = stages.final("render")
    mocks = render_dir / "mocks.h5"
    with _stage("render", timings, lambda: stages.is_complete("render"), reused) as cached:
        stages.explain("render", cached)
        if not cached:
            from .mock import render

            work = stages.work("render")
            render(
                sim, survey, out=work / "mocks.h5", snapshot=cfg.snapshot, n_galaxies=cfg.n_galaxies,
                base_path=cfg.base_path, workspace=workspace, stamp_size=stamp, bands=bands,
                noise=cfg.noise, seed=cfg.seed, cluster=cluster, progress=cfg.progress,
            )
            stages.finish("render", work, render_cfg)

    # 2. the observed sample --------------------------------------------------------
    from .observed.sample import sample_input_files

    obs_cfg = {
        "stage": "observed", "version": __version__, "survey": _descriptor_text(survey),
        "stamp": stamp, "bands": bands,
    }
    obs_files = sample_input_files(survey, workspace=workspace, stamp_size=stamp, progress=cfg.progress)
    obs_key = stages.key("observed", obs_cfg, obs_files)
    obs_dir = stages.final("observed")
    observed = obs_dir / "observed.h5"
    with _stage("observed", timings, lambda: stages.is_complete("observed"), reused) as cached:
        stages.explain("observed", cached)
        if not cached:
            from .observed import load_sample

            work = stages.work("observed")
            load_sample(survey, out=work / "observed.h5", workspace=workspace, stamp_size=stamp,
                        bands=bands, progress=cfg.progress, cluster=cluster)
            stages.finish("observed", work, obs_cfg)

    # 3. train the density model (and the background model) -------------------------
    train_cfg = {
        "stage": "train", "version": __version__, "observed": obs_key, "levels": cfg.levels,
        "blocks": cfg.blocks, "hidden": cfg.hidden, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "background": cfg.background,
        "background_conditions": cfg.background_conditions, "ensemble": cfg.ensemble,
    }
    train_key = stages.key("train", train_cfg)
    model_dir = stages.final("train")
    with _stage("train", timings, lambda: stages.is_complete("train"), reused) as cached:
        stages.explain("train", cached, ("observed",))
        if not cached:
            from .density import train

            # an interrupted training resumes from the checkpoints in its partial folder
            partial = model_dir.with_name(model_dir.name + ".partial")
            resume = partial.exists()
            work = stages.work("train", keep=True)
            train(
                observed, out=work, levels=cfg.levels, blocks=cfg.blocks, hidden=cfg.hidden,
                epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                device=cfg.device, background=cfg.background,
                background_conditions=cfg.background_conditions, ensemble=cfg.ensemble,
                resume=resume,
                progress=cfg.progress,
            )
            stages.finish("train", work, train_cfg)

    # 4. score simulated and held-out observed images --------------------------------
    eval_cfg = {"stage": "evaluate", "train": train_key, "render": render_key}
    if cfg.precision != "auto":  # auto is float32 on CPU; a named precision may change scores
        eval_cfg["precision"] = cfg.precision
    eval_key = stages.key("evaluate", eval_cfg)
    eval_dir = stages.final("evaluate")
    sim_scores = eval_dir / "sim_scores.parquet"
    # train() already scored the held-out observed test split (for percentiles)
    ref_scores = model_dir / "reference_scores.parquet"
    with _stage("evaluate", timings, lambda: stages.is_complete("evaluate"), reused) as cached:
        stages.explain("evaluate", cached, ("train", "render"))
        if not cached:
            from .density import evaluate

            work = stages.work("evaluate")
            evaluate(model_dir, mocks, out=work / "sim_scores.parquet", device=cfg.device,
                     progress=cfg.progress, cluster=cluster, precision=cfg.precision,
                     use_torch_compile=cfg.compile)
            stages.finish("evaluate", work, {"train": train_key, "render": render_key})

    # 4b. classifier test, appearance embedding, mismatch maps (simcompare.appearance)
    app_cfg = {"stage": "appearance", "version": __version__, "evaluate": eval_key,
               "observed": obs_key, "seed": cfg.seed, "n_bootstrap": cfg.n_bootstrap}
    app_key = stages.key("appearance", app_cfg)
    app_dir = stages.final("appearance")
    with _stage("appearance", timings, lambda: stages.is_complete("appearance"), reused) as cached:
        stages.explain("appearance", cached, ("evaluate", "observed"))
        if not cached:
            from .appearance import run as run_appearance

            work = stages.work("appearance")
            run_appearance(mocks=mocks, observed=observed, model=model_dir, sim_scores=sim_scores,
                           reference_scores=ref_scores, out=work, seed=cfg.seed,
                           n_bootstrap=cfg.n_bootstrap or 500, device=cfg.device)
            stages.finish("appearance", work, app_cfg)

    # 5. classical morphology on the same stamps -------------------------------------
    # keyed on the held-out test ids, not the whole training stage: another background or
    # architecture with the same split reuses the measurements
    test_ids = sorted(json.loads((model_dir / "split.json").read_text())["test"])
    morph_key = stages.key("morphology", {
        "stage": "morphology", "version": __version__, "render": render_key, "observed": obs_key,
        "test_ids": stage_key({"ids": test_ids}), "max": cfg.morphology_max, "seed": cfg.seed})
    morph_dir = stages.final("morphology")
    morph_sim = morph_dir / "morphology_sim.parquet"
    morph_ref = morph_dir / "morphology_reference.parquet"
    observed_test = morph_dir / "observed_test.h5"
    with _stage("morphology", timings, lambda: stages.is_complete("morphology"), reused) as cached:
        stages.explain("morphology", cached, ("render", "observed"))
        if not cached:
            from .morphology import measure

            work = stages.work("morphology")
            _write_test_split(observed, model_dir / "split.json", work / "observed_test.h5")
            measure(mocks, out=work / "morphology_sim.parquet", max_images=cfg.morphology_max,
                    cluster=cluster, seed=cfg.seed, progress=cfg.progress)
            measure(work / "observed_test.h5", out=work / "morphology_reference.parquet",
                    max_images=cfg.morphology_max, cluster=cluster, seed=cfg.seed,
                    progress=cfg.progress)
            stages.finish("morphology", work, {"key": morph_key})

    # 6. the pipeline's own floor: the observed galaxies' smooth fits through the mock path
    from .comparison import FINE_STRUCTURE_COLUMN

    column = FINE_STRUCTURE_COLUMN if cfg.background != "none" else "log_prob_nats"
    floor_key = None
    floor_json = None
    if cfg.floor:
        floor_cfg = {
            "stage": "floor", "version": __version__, "train": train_key, "render": render_key,
            "morphology": morph_key, "column": column, "particles": cfg.floor_particles,
            "curve": list(cfg.floor_curve), "max": cfg.floor_max or 2 * cfg.morphology_max,
            "n_bootstrap": cfg.n_bootstrap, "n_null": min(cfg.n_null, 10), "seed": cfg.seed}
        floor_key = stages.key("floor", floor_cfg)
        floor_json = stages.final("floor") / "floor.json"
        with _stage("floor", timings, lambda: stages.is_complete("floor"), reused) as cached:
            stages.explain("floor", cached, ("train", "render", "morphology"))
            if not cached:
                from .floor import measure_floor

                work = stages.work("floor")
                measure_floor(
                    observed_test=observed_test, mocks=mocks, model=model_dir, out=work,
                    survey=survey, workspace=workspace, column=column,
                    n_particles=cfg.floor_particles, curve=tuple(cfg.floor_curve),
                    max_galaxies=cfg.floor_max or 2 * cfg.morphology_max,
                    n_bootstrap=cfg.n_bootstrap, n_null=min(cfg.n_null, 10), seed=cfg.seed,
                    device=cfg.device, workers=cfg.workers, progress=cfg.progress,
                    cluster=cluster)
                stages.finish("floor", work, floor_cfg)

    # 7. population statistics -------------------------------------------------------
    cmp_cfg = {"stage": "compare", "version": __version__, "evaluate": eval_key,
               "morphology": morph_key, "appearance": app_key, "n_bootstrap": cfg.n_bootstrap,
               "n_null": cfg.n_null, "seed": cfg.seed, "floor": floor_key}
    cmp_key = stages.key("compare", cmp_cfg)
    cmp_dir = stages.final("compare")
    summary_path = cmp_dir / "summary.json"
    with _stage("compare", timings, lambda: stages.is_complete("compare"), reused) as cached:
        stages.explain("compare", cached, ("evaluate", "morphology", "appearance", "floor"))
        if not cached:
            from .comparison import compare

            work = stages.work("compare")
            floor = (json.loads(floor_json.read_text()) if floor_json is not None
                     else {"skipped": "switched off with --no-floor"})
            summary = compare(
                sim_scores, ref_scores, column=column, n_bootstrap=cfg.n_bootstrap,
                n_null=cfg.n_null, seed=cfg.seed, morphology=morph_sim,
                morphology_reference=morph_ref, floor=floor,
            )
            from .appearance import add_to_summary

            summary = add_to_summary(summary, app_dir / "appearance.json")
            write_json_atomic(work / "summary.json", summary)
            stages.finish("compare", work, cmp_cfg)

    # 8. the run folder and the report ----------------------------------------------
    run_dir = root / "runs" / f"{sim.name}_{survey.name}"
    report_dir = workspace / "reports" / f"{sim.name}_{survey.name}"
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
        "stage_keys": {"render": render_key, "observed": obs_key, "train": train_key,
                       "evaluate": eval_key, "appearance": app_key, "morphology": morph_key,
                       "floor": floor_key,
                       "compare": cmp_key},
        "paths": {
            "mocks": str(mocks), "observed": str(observed), "observed_test": str(observed_test),
            "model": str(model_dir), "sim_scores": str(app_dir / "sim_scores.parquet"),
            "reference_scores": str(app_dir / "reference_scores.parquet"),
            "appearance": str(app_dir / "appearance.json"),
            "appearance_arrays": str(app_dir / "appearance.npz"), "summary": str(summary_path),
            "morphology_sim": str(morph_sim), "morphology_reference": str(morph_ref),
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
