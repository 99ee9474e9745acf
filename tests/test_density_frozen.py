"""Frozen scoring copy: same log-densities as DensityModel.log_prob, model left unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simcompare.density import DensityModel
from simcompare.density.frozen import FrozenDensity, freeze
from simcompare.errors import ConfigError, SimcompareError
from simcompare.inference import compile_for_inference, log_prob_batched


def _trained_like(bands: int = 3, size: int = 16, seed: int = 0) -> DensityModel:
    """Tiny model with ActNorm initialised and every weight perturbed away from its init."""
    torch.manual_seed(seed)
    m = DensityModel(bands=bands, size=size, levels=2, blocks=2, hidden=16,
                     noise_sigma=[0.5 + b for b in range(bands)], asinh_softening=3.0)
    m.initialize(torch.randn(32, bands, size, size) * 4 + 1)
    with torch.no_grad():
        for p in m.flow.parameters():  # incl. zero-initialised last convs, LU factors, bases
            p.add_(0.05 * torch.randn_like(p))
    m.eval()
    return m


def _reference(m: DensityModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m.log_prob(x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_frozen_equals_model_log_prob(channels_last: bool) -> None:
    m = _trained_like()
    x = torch.randn(9, 3, 16, 16) * 5 + 2
    state = {k: v.clone() for k, v in m.state_dict().items()}
    ref = _reference(m, x)
    got = freeze(m, channels_last=channels_last).log_prob(x)
    assert got.shape == (9,)
    assert not got.requires_grad
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=0.0)
    # the scores vary between images, so a constant offset would be caught
    assert float(ref.std()) > 1.0
    # the training model is untouched (weights, memory format and gradients)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(m.log_prob(x).sum(), x)
    assert torch.isfinite(g).all()


def test_frozen_equals_model_for_float64_model_and_odd_bands() -> None:
    m = _trained_like(bands=1, size=8, seed=3).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64) * 3
    ref = _reference(m, x)
    got = m.freeze().log_prob(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=0.0)


def test_frozen_after_save_load_and_batched(tmp_path) -> None:
    m = _trained_like(bands=2, size=8, seed=1)
    m.save(tmp_path / "m")
    loaded = DensityModel.load(tmp_path / "m")
    x = np.random.default_rng(0).normal(1, 4, (23, 2, 8, 8)).astype(np.float32)
    ref = _reference(m, torch.from_numpy(x)).double().numpy()
    frozen_scores = log_prob_batched(loaded, x, batch_size=5, device="cpu")
    np.testing.assert_allclose(frozen_scores, ref, rtol=1e-4)
    plain_scores = log_prob_batched(loaded, x, batch_size=7, device="cpu", frozen=False)
    np.testing.assert_allclose(plain_scores, ref, rtol=1e-4)
    f = compile_for_inference(loaded, device="cpu")
    assert isinstance(f, FrozenDensity)
    np.testing.assert_allclose(log_prob_batched(f, x, batch_size=64), ref, rtol=1e-4)


def test_frozen_refuses_uninitialised_model_and_bad_shapes() -> None:
    m = DensityModel(bands=2, size=8, levels=2, blocks=1, hidden=4)
    with pytest.raises(SimcompareError, match="initialise"):
        m.freeze()
    m.initialize(torch.randn(8, 2, 8, 8))
    with pytest.raises(ConfigError, match="expected images of shape"):
        m.freeze().log_prob(torch.zeros(1, 3, 8, 8))


def test_batched_scoring_backs_off_on_out_of_memory(monkeypatch) -> None:
    m = _trained_like(bands=2, size=8, seed=2)
    f = m.freeze()
    seen: list[int] = []
    real = FrozenDensity.log_prob

    def flaky(self: FrozenDensity, x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        if len(x) > 3:
            msg = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"
            raise RuntimeError(msg)
        return real(self, x)

    monkeypatch.setattr(FrozenDensity, "log_prob", flaky)
    x = np.random.default_rng(1).normal(0, 3, (10, 2, 8, 8)).astype(np.float32)
    got = log_prob_batched(f, x, batch_size=16)
    monkeypatch.setattr(FrozenDensity, "log_prob", real)
    np.testing.assert_allclose(got, _reference(m, torch.from_numpy(x)).double().numpy(),
                               rtol=1e-4)
    assert seen[:3] == [10, 8, 4] and max(seen[3:]) <= 2


def test_sharded_cpu_scoring_matches_and_restores_thread_count(monkeypatch) -> None:
    m = _trained_like(seed=5)
    x = torch.randn(7, 3, 16, 16) * 5 + 2
    ref = _reference(m, x)
    whole = freeze(m, shards=1)
    sharded = freeze(m, shards=3)
    seen: list[tuple[int, int]] = []
    inner = FrozenDensity._log_prob

    def spy(self: FrozenDensity, part: torch.Tensor) -> torch.Tensor:
        seen.append((part.shape[0], torch.get_num_threads()))
        return inner(self, part)

    monkeypatch.setattr(FrozenDensity, "_log_prob", spy)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got_whole = whole.log_prob(x)
        assert seen == [(7, 2)]  # one call, torch's own threads
        seen.clear()
        got = sharded.log_prob(x)
        assert torch.get_num_threads() == 2  # restored after the sharded call
    finally:
        torch.set_num_threads(saved)
    # three parts scored concurrently, each with one intra-op thread
    assert sorted(seen) == [(2, 1), (2, 1), (3, 1)]
    assert got.shape == (7,) and not got.requires_grad
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=0.0)
    torch.testing.assert_close(got, got_whole, rtol=1e-5, atol=0.0)
    # order of the images is kept: a permuted batch gives permuted scores
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sharded.log_prob(x[perm]), got[perm], rtol=1e-5, atol=0.0)
    # more shards than images: one image per shard
    seen.clear()
    torch.testing.assert_close(freeze(m, shards=16).log_prob(x[:2]), got[:2], rtol=1e-5,
                               atol=0.0)
    assert sorted(seen) == [(1, 1), (1, 1)]
    with pytest.raises(ConfigError, match="shards"):
        freeze(m, shards=0)


def test_device_auto_picks_cuda_when_present(monkeypatch) -> None:
    from simcompare.inference import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
