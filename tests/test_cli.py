"""The command line: help for every verb, one-line errors, no partial outputs."""

from __future__ import annotations

import json
import subprocess
import sys

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
    import simcompare

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
