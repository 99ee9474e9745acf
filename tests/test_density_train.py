"""train() / evaluate(): split, outputs, NaN guard, resume after a kill, masked pixels."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from simcompare import imageset
from simcompare.density import DensityModel, evaluate, train
from simcompare.density.data import fill_masked, make_split
from simcompare.density.train import TrainOptions
from simcompare.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset

TINY = {"levels": 2, "blocks": 2, "hidden": 8, "batch_size": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("train")
    obs = galaxy_imageset(d / "obs.h5", n=60, mask_fraction=0.01)
    with torch.random.fork_rng():
        out = train(obs, out=d / "model", epochs=2, background="none", **TINY)
    return obs, out


def test_outputs_split_and_scores(trained) -> None:
    obs, out = trained
    split = json.loads((out / "split.json").read_text())
    ids = set(imageset.read_catalog(obs)["object_id"].tolist())
    parts = [set(split[k]) for k in ("train", "validation", "test")]
    assert set.union(*parts) == ids and sum(map(len, parts)) == len(ids)
    assert len(split["test"]) == 12 and len(split["validation"]) == 6
    info = json.loads((out / "training.json").read_text())
    hist = info["models"][0]["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["val_bits_per_dim"]) for h in hist)
    model = DensityModel.load(out / "model")
    assert model.config["levels"] == 2
    ref = pd.read_parquet(out / "reference_scores.parquet")
    assert sorted(ref["object_id"]) == split["test"]
    df = evaluate(out, obs, out=out / "all.parquet", device="cpu")
    for col in ("object_id", "log_prob_nats", "bits_per_dim", "log_prob_background_nats",
                "llr_nats", "percentile", "llr_nats_std", "stellar_mass_msun"):
        assert col in df.columns
    assert len(df) == 60 and np.all(np.isfinite(df["log_prob_nats"]))
    # background "none": no background score, no ratio; percentile from log_prob_nats
    assert df["llr_nats"].isna().all() and df["log_prob_background_nats"].isna().all()
    d = 2 * 16 * 16
    np.testing.assert_allclose(df["bits_per_dim"], -df["log_prob_nats"] / (d * np.log(2)))
    test = df[df["object_id"].isin(split["test"])].set_index("object_id").sort_index()
    np.testing.assert_allclose(test["log_prob_nats"], ref.set_index("object_id").sort_index()
                               ["log_prob_nats"], rtol=1e-6)
    worst = df["log_prob_nats"].idxmin()
    assert df.loc[worst, "percentile"] <= 100 / 12
    # masked pixels are filled the same way whichever subset an image is in
    test_only = evaluate(out, obs, out=None, split="test", device="cpu")
    np.testing.assert_allclose(np.sort(test_only["log_prob_nats"]), np.sort(ref["log_prob_nats"]))


def test_orientations_are_the_models_and_another_count_rescores_the_reference(trained) -> None:
    obs, out = trained
    info = json.loads((out / "training.json").read_text())
    assert info["score_orientations"] == 4           # the default, recorded
    ref = pd.read_parquet(out / "reference_scores.parquet").set_index("object_id").sort_index()
    test4 = evaluate(out, obs, out=None, split="test", device="cpu").set_index("object_id")
    np.testing.assert_allclose(test4.sort_index()["log_prob_nats"], ref["log_prob_nats"],
                               rtol=1e-6)
    # one orientation: other scores, and percentiles of the test split scored that way
    test1 = evaluate(out, obs, out=None, split="test", device="cpu", orientations=1)
    test1 = test1.set_index("object_id").sort_index()
    assert np.abs(test1["log_prob_nats"] - ref["log_prob_nats"]).max() > 1e-3
    n = len(test1)
    expected = 100.0 * (test1["log_prob_nats"].rank().to_numpy() - 0.5) / n
    np.testing.assert_allclose(test1["percentile"].to_numpy(), expected)
    # the four-orientation score is the mean of the quarter turns' own scores (no masked
    # pixels here: their noise fill is drawn on the stamp as it lies)
    clean = imageset.read(obs)
    clean = dataclasses.replace(clean, mask=None, images=np.where(clean.mask > 0, 0.0,
                                                                  clean.images).astype(np.float32))
    turned = []
    for k in range(4):
        s = dataclasses.replace(clean, images=np.ascontiguousarray(
            np.rot90(clean.images, k, axes=(-2, -1))))
        path = imageset.write(out.parent / f"turned{k}.h5", s)
        turned.append(evaluate(out, path, out=None, split="test", device="cpu",
                               orientations=1).set_index("object_id").sort_index())
    four = evaluate(out, out.parent / "turned0.h5", out=None, split="test",
                    device="cpu").set_index("object_id").sort_index()
    np.testing.assert_allclose(np.mean([t["log_prob_nats"] for t in turned], axis=0),
                               four["log_prob_nats"], rtol=1e-5)
    with pytest.raises(ConfigError, match="orientations"):
        evaluate(out, obs, out=None, device="cpu", orientations=2)


def test_split_is_fixed_by_seed() -> None:
    ids = np.arange(100, 150)
    a, b = make_split(ids, seed=3), make_split(ids, seed=3)
    assert a == b and a != make_split(ids, seed=4)
    with pytest.raises(ConfigError, match="too few"):
        make_split(np.arange(3), seed=0)


def test_fill_masked_uses_variance() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((1, 1, 200, 200), np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[..., :100, :] = 1
    var = np.full(img.shape, 9.0, np.float32)
    out = fill_masked(img, mask=mask, variance=var, sigma=[1.0], rng=rng)
    assert np.std(out[..., :100, :]) == pytest.approx(3.0, rel=0.03)
    assert np.all(out[..., 100:, :] == 0)


def test_nan_guard_restores_and_logs(tmp_path, monkeypatch, caplog) -> None:
    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    original = DensityModel.log_prob
    calls = {"n": 0}

    def flaky(self, x):
        calls["n"] += 1
        out = original(self, x)
        if self.training and calls["n"] == 3:
            return out * float("nan")
        return out

    monkeypatch.setattr(DensityModel, "log_prob", flaky)
    with caplog.at_level(logging.WARNING, logger="simcompare.density.train"):
        out = train(obs, out=tmp_path / "m", epochs=2, background="none", **TINY)
    assert any("non-finite" in r.getMessage() for r in caplog.records)
    info = json.loads((out / "training.json").read_text())
    assert info["nan_guard_events"] == 1
    model = DensityModel.load(out / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_after_kill_ends_at_same_epoch_count(tmp_path) -> None:
    obs = galaxy_imageset(tmp_path / "obs.h5", n=200, size=16)
    out = tmp_path / "m"
    epochs = 4
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from simcompare.density import train\n"
        f"train({str(obs)!r}, out={str(out)!r}, epochs={epochs}, background='none', "
        "levels=2, blocks=2, hidden=16, batch_size=8, device='cpu', resume=len(sys.argv) > 1)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    ckpt = out / "model" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run ended before writing its first checkpoint"
    state = torch.load(ckpt, weights_only=False)
    assert not state["done"] and state["epoch"] < epochs  # really interrupted
    assert not (out / "training.json").exists()
    subprocess.run([sys.executable, "-c", script, "resume"], env=env, check=True, timeout=300)
    info = json.loads((out / "training.json").read_text())
    hist = info["models"][0]["history"]
    assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
    assert (out / "reference_scores.parquet").exists()


def test_ensemble_members_mean_and_spread(tmp_path) -> None:
    obs = galaxy_imageset(tmp_path / "obs.h5", n=60)
    # scored in one orientation, so the members' plain log_prob is the reference below
    out = train(obs, out=tmp_path / "m", epochs=1, background="sersic", ensemble=3, seed=7,
                options=TrainOptions(score_orientations=1), **TINY)
    info = json.loads((out / "training.json").read_text())
    members = info["members"]
    assert [m["seed"] for m in members] == [7, 1007, 2007]
    assert [m["model"] for m in members] == ["model", "member_1/model", "member_2/model"]
    assert all((out / m["background"] / "weights.pt").exists() for m in members)
    assert len(info["models"]) == 6  # main and background per member
    df = evaluate(out, obs, out=None, device="cpu")
    assert (df["n_members"] == 3).all()
    # each member scored on its own: the table holds their mean and sample spread
    from simcompare.density.data import prepared_images
    from simcompare.inference import log_prob_batched

    x = prepared_images(imageset.read(obs), sigma=np.asarray(info["noise_sigma"]), seed=7)
    main = np.vstack([log_prob_batched(DensityModel.load(out / m["model"]), x, device="cpu")
                      for m in members])
    back = np.vstack([log_prob_batched(DensityModel.load(out / m["background"]), x,
                                       device="cpu") for m in members])
    assert np.ptp(main, axis=0).min() > 0  # differently seeded members disagree
    np.testing.assert_allclose(df["log_prob_nats"], main.mean(0), rtol=1e-6)
    np.testing.assert_allclose(df["log_prob_nats_std"], main.std(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(df["llr_nats"], (main - back).mean(0), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(df["llr_nats_std"], (main - back).std(0, ddof=1), rtol=1e-4)
    assert (df["llr_nats_std"] > 0).all()
    # the local scores: the levels add up to the ratio, the footprint and peak ratios are
    # ensemble means of their own, with spreads
    np.testing.assert_allclose(df["llr_level0_nats"] + df["llr_level1_nats"], df["llr_nats"],
                               rtol=1e-4, atol=2e-2)
    assert np.isfinite(df["llr_footprint_nats"]).all() and np.isfinite(df["llr_peak_nats"]).all()
    assert (df["llr_footprint_nats_std"] > 0).all() and (df["llr_peak_nats_std"] > 0).all()
    assert not np.allclose(df["llr_footprint_nats"], df["llr_nats"])
    # the reference percentiles use the ensemble-mean ratio of the test split
    ref = pd.read_parquet(out / "reference_scores.parquet")
    assert (ref["n_members"] == 3).all()
    from simcompare.density import percentile_of
    from simcompare.density.evaluate import PERCENTILE_COLUMN

    assert PERCENTILE_COLUMN == "llr_nats"
    np.testing.assert_allclose(df["percentile"], percentile_of(df["llr_nats"], ref["llr_nats"]))


def test_progress_bar_shows_bits_per_dim(tmp_path, capsys, monkeypatch) -> None:
    import tqdm.auto

    class SlowTimer(tqdm.auto.tqdm):
        """A bar whose redraw timer never fires, as when epochs are faster than it."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "mininterval": 1e9})

    monkeypatch.setattr(tqdm.auto, "tqdm", SlowTimer)
    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    train(obs, out=tmp_path / "m", epochs=2, background="none", progress=True, **TINY)
    err = capsys.readouterr().err
    assert "model: " in err and "2/2" in err and "epoch" in err
    assert "train_bpd=" in err and "val_bpd=" in err
    # the figures shown are the ones recorded in training.json
    hist = json.loads((tmp_path / "m" / "training.json").read_text())["models"][0]["history"]
    assert f"val_bpd={hist[-1]['val_bits_per_dim']:.4f}" in err


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch, caplog) -> None:
    import importlib

    from simcompare.density.train import TrainOptions

    train_module = importlib.import_module("simcompare.density.train")  # the module

    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    # validation NLL (bits/dim) per epoch: best at epoch 2, then two epochs without gain
    fake = iter([1.0, 0.5, 0.9, 0.8, 0.7, 0.6])
    states: list[dict[str, torch.Tensor]] = []

    def fake_val(model, x, device, batch):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(fake)

    monkeypatch.setattr(train_module, "_mean_bpd", fake_val)
    with caplog.at_level(logging.INFO, logger="simcompare.density.train"):
        out = train(obs, out=tmp_path / "m", epochs=6, background="none",
                    options=TrainOptions(patience=2), **TINY)
    rec = json.loads((out / "training.json").read_text())["models"][0]
    assert rec["epochs_run"] == 4 and rec["stopped_early"] and rec["best_epoch"] == 2
    assert [h["val_bits_per_dim"] for h in rec["history"]] == [1.0, 0.5, 0.9, 0.8]
    assert any("early stop after epoch 4" in r.getMessage() for r in caplog.records)
    saved = torch.load(out / "model" / "weights.pt", weights_only=True)
    best, last = states[1], states[3]
    assert all(torch.equal(saved[k], best[k]) for k in best)
    assert not all(torch.equal(saved[k], last[k]) for k in last)


def test_learning_rate_warm_up_then_cosine_decay() -> None:
    from simcompare.density.train import _lr_factor

    total, warmup, floor = 100, 10, 0.02
    f = np.array([_lr_factor(s, total, warmup, floor) for s in range(total + 1)])
    np.testing.assert_allclose(f[:warmup], np.arange(1, warmup + 1) / warmup)  # linear warm-up
    assert f[warmup] == pytest.approx(1.0)  # the peak learning rate
    assert np.all(np.diff(f[warmup:]) <= 1e-12)  # then never rises
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(floor + (1 - floor) * 0.5)  # cosine: halfway at the midpoint
    assert f[total] == pytest.approx(floor)  # decays to the floor


def test_augmentation_draws_all_eight_rotations_and_flips() -> None:
    from simcompare.density.train import _augment

    base = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    variants = [torch.rot90(t, k, (-2, -1)) for t in (base, base.flip(-1)) for k in range(4)]
    x = base.repeat(400, 1, 1, 1)
    out = _augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(x, base.repeat(400, 1, 1, 1))  # input untouched
    which = [next(i for i, v in enumerate(variants) if torch.equal(o, v[0])) for o in out]
    counts = np.bincount(which, minlength=8)
    assert (counts > 25).all(), counts  # each of the 8 symmetries, drawn per image (~50 each)


def test_gradients_are_clipped_to_the_option(tmp_path, monkeypatch) -> None:
    from simcompare.density.train import TrainOptions

    obs = galaxy_imageset(tmp_path / "obs.h5", n=40)
    original = torch.nn.utils.clip_grad_norm_
    seen: list[tuple[float, float, float]] = []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        before = original(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
        seen.append((float(max_norm), float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(obs, out=tmp_path / "m", epochs=1, background="none",
          options=TrainOptions(clip_norm=1e-3), **TINY)
    assert seen and all(m == 1e-3 for m, _, _ in seen)
    assert all(before > 1e-3 for _, before, _ in seen)  # the raw gradients were larger ...
    assert all(after <= 1e-3 * (1 + 1e-4) for _, _, after in seen)  # ... and were clipped
