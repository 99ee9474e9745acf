"""Inputs in the cache key and the workspace lock (interrupted runs: tests/test_interrupts.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from simcompare import registry
from simcompare._lock import lock_path, workspace_lock
from simcompare.cli import main
from simcompare.errors import WorkspaceBusyError
from simcompare.observed.demo import demo_sample_root, make_demo_sample

TINY = ["--n-galaxies", "40", "--stamp-size", "32", "--levels", "2", "--blocks", "2",
        "--hidden", "16", "--epochs", "2", "--batch-size", "32", "--n-bootstrap", "50",
        "--morphology-max", "10", "--seed", "3",
        "--classifier-epochs", "5"]
STAGES = ("render", "observed", "train", "evaluate", "morphology", "floor", "compare")


def _real_sample_workspace(root: Path) -> Path:
    """A workspace whose hsc descriptor reads a cutout folder + CSV catalogue (not the demo)."""
    (root / "observed").mkdir(parents=True)
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    text = text.replace("demo_n_galaxies = 1500", "demo_n_galaxies = 120")
    assert "demo_n_galaxies = 120" in text
    (root / "observed" / "hsc.toml").write_text(text)
    sv = registry.find_survey("hsc", workspace=root)
    args = {"n_galaxies": 120, "seed": 7, "stamp_size": 32, "redshift": 0.5}
    cutouts, catalog = make_demo_sample(sv, root=demo_sample_root(sv, workspace=root, **args), **args)
    shutil.copytree(cutouts, root / "data" / "cutouts")
    pd.read_parquet(catalog).to_csv(root / "data" / "catalog.csv", index=False, float_format="%.6f")
    real = text.replace("\ndemo = true", '\ndemo = false\ncutout_dir = "../data/cutouts"\n'
                        'catalog = "../data/catalog.csv"')
    assert real != text
    (root / "observed" / "hsc.toml").write_text(real)
    return root


def _score(ws: Path) -> int:
    return main(["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(ws), *TINY])


def _run(ws: Path) -> dict:
    return json.loads((ws / ".simcompare" / "runs" / "demo_hsc" / "run.json").read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    ws = _real_sample_workspace(tmp_path_factory.mktemp("cache") / "ws")
    assert _score(ws) == 0
    run = _run(ws)
    assert not any(run["cached"][s] for s in STAGES), run["cached"]
    reasons = run["stage_reasons"]
    assert reasons["render"] == reasons["observed"] == "rerun: new configuration", reasons
    assert reasons["train"] == "rerun: upstream stage changed: observed", reasons
    return ws, run


def _copy(ws: Path, dest: Path) -> Path:
    shutil.copytree(ws, dest, symlinks=True)
    return dest


def _edit_catalogue_value(path: Path) -> None:
    """Change one digit of one catalogue value in place (same size)."""
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    col = header.index("ra")
    fields = lines[3].split(",")
    value = fields[col]
    last = value[-1]
    fields[col] = value[:-1] + ("1" if last != "1" else "2")
    lines[3] = ",".join(fields)
    new = "".join(lines)
    assert len(new) == path.stat().st_size
    path.write_text(new)


def test_unchanged_inputs_are_reused_and_the_log_says_so(clean_run, tmp_path, capsys):
    ws = _copy(clean_run[0], tmp_path / "ws")
    assert _score(ws) == 0
    err = capsys.readouterr().err.splitlines()
    run = _run(ws)
    assert all(run["cached"][s] for s in STAGES), run["cached"]
    assert run["stage_keys"] == clean_run[1]["stage_keys"]
    for stage in STAGES:
        assert any(line.split() == ["stage", stage, "reused"] for line in err), err


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited-same-size-and-mtime"])
def test_edited_catalogue_reruns_its_stage_and_those_after(clean_run, tmp_path, capsys, keep_mtime):
    ws = _copy(clean_run[0], tmp_path / "ws")
    catalogue = ws / "data" / "catalog.csv"
    before = catalogue.stat()
    time.sleep(0.01)
    _edit_catalogue_value(catalogue)
    if keep_mtime:
        os.utime(catalogue, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = catalogue.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert _score(ws) == 0
    err = capsys.readouterr().err.splitlines()
    run = _run(ws)
    assert run["cached"]["render"], run["cached"]
    assert not any(run["cached"][s] for s in ("observed", "train", "evaluate", "morphology", "compare"))
    assert run["stage_keys"]["render"] == clean_run[1]["stage_keys"]["render"]
    assert run["stage_keys"]["observed"] != clean_run[1]["stage_keys"]["observed"]
    reasons = run["stage_reasons"]
    assert reasons["render"] == "reused"
    assert reasons["observed"] == "rerun: input changed: data/catalog.csv"
    assert reasons["train"] == "rerun: upstream stage changed: observed"
    assert "stage observed   rerun: input changed: data/catalog.csv" in err, err
    assert "stage render     reused" in err, err


def test_edited_snapshot_chunk_reruns_render(clean_run, tmp_path):
    ws = _copy(clean_run[0], tmp_path / "ws")
    chunk = sorted((ws / ".simcompare" / "sims").glob("demo-*/output/snapdir_*/snap_*.0.hdf5"))[0]
    with open(chunk, "r+b") as fh:  # one byte of the header block, in place
        fh.seek(200)
        b = fh.read(1)
        fh.seek(200)
        fh.write(bytes([b[0] ^ 0xFF]))
    from simcompare.config import ScoreConfig
    from simcompare.pipeline import _render_inputs, _Stages

    sim = registry.find_sim("demo", workspace=ws)
    survey = registry.find_survey("hsc", workspace=ws)
    cfg = ScoreConfig(sim="demo", survey="hsc", workspace=str(ws)).resolved(sim.score_defaults)
    names = {p.name for p, _ in _render_inputs(cfg, sim, survey, ws)}
    assert chunk.name in names and any(n.startswith("fof_subhalo_tab") for n in names)
    assert any(n.startswith("offsets_") for n in names)
    stages = _Stages(ws / ".simcompare", ws)
    try:
        key = stages.key("render", {"x": 1}, _render_inputs(cfg, sim, survey, ws))
        with open(chunk, "r+b") as fh:
            fh.seek(200)
            fh.write(b)
        assert stages.key("render", {"x": 1}, _render_inputs(cfg, sim, survey, ws)) != key
    finally:
        stages.close()


def test_busy_workspace_names_the_holder(tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = lock_path(ws)
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "score",
                                    "since": "2024-01-01T00:00:00"}))
        assert _score(ws) != 0
        err = capsys.readouterr().err
        assert "busy" in err and f"pid {holder.pid}" in err and socket.gethostname() in err
        assert str(lock) in err and "Traceback" not in err
        assert lock.exists()  # still the holder's
        with pytest.raises(WorkspaceBusyError, match=f"pid {holder.pid}"), workspace_lock(ws):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over_with_a_log_line(tmp_path, caplog, monkeypatch):
    # an earlier in-process CLI run gave the package logger its own handler and stopped it
    # propagating; caplog listens on the root logger
    monkeypatch.setattr(logging.getLogger("simcompare"), "propagate", True)
    ws = tmp_path / "ws"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = lock_path(ws)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "command": "score"}))
    with caplog.at_level(logging.WARNING, logger="simcompare._lock"), workspace_lock(ws) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
    assert any("stale" in r.getMessage() and str(gone.pid) in r.getMessage() for r in caplog.records)
    assert not lock.exists()

