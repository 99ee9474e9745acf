"""The command line: help for every verb, one-line errors, no partial outputs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simcompare.cli import main

VERBS = ["score", "render", "ingest", "train", "evaluate", "measure", "compare", "report", "list",
         "fetch", "crosscheck", "anomalies"]


@pytest.mark.parametrize("verb", VERBS)
def test_help_for_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: simcompare" in capsys.readouterr().out


def test_verbs_are_python_functions():
    import pkgutil

    import simcompare

    # importing every submodule first: a module named like a verb would replace the
    # verb's function as the package attribute
    for info in pkgutil.walk_packages(simcompare.__path__, "simcompare."):
        # sims.api is the deprecated alias of sims.tng_api (tests/test_names.py imports it)
        if not info.name.endswith("__main__") and info.name != "simcompare.sims.api":
            importlib.import_module(info.name)
    for verb in VERBS:
        assert callable(getattr(simcompare, verb)), verb


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("simcompare: error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_unknown_sim(tmp_path, capsys):
    code = main(["score", "--sim", "tng1000", "--survey", "hsc", "--workspace", str(tmp_path)])
    assert code == 2
    line = _one_line_error(capsys)
    assert "unknown simulation 'tng1000'" in line and "did you mean" in line


def test_unknown_survey(tmp_path, capsys):
    code = main(["score", "--sim", "demo", "--survey", "hcs", "--workspace", str(tmp_path)])
    assert code == 2
    assert "unknown survey 'hcs'" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["score", "--sim", "demo", "--survey", "hsc", "--epochs", "0"], "--epochs"),
        (["score", "--sim", "demo", "--survey", "hsc", "--epochs", "many"], "whole number"),
        (["score", "--sim", "demo"], "--survey"),
        (["score", "--sim", "demo", "--survey", "hsc", "--background", "flat"], "--background"),
        (["compare", "--scores", "a.parquet"], "--reference"),
        (["score", "--sim", "demo", "--survey", "hsc", "--floor-max", "0"], "--floor-max"),
        (["score", "--sim", "demo", "--survey", "hsc", "--floor-curve", "1000,lots"],
         "comma-separated particle counts"),
        (["score", "--sim", "demo", "--survey", "hsc", "--floor-curve", "0,1000"],
         "at least 1"),
    ],
)
def test_bad_options_exit_2(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_band_and_device(tmp_path, capsys):
    base = ["score", "--sim", "demo", "--survey", "hsc", "--workspace", str(tmp_path)]
    assert main([*base, "--bands", "g,u"]) == 2
    assert "['u']" in _one_line_error(capsys)
    assert main([*base, "--device", "tpu"]) == 2
    assert "--device" in _one_line_error(capsys)
    assert main([*base, "--stamp-size", "30"]) == 2
    assert "divisible" in _one_line_error(capsys)
    assert not (tmp_path / "reports").exists(), "no output may be written for a bad option"


def test_missing_inputs(tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    code = main(["evaluate", "--model", str(tmp_path / "nomodel"), "--images",
                 str(tmp_path / "none.h5"), "--out", str(out)])
    assert code == 2
    _one_line_error(capsys)
    assert not out.exists()
    code = main(["report", "--run", str(tmp_path / "norun"), "--out", str(tmp_path / "rep")])
    assert code == 2
    _one_line_error(capsys)


def test_real_sim_without_data(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIMCOMPARE_TNG100_PATH", raising=False)
    code = main(["render", "--sim", "tng100", "--survey", "hsc", "--out", str(tmp_path / "m.h5"),
                 "--workspace", str(tmp_path)])
    assert code == 2
    line = _one_line_error(capsys)
    assert "SIMCOMPARE_TNG100_PATH" in line or "--base-path" in line
    assert not (tmp_path / "m.h5").exists()


def test_list(tmp_path, capsys):
    assert main(["list", "--workspace", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "demo" in data["sims"] and "hsc" in data["surveys"] and data["runs"] == {}


def test_subprocess_error_and_light_import(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "simcompare", "score", "--sim", "nope", "--survey", "hsc",
         "--workspace", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("simcompare: error: unknown simulation 'nope'")
    assert "Traceback" not in proc.stderr
    code = ("import sys, simcompare.cli; heavy = {'torch', 'galsim', 'statmorph', 'matplotlib'}"
            " & set(sys.modules); print(sorted(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", "the CLI must not import heavy packages at start-up"


# --------------------------------------------------------------------------------------
# General options (-v, -q, --workspace, --no-progress) before or after the verb
# --------------------------------------------------------------------------------------
def _fake_run(ws, run_id="demo_hsc_0123456789abcdef"):
    run = ws / ".simcompare" / "runs" / run_id
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"sim": "demo", "survey": "hsc",
                                              "timings_s": {"total": 12.5}}))
    return run_id


def test_workspace_before_or_after_the_verb(tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    run_id = _fake_run(ws)
    monkeypatch.chdir(tmp_path)  # the default workspace (.) holds no runs
    outputs = []
    for argv in (["--workspace", str(ws), "list"], ["list", "--workspace", str(ws)]):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["runs"] == {run_id: {"sim": "demo", "survey": "hsc",
                                                       "total_s": 12.5}}
    # given twice, the verb's own spelling wins
    assert main(["--workspace", str(tmp_path / "empty"), "list", "--workspace", str(ws)]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == {run_id: {
        "sim": "demo", "survey": "hsc", "total_s": 12.5}}
    assert main(["--workspace", str(ws), "list", "--workspace", str(tmp_path / "empty")]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == {}


def test_workspace_before_the_verb_in_a_subprocess(tmp_path):
    ws = tmp_path / "ws"
    run_id = _fake_run(ws)
    outs = [subprocess.run([sys.executable, "-m", "simcompare", *argv], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout
            for argv in (["--workspace", str(ws), "list"], ["list", "--workspace", str(ws)])]
    assert outs[0] == outs[1] and run_id in json.loads(outs[0])["runs"]


@pytest.fixture
def fake_fetch(monkeypatch):
    """Replace the fetch function by a recorder that logs one INFO line."""
    import logging

    import simcompare.sims.tng_api as api

    calls = []

    def fetch(sim, **kw):
        logging.getLogger("simcompare.sims.tng_api").info("fetch note for the log")
        calls.append(kw)
        return kw["workspace"] / "out"

    monkeypatch.setattr(api, "fetch", fetch)
    return calls


FETCH = ["fetch", "--sim", "tng100", "--snapshot", "99"]


@pytest.mark.parametrize("option", [["-q"], ["--no-progress"], ["--workspace", "W"]])
def test_general_options_before_or_after_the_verb(option, fake_fetch, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress bars would show
    results = []
    for argv in ([*FETCH], [*option, *FETCH], [*FETCH, *option]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        kw = fake_fetch.pop()
        results.append((str(kw["workspace"]), kw["progress"], "fetch note" in err))
    default, before, after = results
    assert before == after, option
    assert default == (".", True, True)
    expect = {"-q": (".", False, False), "--no-progress": (".", False, True),
              "--workspace": ("W", True, True)}[option[0]]
    assert before == expect


def test_verbose_before_or_after_the_verb(tmp_path, capsys):
    bad = ["score", "--sim", "nope", "--survey", "hsc", "--workspace", str(tmp_path)]
    assert main(bad) == 2
    assert "Traceback" not in capsys.readouterr().err
    for argv in (["-v", *bad], [*bad, "-v"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "unknown simulation 'nope'" in err, argv


# --------------------------------------------------------------------------------------
# Unexpected exceptions: one line, the traceback in a log file
# --------------------------------------------------------------------------------------
def _boom(**kw):
    msg = "something nobody expected\nsecond line"
    raise RuntimeError(msg)


def test_internal_error_is_one_line_with_a_log_file(tmp_path, capsys, monkeypatch):
    import re

    import simcompare.pipeline as pipeline

    monkeypatch.setattr(pipeline, "list_all", _boom)
    code = main(["list", "--workspace", str(tmp_path)])
    assert code not in (0, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    m = re.fullmatch(r"simcompare: internal error: RuntimeError: something nobody expected "
                     r"\(traceback in (.+)\)", err[0])
    assert m, err[0]
    log = Path(m.group(1))
    assert log.parent == (tmp_path / ".simcompare" / "logs").resolve()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_boom" in text
    assert "second line" in text and "simcompare list --workspace" in text
    # with -v the traceback is printed too, and a second log does not overwrite the first
    assert main(["-v", "list", "--workspace", str(tmp_path)]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_boom" in err
    assert err.strip().splitlines()[-1].startswith("simcompare: internal error: RuntimeError:")
    assert len(list(log.parent.glob("*.log"))) == 2


def test_internal_error_with_an_unwritable_workspace(tmp_path, capsys, monkeypatch):
    import simcompare.pipeline as pipeline

    monkeypatch.setattr(pipeline, "list_all", _boom)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # <blocker>/.simcompare/logs cannot be made
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["list", "--workspace", str(blocker)]) not in (0, 2)
    line = capsys.readouterr().err.strip()
    assert "traceback in " in line and str((tmp_path / "tmp").resolve()) in line
    log = Path(line.split("traceback in ", 1)[1].rstrip(")"))
    assert "_boom" in log.read_text()


def test_keyboard_interrupt_keeps_its_message(tmp_path, capsys, monkeypatch):
    import simcompare.pipeline as pipeline

    def interrupt(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "list_all", interrupt)
    assert main(["list", "--workspace", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == (
        "simcompare: interrupted; run the same command again to resume")
    assert not (tmp_path / ".simcompare" / "logs").exists()


def test_internal_error_in_a_subprocess(tmp_path):
    code = ("import sys, simcompare.imageset as m, simcompare.cli as cli\n"
            "def boom(path): raise ZeroDivisionError('division by zero in a test')\n"
            "m.validate = boom\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "validate", str(tmp_path / "x.h5"),
                           "--workspace", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode not in (0, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "simcompare: internal error: ZeroDivisionError: division by zero in a test (traceback in "), \
        proc.stderr
    log = Path(lines[0].split("traceback in ", 1)[1].rstrip(")"))
    assert log.is_file() and "ZeroDivisionError" in log.read_text()


def test_a_closed_pipe_is_not_an_internal_error(tmp_path):
    """`simcompare list | head -1`: the reader leaves early; no error line, no log file."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        f"{sys.executable} -m simcompare list --workspace {tmp_path} | head -c 1",
        shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / ".simcompare" / "logs").exists()
