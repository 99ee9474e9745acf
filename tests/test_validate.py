"""The ImageSet file format as users write it by hand: docs/imageset.md, the reader's
tolerance for natural h5py spellings, and ``simcompare validate``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from simcompare import imageset
from simcompare.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "imageset.md"


def _doc_example(directory: Path, *, n: int = 4) -> Path:
    """Run the h5py example of docs/imageset.md in ``directory``; returns the file it wrote."""
    text = DOC.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "n, bands, size = 4," in code
    code = code.replace("n, bands, size = 4,", f"n, bands, size = {n},")
    path = directory / "my_images.h5"
    exec(compile(code.replace('"my_images.h5"', repr(str(path))), str(DOC), "exec"), {})
    return path


def test_doc_example_is_valid_and_reads(tmp_path, capsys):
    path = _doc_example(tmp_path)
    assert imageset.validate(path) == []
    s = imageset.read(path)
    assert s.bands == ("g", "r", "i")
    assert s.images.shape == (4, 3, 32, 32)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid mock image set, 4 images, bands g,r,i, 32x32 pixels" in out


@pytest.mark.parametrize("spelling", [
    ["g", "r"],                                   # h5py: array of variable-length str
    np.array([b"g", b"r"]),                       # fixed-length bytes
    json.dumps(["g", "r"]),                       # the JSON text this package writes
    json.dumps(["g", "r"]).encode(),              # the same as bytes
])
def test_bands_in_natural_h5py_spellings(tmp_path, spelling):
    path = _doc_example(tmp_path)
    with h5py.File(path, "a") as f:
        for name in ("images", "variance", "psf"):
            data = f[name][()]
            del f[name]
            f.create_dataset(name, data=data[:, :2] if name != "psf" else data[:2])
        f.attrs["bands"] = spelling
    assert imageset.read(path).bands == ("g", "r")
    assert imageset.validate(path) == []


def test_train_and_evaluate_read_bands_written_as_a_string_array(tmp_path, capsys):
    """The reported defect: a bands attribute stored as an HDF5 array of strings."""
    import pandas as pd

    path = _doc_example(tmp_path, n=48)
    with h5py.File(path, "a") as f:
        f.attrs["bands"] = ["g", "r", "i"]
    model = tmp_path / "model"
    assert main(["--no-progress", "train", "--images", str(path), "--out", str(model), "--epochs", "1",
                 "--levels", "1", "--blocks", "1", "--hidden", "8", "--batch-size", "16",
                 "--background", "none", "--device", "cpu"]) == 0
    out = tmp_path / "scores.parquet"
    assert main(["--no-progress", "evaluate", "--model", str(model), "--images", str(path),
                 "--out", str(out), "--device", "cpu"]) == 0
    scores = pd.read_parquet(out)
    assert len(scores) == 48
    assert np.isfinite(scores["log_prob_nats"]).all()


def _break(path: Path, how: str) -> None:
    with h5py.File(path, "a") as f:
        if how == "no_images":
            del f["images"]
        elif how == "float64":
            data = f["images"][()].astype(np.float64)
            del f["images"]
            f.create_dataset("images", data=data)
        elif how == "band_count":
            f.attrs["bands"] = ["g", "r"]
        elif how == "nan":
            data = f["images"][()]
            data[1, 0, 3, 3] = np.nan
            f["images"][...] = data
        elif how == "psf_sum":
            f["psf"][...] = 2 * f["psf"][()]
        elif how == "psf_bands":
            data = f["psf"][()][:2]
            del f["psf"]
            f.create_dataset("psf", data=data)
        elif how == "no_object_id":
            del f["catalog/object_id"]
        elif how == "duplicate_ids":
            f["catalog/object_id"][...] = np.array([1, 1, 2, 3])
        elif how == "short_column":
            del f["catalog/redshift"]
            f.create_dataset("catalog/redshift", data=np.zeros(3))
        elif how == "schema":
            f.attrs["schema"] = "something.else"
        elif how == "no_zero_point":
            del f.attrs["zero_point"]
        elif how == "bad_pixel_scale":
            f.attrs["pixel_scale_arcsec"] = -0.2
        elif how == "kind":
            f.attrs["kind"] = "simulated"
        elif how == "variance_shape":
            del f["variance"]
            f.create_dataset("variance", data=np.ones((4, 3, 16, 16), np.float32))
        elif how == "negative_variance":
            f["variance"][...] = -1.0
        elif how == "all_zero":
            f["images"][2] = 0.0
        elif how == "bad_provenance":
            f.attrs["provenance"] = "{not json"


@pytest.mark.parametrize(("how", "words"), [
    ("no_images", "dataset 'images' is missing"),
    ("float64", "'images' must be float32, got float64"),
    ("band_count", "3 band planes but attribute 'bands' names 2"),
    ("nan", "NaN or inf in unmasked pixels of 1 image(s) (first rows [1])"),
    ("psf_sum", "normalised to sum 1"),
    ("psf_bands", "'psf' must be (B, P, P) or (N, B, P, P) with B=3"),
    ("no_object_id", "'catalog/object_id' is missing"),
    ("duplicate_ids", "repeats 1 id(s)"),
    ("short_column", "'catalog/redshift' has shape (3,), expected (4,)"),
    ("schema", "'schema' must be 'simcompare.imageset'"),
    ("no_zero_point", "'zero_point' is missing"),
    ("bad_pixel_scale", "'pixel_scale_arcsec' must be a finite positive number"),
    ("kind", "'kind' must be 'mock' or 'observed'"),
    ("variance_shape", "'variance' has shape (4, 3, 16, 16), expected (4, 3, 32, 32)"),
    ("negative_variance", "'variance' holds negative or non-finite values"),
    ("all_zero", "1 image(s) that are zero in every unmasked pixel (first rows [2])"),
    ("bad_provenance", "'provenance' is not valid JSON"),
])
def test_validate_names_the_problem(tmp_path, capsys, how, words):
    path = _doc_example(tmp_path)
    _break(path, how)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: 1 problem(s)" in err
    assert words in err
    assert "Traceback" not in err


def test_validate_lists_every_problem_at_once(tmp_path, capsys):
    path = _doc_example(tmp_path)
    for how in ("float64", "no_object_id", "no_zero_point"):
        _break(path, how)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert err.count("\n  - ") == 3


def test_validate_missing_and_unreadable_files(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "absent.h5")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["validate", str(bad)]) == 1
    assert "not a readable HDF5 file" in capsys.readouterr().err


def test_validate_notes_a_missing_psf(tmp_path, capsys):
    path = _doc_example(tmp_path)
    with h5py.File(path, "a") as f:
        del f["psf"]
    assert main(["validate", str(path)]) == 0
    assert "psf no (a background model" in capsys.readouterr().out
