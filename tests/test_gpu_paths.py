"""Scoring on clusters and CUDA: worker evaluation, calibrated precision, automatic batch size.

No GPU is needed: CUDA is exercised through mocks of the device queries only (which
device and precision are chosen), never through CUDA kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from simcompare import imageset, inference
from simcompare.cli import main
from simcompare.cluster import Cluster
from simcompare.density import DensityModel, evaluate, train
from simcompare.density.data import prepared_images
from simcompare.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset

evaluate_module = evaluate_mod = sys.modules["simcompare.density.evaluate"]
train_module = sys.modules["simcompare.density.train"]

TINY = {"levels": 2, "blocks": 2, "hidden": 8, "batch_size": 16, "device": "cpu"}


class _Sentinel(Exception):
    pass


@pytest.fixture(scope="module")
def model2(tmp_path_factory) -> tuple[Path, Path]:
    """A two-member ensemble with Sersic backgrounds (every score column present)."""
    d = tmp_path_factory.mktemp("gpu")
    obs = galaxy_imageset(d / "obs.h5", n=48, mask_fraction=0.01)
    with torch.random.fork_rng():
        out = train(obs, out=d / "model", epochs=1, background="sersic", ensemble=2, **TINY)
    return obs, out


def _cache_keys() -> list:
    return [k[0] for k in sys.modules["simcompare.density.evaluate"]._SCORER_CACHE]


def test_evaluate_on_cluster_workers_matches_in_process(model2, monkeypatch) -> None:
    obs, out = model2
    local = evaluate(out, obs, out=None, device="cpu")
    local_test = evaluate(out, obs, out=None, device="cpu", split="test")
    monkeypatch.setattr(evaluate_module, "_CHUNK_MIN", 8)  # several chunks per worker
    sent = []
    real_map = Cluster.map

    def spy(self, fn, batches, *args, **kw):
        sent.extend(batches)
        return real_map(self, fn, batches, *args, **kw)

    monkeypatch.setattr(Cluster, "map", spy)
    with Cluster(workers=2) as cluster:
        remote = evaluate(out, obs, out=None, device="auto", cluster=cluster)
        again = evaluate(out, obs, out=None, device="auto", cluster=cluster)
        keys = cluster.client.run(_cache_keys)
        remote_test = evaluate(out, obs, out=None, device="auto", cluster=cluster, split="test")
    assert len(local) == 48 and (local["n_members"] == 2).all()
    assert np.isfinite(local["llr_peak_nats_std"]).all()
    pd.testing.assert_frame_equal(remote, local)
    pd.testing.assert_frame_equal(again, local)
    pd.testing.assert_frame_equal(remote_test, local_test)
    # the tasks carried file slices (a path and row numbers), never the images
    assert len(sent) >= 2 * 6 + 1
    assert all(isinstance(b, dict) and set(b) == {"path", "rows", "sigma", "seed"} for b in sent)
    assert sorted(np.concatenate([b["rows"] for b in sent[:6]]).tolist()) == list(range(48))
    # each worker process loaded the members once and kept them (one cache entry)
    assert len(keys) == 2
    assert all(v == [str(out.resolve())] for v in keys.values())


def test_evaluate_on_a_cluster_with_a_killed_worker_matches_in_process(
        model2, monkeypatch, worker_killing_cluster) -> None:
    """A dask worker killed mid-evaluate: the stage completes with the in-process table."""
    obs, out = model2
    local = evaluate(out, obs, out=None, device="cpu")
    monkeypatch.setattr(evaluate_module, "_CHUNK_MIN", 8)  # six tasks, several in flight
    with worker_killing_cluster(workers=2) as cluster:
        remote = evaluate(out, obs, out=None, device="auto", cluster=cluster)
        assert len(cluster.killed) == 1
    pd.testing.assert_frame_equal(remote, local)


def test_cluster_evaluate_rejects_bad_device_before_starting(model2) -> None:
    obs, out = model2
    with pytest.raises(ConfigError, match="unknown device"):
        evaluate(out, obs, out=None, device="tpu", cluster=Cluster(workers=2))


def _frozen_and_images(tmp_path: Path, seed: int = 0) -> tuple[object, np.ndarray]:
    torch.manual_seed(seed)
    obs = imageset.read(galaxy_imageset(tmp_path / "o.h5", n=24))
    x = prepared_images(obs, sigma=np.array([1.0, 1.0]), seed=0)
    m = DensityModel(bands=2, size=16, levels=2, blocks=2, hidden=8, noise_sigma=[1.0, 1.0],
                     asinh_softening=3.0)
    m.initialize(torch.from_numpy(x))
    with torch.no_grad():
        for p in m.flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.freeze(device="cpu"), x


def test_bfloat16_calibration_decision_follows_the_measured_error(tmp_path) -> None:
    f, x = _frozen_and_images(tmp_path)
    calib = x[:inference.CALIBRATION_IMAGES]
    t = torch.from_numpy(calib)
    ref = f.log_prob(t).double().numpy()
    f.amp_dtype = torch.bfloat16
    low = f.log_prob(t)
    assert low.dtype == torch.float32  # outputs stay float32 under autocast
    measured = float(np.max(np.abs(low.double().numpy() - ref) / np.abs(ref)))
    f.amp_dtype = None
    assert measured > 0  # autocast really changed the arithmetic
    name, err = inference.calibrate_precision(f, calib, "bfloat16")
    assert err == pytest.approx(measured, rel=1e-6)
    assert (name == "bfloat16") == (measured <= inference.AMP_TOLERANCE)
    assert f.amp_dtype == (torch.bfloat16 if name == "bfloat16" else None)
    # both branches, forced by the tolerance
    name, _ = inference.calibrate_precision(f, calib, "bfloat16", tolerance=measured / 2)
    assert name == "float32" and f.amp_dtype is None
    name, _ = inference.calibrate_precision(f, calib, "bfloat16", tolerance=measured * 2)
    assert name == "bfloat16" and f.amp_dtype == torch.bfloat16
    f.amp_dtype = None  # a frozen scorer passed in keeps its setting under float32
    full = inference.log_prob_batched(f, x, batch_size=8)
    assert f.amp_dtype is None and np.isfinite(full).all()
    assert np.allclose(full[:len(ref)], ref, rtol=1e-6)
    kept = inference.log_prob_batched(f, x, precision="bfloat16", batch_size=8)
    assert kept.dtype == np.float64
    rel = np.abs(kept - full) / np.abs(full)
    if f.amp_dtype == torch.bfloat16:  # kept: the calibration images are within tolerance
        assert measured <= inference.AMP_TOLERANCE
        assert rel[:len(ref)].max() <= inference.AMP_TOLERANCE and rel.max() > 0
        assert rel.max() <= 3 * inference.AMP_TOLERANCE
    else:
        assert measured > inference.AMP_TOLERANCE and np.array_equal(kept, full)


def test_precision_auto_is_float32_on_cpu_and_names_are_checked(tmp_path) -> None:
    f, x = _frozen_and_images(tmp_path)
    assert inference.calibrate_precision(f, x[:4], "auto")[0] == "float32"
    assert f.amp_dtype is None
    with pytest.raises(ConfigError, match="precision"):
        inference.calibrate_precision(f, x[:4], "int8")
    with pytest.raises(ConfigError, match="frozen"):
        inference.log_prob_batched(f, x, precision="float16", frozen=False)


def _fake_cuda(monkeypatch, free: int, per_image: int) -> list:
    calls: list = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(d))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1000)
    state = {"probe": 0}

    def peak(d=None) -> int:
        return 1000 + per_image * state["probe"]

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", peak)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, 2 * free))
    return [calls, state]


@pytest.mark.parametrize(("free", "expected"), [(100 * 2**20, 70), (10 * 2**20, 7),
                                                 (2**20, 1), (2**40, inference.AUTO_BATCH_MAX)])
def test_auto_batch_size_follows_free_cuda_memory(tmp_path, monkeypatch, free, expected) -> None:
    f, x = _frozen_and_images(tmp_path)
    calls, state = _fake_cuda(monkeypatch, free=free, per_image=2**20)
    state["probe"] = 8
    bs = inference.auto_batch_size(f, x, device=torch.device("cuda"), probe=8)
    assert bs == expected
    assert calls == [torch.device("cuda")]


def test_cpu_batch_sizes_keep_the_cpu_limit(tmp_path) -> None:
    f, x = _frozen_and_images(tmp_path)
    assert inference.auto_batch_size(f, x) == inference.CPU_BATCH_LIMIT
    assert inference.resolve_batch_size("auto", f, x, "cpu") == inference.CPU_BATCH_LIMIT
    assert inference.resolve_batch_size(64, f, x, "cpu") == inference.CPU_BATCH_LIMIT
    assert inference.resolve_batch_size(8, f, x, "cpu") == 8
    with pytest.raises(ConfigError, match="batch_size"):
        inference.resolve_batch_size("big", f, x, "cpu")


def test_auto_device_is_cuda_when_a_gpu_is_visible(monkeypatch) -> None:
    assert inference.resolve_device("auto").type == ("cuda" if torch.cuda.is_available()
                                                   else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference.resolve_device("auto") == torch.device("cuda")
    assert inference.resolve_device("cuda:1") == torch.device("cuda:1")
    assert inference.resolve_device("cpu") == torch.device("cpu")


def test_train_and_evaluate_take_the_cuda_path(model2, tmp_path, monkeypatch) -> None:
    obs, out = model2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen: dict = {}

    def fake_train_one(model_dir, **kw):
        seen["train"] = kw["device"]
        raise _Sentinel

    def fake_load(model, info, dev, precision, calib, use_torch_compile=False):
        seen.setdefault("evaluate", []).append((dev, precision))
        raise _Sentinel

    monkeypatch.setattr(train_module, "_train_one", fake_train_one)
    monkeypatch.setattr(evaluate_module, "_load_scorers", fake_load)
    with pytest.raises(_Sentinel):
        train(obs, out=tmp_path / "m", epochs=1, background="none",
              **{**TINY, "device": "auto"})
    assert seen["train"] == torch.device("cuda")
    with pytest.raises(_Sentinel):
        evaluate(out, obs, out=None, device="auto")
    # a cluster task on a worker with a GPU picks it, one without stays on the CPU
    x = np.zeros((2, 2, 16, 16), np.float32)
    stamp = (out / "training.json").stat().st_mtime_ns
    monkeypatch.setattr(sys.modules["simcompare.cluster"], "_cuda_available", lambda: True)
    with pytest.raises(_Sentinel):
        evaluate_mod._score_chunk((x, None), str(out), stamp, "auto", "auto", "auto", x)
    monkeypatch.setattr(sys.modules["simcompare.cluster"], "_cuda_available", lambda: False)
    with pytest.raises(_Sentinel):
        evaluate_mod._score_chunk((x, None), str(out), stamp, "auto", "auto", "auto", x)
    assert seen["evaluate"] == [(torch.device("cuda"), "auto"), (torch.device("cuda"), "auto"),
                                (torch.device("cpu"), "auto")]


def test_precision_candidates_on_cuda() -> None:
    assert inference._precision_candidates("auto", "cuda") == ("bfloat16", "float16")
    assert inference._precision_candidates("auto", "cpu") == ()
    assert inference._precision_candidates("float16", "cpu") == ("float16",)
    assert inference._precision_candidates("float32", "cuda") == ()


def test_evaluate_cli_precision_and_auto_batch_options(model2, tmp_path) -> None:
    obs, out = model2
    dest = tmp_path / "s.parquet"
    code = main(["evaluate", "--model", str(out), "--images", str(obs), "--out", str(dest),
                 "--device", "cpu", "--batch-size", "auto", "--precision", "float32"])
    assert code == 0
    df = pd.read_parquet(dest)
    ref = evaluate(out, obs, out=None, device="cpu", batch_size=8)
    pd.testing.assert_frame_equal(df, ref)
    info = json.loads((out / "training.json").read_text())
    assert (df["n_members"] == len(info["members"])).all()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", str(out), "--images", str(obs), "--out",
              str(tmp_path / "t.parquet"), "--precision", "int8"])
    assert exc.value.code == 2 and not (tmp_path / "t.parquet").exists()


class _SmallMemory:
    """A frozen scorer that runs out of memory above ``limit`` images per batch."""

    def __init__(self, inner, limit: int) -> None:
        self.inner, self.limit, self.sizes = inner, limit, []

    def level_maps(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            msg = "CUDA out of memory. Tried to allocate 2.00 GiB"
            raise RuntimeError(msg)
        return self.inner.level_maps(x)


def test_local_scores_halve_the_batch_on_out_of_memory(tmp_path, caplog) -> None:
    from simcompare.density.scores import local_scores

    f, x = _frozen_and_images(tmp_path)
    g, _ = _frozen_and_images(tmp_path / "b", seed=1)
    want = local_scores(f, g, x, footprint=None, batch=24)
    small_f, small_g = _SmallMemory(f, 5), _SmallMemory(g, 24)
    got = local_scores(small_f, small_g, x, footprint=None, batch=24)
    assert small_f.sizes[:3] == [24, 12, 6] and set(small_f.sizes[3:]) <= {3, 1, 2}
    assert max(s for s in small_f.sizes[3:]) <= 5
    assert "out of memory at batch size 6; retrying with 3" in caplog.text
    assert np.abs(want["llr"]).min() > 0  # two different models
    for key, val in want.items():
        np.testing.assert_allclose(got[key], val, rtol=1e-5, atol=1e-3, err_msg=key)


def test_evaluate_chunks_give_each_worker_several_tasks() -> None:
    size = evaluate_module._chunk_size
    assert size(384, 2) == 48 and -(-384 // size(384, 2)) == 8  # four per worker
    assert size(384, 1) == 96
    assert size(10, 2) == evaluate_module._CHUNK_MIN  # at least one CPU batch
    assert size(10**6, 1) == evaluate_module._CHUNK_MAX  # bounded memory per task


def test_evaluate_shows_its_progress_in_process_and_on_a_cluster(model2, monkeypatch,
                                                                  capsys) -> None:
    """Scoring shows a bar: per member (images of both models) here, per file slice remotely."""
    import tqdm.auto

    shown = []

    class Recorded(tqdm.auto.tqdm):
        def close(self):
            if not self.disable:  # tqdm closes again when collected
                shown.append((self.desc.rstrip(": "), self.n, self.total, self.unit))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    monkeypatch.setattr(evaluate_module, "_CHUNK_MIN", 8)  # six file slices
    obs, out = model2
    quiet = evaluate(out, obs, out=None, device="cpu")
    assert shown == [] and capsys.readouterr().err == ""
    local = evaluate(out, obs, out=None, device="cpu", progress=True)
    assert "img" in capsys.readouterr().err
    members = [m["model"] for m in json.loads((out / "training.json").read_text())["members"]]
    orientations = json.loads((out / "training.json").read_text())["score_orientations"]
    # one bar per member, run to its end: 48 images, main and background, every orientation
    assert shown == [(name, 2 * orientations * 48, 2 * orientations * 48, "img")
                     for name in members]
    pd.testing.assert_frame_equal(local, quiet)
    shown.clear()
    with Cluster(workers=2) as cluster:
        remote = evaluate(out, obs, out=None, device="cpu", cluster=cluster, progress=True)
    assert "slice" in capsys.readouterr().err
    assert shown == [("evaluate", 6, 6, "slice")]
    pd.testing.assert_frame_equal(remote, quiet)
