"""Mixed-precision training: the calibration rule, the scaler, and a CPU bfloat16 run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simcompare.density import DensityModel, train
from simcompare.density.amp import choose_precision, grad_scaler
from simcompare.density.data import prepared_images
from simcompare.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset

TINY = {"levels": 2, "blocks": 2, "hidden": 8, "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    from simcompare import imageset

    d = tmp_path_factory.mktemp("amp")
    obs = imageset.read(galaxy_imageset(d / "obs.h5", n=16))
    x = prepared_images(obs, sigma=np.full(len(obs.bands), 0.05), seed=0)
    torch.manual_seed(0)
    model = DensityModel(bands=len(obs.bands), size=x.shape[-1], levels=2, blocks=2, hidden=8,
                         noise_sigma=np.full(len(obs.bands), 0.05))
    model.initialize(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return model, x


def test_auto_is_float32_on_cpu(model_and_batch) -> None:
    model, x = model_and_batch
    for asked in ("auto", "float32"):
        prec, err = choose_precision(model, x, asked, "cpu", "m")
        assert prec == "float32" and math.isnan(err)


def test_reduced_precision_kept_only_within_tolerance(model_and_batch, caplog) -> None:
    model, x = model_and_batch
    prec, err = choose_precision(model, x, "bfloat16", "cpu", "m", tolerance=1.0)
    assert prec == "bfloat16" and 0 < err <= 1.0
    with caplog.at_level("WARNING"):
        prec, err2 = choose_precision(model, x, "bfloat16", "cpu", "m", tolerance=0.0)
    assert prec == "float32" and err2 == pytest.approx(err)
    assert "did not pass calibration" in caplog.text


def test_auto_on_cuda_tries_bfloat16_then_float16(model_and_batch, monkeypatch) -> None:
    import simcompare.density.amp as amp

    model, x = model_and_batch
    tried: list = []

    class Recording:
        def __init__(self, device_type, dtype):
            tried.append(dtype)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(amp, "autocast", Recording)
    # float32 arithmetic under the fake autocast agrees exactly: the first candidate wins
    assert choose_precision(model, x, "auto", "cuda", "m")[0] == "bfloat16"
    assert tried == [torch.bfloat16]
    tried.clear()
    # nothing passes a negative tolerance: both candidates are tried, float32 kept
    assert choose_precision(model, x, "auto", "cuda", "m", tolerance=-1.0)[0] == "float32"
    assert tried == [torch.bfloat16, torch.float16]


def test_grad_scaler_only_for_float16() -> None:
    cpu = torch.device("cpu")
    assert grad_scaler("float32", cpu) is None and grad_scaler("bfloat16", cpu) is None
    assert grad_scaler("float16", cpu) is not None


def test_cpu_bfloat16_training_records_its_precision(tmp_path) -> None:
    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    out = train(obs, out=tmp_path / "m", epochs=1, background="none", precision="bfloat16", **TINY)
    info = json.loads((out / "training.json").read_text())
    assert info["options"]["precision"] == "bfloat16"
    m = info["models"][0]
    # on CPU bfloat16 agrees within 1e-3 relative on this tiny model, or float32 is kept
    assert m["precision"] in ("bfloat16", "float32")
    if m["precision"] == "bfloat16":
        assert m["precision_error"] <= 1e-3
    else:
        assert m["precision_error"] > 1e-3
    assert np.isfinite(m["history"][-1]["val_bits_per_dim"])
    default = train(obs, out=tmp_path / "d", epochs=1, background="none", **TINY)
    assert json.loads((default / "training.json").read_text())["models"][0]["precision"] == "float32"


def test_unknown_precision_is_rejected(tmp_path) -> None:
    obs = galaxy_imageset(tmp_path / "obs.h5", n=20)
    with pytest.raises(ConfigError):
        train(obs, out=tmp_path / "m", epochs=1, background="none", precision="float8", **TINY)


def test_cpu_bfloat16_training_steps_run_under_autocast(tmp_path, monkeypatch) -> None:
    import simcompare.inference as inference

    # a loose tolerance makes calibration keep bfloat16, so the autocast steps run
    monkeypatch.setattr(inference, "AMP_TOLERANCE", 1.0)
    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    out = train(obs, out=tmp_path / "m", epochs=2, background="none", precision="bfloat16", **TINY)
    m = json.loads((out / "training.json").read_text())["models"][0]
    assert m["precision"] == "bfloat16" and m["amp_skipped_steps"] == 0
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert all(np.isfinite(h["val_bits_per_dim"]) for h in m["history"])
    # the saved weights are float32 and score like any model
    model = DensityModel.load(out / "model")
    assert all(p.dtype == torch.float32 for p in model.parameters())
