"""DensityModel: exact change of variables, persistence, sampling, batched scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simcompare.density import DensityModel, bits_per_dim
from simcompare.errors import ConfigError, SimcompareError
from simcompare.inference import log_prob_batched


def _model(**kw) -> DensityModel:
    cfg = {"bands": 2, "size": 4, "levels": 2, "blocks": 2, "hidden": 8,
           "noise_sigma": [0.5, 2.0], "asinh_softening": 3.0}
    cfg.update(kw)
    return DensityModel(**cfg)


def _perturbed() -> DensityModel:
    m = _model().double()
    m.initialize(torch.randn(16, 2, 4, 4, dtype=torch.float64) * 5)
    with torch.no_grad():
        for p in m.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def test_log_prob_equals_brute_force_change_of_variables() -> None:
    """log p(x) = sum log q0(z) + log|det dz/dx| with the full Jacobian by autograd (float64)."""
    m = _perturbed()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64) * 5
    lp = m.log_prob(x).detach()
    assert lp.shape == (3,)

    def latent(v: torch.Tensor) -> torch.Tensor:
        z, _ = m.flow.inverse_and_log_det(m.transform(v.view(1, 2, 4, 4)))
        return torch.cat([zz.flatten() for zz in z])

    for i in range(3):
        jac = torch.autograd.functional.jacobian(latent, x[i].flatten())
        z, _ = m.flow.inverse_and_log_det(m.transform(x[i:i + 1]))
        log_q = sum(q.log_prob(zz) for q, zz in zip(m.flow.q0, z, strict=True))
        brute = (log_q + torch.linalg.slogdet(jac)[1]).detach()
        assert float(lp[i]) == pytest.approx(float(brute), abs=1e-8)


def test_log_prob_is_differentiable_and_bits_per_dim() -> None:
    m = _perturbed()
    x = (torch.randn(2, 2, 4, 4, dtype=torch.float64) * 3).requires_grad_(True)
    lp = m.log_prob(x)
    (grad,) = torch.autograd.grad(lp.sum(), x)
    assert grad.shape == x.shape and torch.all(torch.isfinite(grad))
    assert torch.allclose(m.bits_per_dim(x.detach()), -lp.detach() / (32 * math.log(2)))
    assert bits_per_dim(-32 * math.log(2), 32) == pytest.approx(1.0)


def test_uninitialised_model_refuses_to_score() -> None:
    m = _model()
    with pytest.raises(SimcompareError, match="initialise"):
        m.log_prob(torch.zeros(1, 2, 4, 4))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        _model(size=6)
    m = _model()
    m.initialize(torch.randn(8, 2, 4, 4))
    with pytest.raises(ConfigError, match="expected images of shape"):
        m.log_prob(torch.zeros(1, 3, 4, 4))


def test_save_load_round_trip_keeps_actnorm_and_scores(tmp_path) -> None:
    m = _model(size=8)
    m.initialize(torch.randn(32, 2, 8, 8) * 3)
    with torch.no_grad():
        for p in m.flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m.eval()
    x = torch.randn(5, 2, 8, 8) * 3
    with torch.no_grad():
        before = m.log_prob(x)
    m.save(tmp_path / "m")
    assert {"weights.pt", "config.json", "versions.json"} <= {p.name for p in (tmp_path / "m").iterdir()}
    loaded = DensityModel.load(tmp_path / "m")
    assert loaded.initialized
    # a batch far from the training data must not re-initialise ActNorm after loading
    with torch.no_grad():
        loaded.log_prob(torch.randn(4, 2, 8, 8) * 100)
        after = loaded.log_prob(x)
    assert torch.allclose(before, after, atol=1e-4)


def test_batched_scoring_matches_direct_and_sample_round_trip() -> None:
    m = _model(size=8)
    m.initialize(torch.randn(32, 2, 8, 8) * 3)
    m.eval()
    x = np.random.default_rng(0).normal(0, 3, (37, 2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        direct = m.log_prob(torch.from_numpy(x)).double().numpy()
    fast = log_prob_batched(m, x, batch_size=8, device="cpu")
    np.testing.assert_allclose(fast, direct, rtol=1e-5, atol=1e-3)
    s = m.sample(6, seed=3)
    assert s.shape == (6, 2, 8, 8)
    assert torch.equal(s, m.sample(6, seed=3))
