"""The pipeline's cached stages: keys, ``.partial`` work folders, completion and the rerun log.

A :class:`Stage` says what one step of ``score`` is: its name, the configuration and input
files its key hashes, the stages it reads from, and the function that writes its output
into a work folder. :meth:`_Stages.run` runs one: key, reuse or rerun (logged, with the
reason), ``<key>.partial/`` renamed to ``<key>/`` once ``done.json`` is written, timings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _fingerprint
from ._io import write_json_atomic

__all__ = ["Stage", "stage_key"]

log = logging.getLogger("simcompare.pipeline")


def stage_key(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable stage configuration."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """One cached step of ``score``.

    ``run(work, resume)`` writes the stage's output into the folder ``work``; ``resume``
    is true when a ``resumable`` stage finds the partial folder of an interrupted run.
    ``done`` gives the record kept in ``done.json`` from the stage's key (default: the
    configuration).
    """

    name: str
    config: Mapping[str, Any]
    run: Callable[[Path, bool], None]
    upstream: tuple[str, ...] = ()
    files: list[tuple[Path, bool]] | None = None
    resumable: bool = False
    done: Callable[[str], Mapping[str, Any]] | None = None


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

    def run(self, stage: Stage, timings: dict[str, float], reused: dict[str, bool]) -> str:
        """Reuse or run ``stage`` (after the stages it reads from); returns its key."""
        key = self.key(stage.name, stage.config, stage.files)
        final = self.final(stage.name)
        with _stage(stage.name, timings, lambda: self.is_complete(stage.name), reused) as cached:
            self.explain(stage.name, cached, stage.upstream)
            if not cached:
                # an interrupted resumable stage carries on in its partial folder
                resume = stage.resumable and final.with_name(final.name + ".partial").exists()
                work = self.work(stage.name, keep=stage.resumable)
                stage.run(work, resume)
                self.finish(stage.name, work, stage.config if stage.done is None else stage.done(key))
        return key

    def close(self) -> None:
        self.memo.close()
