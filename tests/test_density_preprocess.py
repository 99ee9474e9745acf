"""Preprocessing transforms: inverse round trip and log|det J| against autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simcompare.density.transforms import AsinhStretch, BandScale, Chain, build_transform
from simcompare.errors import ConfigError


def _chain() -> Chain:
    return Chain([BandScale([0.5, 2.0], [0.1, -0.3]), AsinhStretch(3.0)]).double()


@pytest.mark.parametrize("make", [lambda: BandScale([0.5, 2.0]).double(),
                                  lambda: AsinhStretch(0.7).double(), _chain])
def test_log_det_matches_autograd(make) -> None:
    t = make()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64) * 10
    for i in range(3):
        jac = torch.autograd.functional.jacobian(
            lambda v: t(v.view(1, 2, 3, 3)).flatten(), x[i].flatten())
        expected = torch.linalg.slogdet(jac)[1]
        assert torch.allclose(t.log_abs_det_jacobian(x[i:i + 1])[0], expected, atol=1e-10)


def test_inverse_round_trip_and_description() -> None:
    t = _chain()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64) * 100
    assert torch.allclose(t.inverse(t(x)), x, rtol=1e-10, atol=1e-9)
    rebuilt = build_transform(t.describe()).double()
    assert torch.allclose(rebuilt(x), t(x))
    # asinh is linear near zero and compresses bright pixels
    a = AsinhStretch(10.0)
    assert float(a(torch.tensor([0.1]))) == pytest.approx(0.1, rel=1e-4)
    assert float(a(torch.tensor([1000.0]))) < 60


def test_bad_parameters_raise() -> None:
    with pytest.raises(ConfigError, match="positive"):
        BandScale([1.0, -1.0])
    with pytest.raises(ConfigError, match="softening"):
        AsinhStretch(0.0)
    with pytest.raises(ConfigError, match="unknown preprocessing"):
        build_transform({"kind": "logit"})
    assert np.isfinite(BandScale([1.0]).describe()["scale"][0])
