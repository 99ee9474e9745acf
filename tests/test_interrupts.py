"""``score`` killed (SIGKILL) or interrupted (SIGINT) in each stage, then rerun; two at once.

One uninterrupted run (module fixture) is the reference. While it runs, a second
``score`` on the same workspace must say the workspace is busy. SIGKILL is covered for
every stage by one chain of runs in one workspace: run k is killed inside stage k and run
k + 1 takes over its stale lock and carries on from what it left; the last run completes
and must give the reference's summary and score tables. SIGINT is covered per stage from
a copy of the reference workspace with that stage's cache (and all after it) removed:
training and the report by default, the other stages under ``--run-slow`` (each costs a
rerun of the stages after it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from _demo_descriptor import tiny_demo_toml

from simcompare import registry
from simcompare._lock import lock_path

REPO = Path(__file__).resolve().parent.parent
TINY = ["--n-galaxies", "16", "--stamp-size", "32", "--levels", "2", "--blocks", "1",
        "--hidden", "8", "--epochs", "3", "--batch-size", "8", "--n-bootstrap", "20",
        "--morphology-max", "6", "--seed", "3",
        "--classifier-epochs", "5"]
CACHED = ("render", "observed", "train", "evaluate", "morphology", "floor", "compare")
STAGES = (*CACHED, "report")


def _workspace(root: Path) -> Path:
    (root / "observed").mkdir(parents=True)
    (root / "sims").mkdir()
    (root / "sims" / "tinydemo.toml").write_text(tiny_demo_toml(n_galaxies=24))
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    text = text.replace("demo_n_galaxies = 1500", "demo_n_galaxies = 50")
    assert "demo_n_galaxies = 50" in text
    (root / "observed" / "hsc.toml").write_text(text)
    return root


def _cmd(ws: Path) -> list[str]:
    return [sys.executable, "-m", "simcompare", "score", "--sim", "tinydemo", "--survey", "hsc",
            "--workspace", str(ws), "--no-progress", *TINY]


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}


def _marker(ws: Path, stage: str) -> list[Path]:
    """Files that exist only while ``stage`` is in progress."""
    if stage == "report":
        return list((ws / "reports").glob(".tinydemo_hsc.partial"))
    if stage == "train":  # after the first epoch's checkpoint: a kill tests the resume
        return list((ws / ".simcompare" / "cache" / "train").glob("*.partial/model/checkpoint.pt"))
    return list((ws / ".simcompare" / "cache" / stage).glob("*.partial"))


def _start_and_signal(ws: Path, stage: str, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Run ``score`` in a subprocess and send ``sig`` once ``stage`` is under way."""
    # SIGINT as an interactive shell leaves it (a background job inherits it ignored)
    proc = subprocess.Popen(_cmd(ws), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if _marker(ws, stage):
            seen = True
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    out, err = proc.communicate(timeout=120)
    assert seen, f"the run ended before stage {stage} was seen under way:\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(ws: Path) -> dict:
    return json.loads((ws / ".simcompare" / "runs" / "tinydemo_hsc" / "run.json").read_text())


def _science(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timings_s", "created", "provenance")}


def _assert_same_results(ws: Path, ref: Path) -> None:
    a, b = _run(ref), _run(ws)
    assert b["stage_keys"] == a["stage_keys"]
    sa = json.loads((ref / "reports" / "tinydemo_hsc" / "summary.json").read_text())
    sb = json.loads((ws / "reports" / "tinydemo_hsc" / "summary.json").read_text())
    assert _science(sb) == _science(sa)
    pd.testing.assert_frame_equal(pd.read_parquet(ws / "reports" / "tinydemo_hsc" / "scores.parquet"),
                                  pd.read_parquet(ref / "reports" / "tinydemo_hsc" / "scores.parquet"))
    for key in ("reference_scores", "morphology_sim", "morphology_reference"):
        pd.testing.assert_frame_equal(pd.read_parquet(b["paths"][key]), pd.read_parquet(a["paths"][key]))
    assert "<html" in (ws / "reports" / "tinydemo_hsc" / "index.html").read_text().lower()


def _assert_nothing_half_written(ws: Path) -> None:
    """Every folder that looks complete is: stage folders without done.json are .partial."""
    for stage in CACHED:
        for folder in (ws / ".simcompare" / "cache" / stage).glob("*"):
            if folder.name.endswith(".partial"):
                continue
            assert (folder / "done.json").is_file(), f"{folder} looks complete but is not"
            assert (folder / "inputs.json").is_file(), folder
    report = ws / "reports" / "tinydemo_hsc"
    if report.exists():
        assert (report / "index.html").is_file() and (report / "report.json").is_file()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and a second ``score`` started on its workspace meanwhile."""
    ws = _workspace(tmp_path_factory.mktemp("interrupts") / "ref")
    proc = subprocess.Popen(_cmd(ws), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not lock_path(ws).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock_path(ws).exists(), "the first run never took the workspace lock"
    second = subprocess.run(_cmd(ws), env=_env(), capture_output=True, text=True, timeout=120)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not lock_path(ws).exists()
    return ws, second, proc.pid


def test_second_score_on_a_busy_workspace_says_so(reference):
    ws, second, first_pid = reference
    assert second.returncode != 0
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, second.stderr
    assert "is busy" in lines[0] and f"pid {first_pid}" in lines[0] and str(lock_path(ws)) in lines[0]
    assert "Traceback" not in second.stderr
    run = _run(ws)
    assert not any(run["cached"][s] for s in CACHED), run["cached"]  # the first run did all the work


def test_sigkill_in_every_stage_then_rerun_matches_the_clean_run(reference, tmp_path):
    ref = reference[0]
    ws = _workspace(tmp_path / "ws")
    for k, stage in enumerate(STAGES):
        killed = _start_and_signal(ws, stage, signal.SIGKILL)
        assert killed.returncode == -signal.SIGKILL, (stage, killed.stderr)
        if k:  # the lock the previous killed run left behind was taken over
            assert "stale workspace lock" in killed.stderr, killed.stderr
        assert lock_path(ws).exists()
        _assert_nothing_half_written(ws)
        if stage != "report":  # the killed stage was not finished
            assert not (ws / ".simcompare" / "runs" / "tinydemo_hsc" / "run.json").exists()
    rerun = subprocess.run(_cmd(ws), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "stale workspace lock" in rerun.stderr
    assert "stage compare    reused" in rerun.stderr, rerun.stderr
    assert not lock_path(ws).exists()
    _assert_nothing_half_written(ws)
    assert not list((ws / "reports").glob(".tinydemo_hsc.*"))
    _assert_same_results(ws, ref)


def _without(ref: Path, dest: Path, stage: str) -> Path:
    """A copy of ``ref`` whose cache lacks ``stage`` and every stage after it."""
    shutil.copytree(ref, dest)
    for later in STAGES[STAGES.index(stage):]:
        if later == "report":
            shutil.rmtree(dest / "reports")
        else:
            shutil.rmtree(dest / ".simcompare" / "cache" / later)
    shutil.rmtree(dest / ".simcompare" / "runs")
    return dest


@pytest.mark.parametrize("stage", [
    pytest.param(s, marks=() if s in ("train", "report") else pytest.mark.slow) for s in STAGES])
def test_sigint_in_a_stage_then_rerun_matches_the_clean_run(reference, tmp_path, stage):
    ref = reference[0]
    ws = _without(ref, tmp_path / "ws", stage)
    stopped = _start_and_signal(ws, stage, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted; run the same command again" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not lock_path(ws).exists()  # released on the way out
    _assert_nothing_half_written(ws)
    # the rerun in a fresh process with the reference's environment (one intra-op thread): the
    # test process may run torch with another thread count, which changes training's rounding
    rerun = subprocess.run(_cmd(ws), env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    err = rerun.stderr
    if stage == "train":
        assert "stage train      rerun: resuming an interrupted run" in err, err
    _assert_same_results(ws, ref)
