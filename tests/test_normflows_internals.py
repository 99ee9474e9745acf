"""The normflows internals that ``simcompare.density.frozen`` reads, checked one by one.

The frozen scoring copy rebuilds a trained Glow from normflows' private attributes and
re-implements its conventions (channel order of the coupling output, ``sigmoid(a + 2)``,
the squeeze pixel order, ActNorm and LU-factored 1x1 convolutions). That is why
pyproject pins ``normflows==1.7.3``. When a normflows release moves any of these, this
test names what moved, so that the pin is lifted only together with an update of
``density/frozen.py``.
"""

from __future__ import annotations

import normflows as nf
import pytest
import torch
import torch.nn.functional as F

from simcompare.density.model import build_glow

PIN = "normflows==1.7.3"


def _moved(what: str) -> str:
    return (f"normflows {nf.__version__}: {what}; density/frozen.py reads this internal "
            f"({PIN} is what it was written against): update frozen.py before the pin")


def _has(obj: object, names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    assert not missing, _moved(f"{where} lacks {missing}")


def test_the_pinned_version_is_installed():
    assert nf.__version__ == PIN.split("==")[1], _moved("a different version is installed")


def test_multiscale_glow_layout_that_frozen_walks():
    torch.manual_seed(0)
    flow = build_glow(3, 8, levels=2, blocks=1, hidden=8)
    _has(flow, ("q0", "flows", "merges"), "MultiscaleFlow")
    assert getattr(flow, "transform", None) is None and not getattr(flow, "class_cond", False), \
        _moved("MultiscaleFlow grew a transform or class conditioning by default")
    assert len(flow.q0) == len(flow.flows) == 2 and len(flow.merges) == 1, _moved("level lists")
    for level in flow.flows:
        kinds = {type(layer) for layer in level}
        assert kinds <= {nf.flows.Squeeze, nf.flows.GlowBlock}, _moved(f"level layers {kinds}")
    _has(flow.merges[0], ("mode",), "Merge")
    block = next(layer for layer in flow.flows[0] if isinstance(layer, nf.flows.GlowBlock))
    coupling_block, *rest = list(block.flows)
    assert {type(f) for f in rest} <= {nf.flows.Invertible1x1Conv, nf.flows.ActNorm}, \
        _moved("GlowBlock.flows is no longer [coupling, 1x1 conv, ActNorm]")
    split, coupling, merge = list(coupling_block.flows)
    _has(split, ("mode",), "Split")
    _has(merge, ("mode",), "Merge")
    _has(coupling, ("scale", "scale_map", "param_map"), "AffineCoupling")
    _has(coupling.param_map, ("net",), "ConvNet2d")
    an = next(f for f in rest if isinstance(f, nf.flows.ActNorm))
    _has(an, ("s", "t"), "ActNorm")
    conv = next(f for f in rest if isinstance(f, nf.flows.Invertible1x1Conv))
    _has(conv, ("use_lu", "P", "L", "U", "sign_S", "log_S"), "Invertible1x1Conv(use_lu=True)")
    for q in flow.q0:
        assert type(q) is nf.distributions.DiagGaussian, _moved(f"base {type(q).__name__}")
        _has(q, ("loc", "log_scale", "temperature", "d"), "DiagGaussian")


def test_affine_coupling_sigmoid_convention():
    torch.manual_seed(1)
    net = torch.nn.Conv2d(2, 4, 1)
    coupling = nf.flows.AffineCoupling(net, scale=True, scale_map="sigmoid")
    z1, z2 = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    (out1, out2), log_det = coupling.inverse([z1, z2])
    with torch.no_grad():
        p = net(z1)
        shift, a = p[:, 0::2], p[:, 1::2]  # even channels shift, odd channels scale
        want = (z2 - shift) * torch.sigmoid(a + 2)
        want_ld = F.logsigmoid(a + 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out1, z1, msg=_moved("AffineCoupling.inverse changes z1"))
    torch.testing.assert_close(out2, want, msg=_moved("AffineCoupling.inverse is not "
                                                      "(z2 - p[0::2]) * sigmoid(p[1::2] + 2)"))
    torch.testing.assert_close(log_det, want_ld, msg=_moved("AffineCoupling log-determinant"))


def test_squeeze_inverse_is_pixel_unshuffle():
    z = torch.randn(2, 3, 8, 8)
    out, _ = nf.flows.Squeeze().inverse(z)
    torch.testing.assert_close(out, F.pixel_unshuffle(z, 2),
                               msg=_moved("Squeeze.inverse no longer orders pixels as pixel_unshuffle"))


def test_actnorm_and_lu_conv_inverse_conventions():
    torch.manual_seed(2)
    an = nf.flows.ActNorm((3, 1, 1))
    with torch.no_grad():
        an.s.copy_(torch.randn_like(an.s))
        an.t.copy_(torch.randn_like(an.t))
    an.data_dep_init_done = torch.tensor(1.0)
    z = torch.randn(2, 3, 4, 4)
    out, _ = an.inverse(z)
    torch.testing.assert_close(out, (z - an.t) * torch.exp(-an.s),
                               msg=_moved("ActNorm.inverse is not (z - t) * exp(-s)"))
    conv = nf.flows.Invertible1x1Conv(3, use_lu=True)
    with torch.no_grad():
        for prm in conv.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
        eye = torch.eye(3)
        lower = torch.tril(conv.L, diagonal=-1) + eye
        upper = torch.triu(conv.U, diagonal=1) + torch.diag(conv.sign_S * torch.exp(conv.log_S))
        w = conv.P @ lower @ upper
        out, log_det = conv.inverse(z)
    torch.testing.assert_close(out, F.conv2d(z, w.reshape(3, 3, 1, 1)), rtol=1e-5, atol=1e-5,
                               msg=_moved("Invertible1x1Conv.inverse is not conv with P L U"))
    ld = float(torch.as_tensor(log_det).detach().reshape(-1)[0])
    assert ld == pytest.approx(float(conv.log_S.detach().sum()) * 16, rel=1e-5), \
        _moved("Invertible1x1Conv log-determinant")
