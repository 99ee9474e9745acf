"""Known-answer tests: a density we can write down, and out-of-distribution images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from simcompare import imageset
from simcompare.density import evaluate, train

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset

TINY = {"levels": 2, "blocks": 2, "hidden": 16, "batch_size": 32, "device": "cpu", "epochs": 6}


def test_gaussian_noise_nll_approaches_truth(tmp_path) -> None:
    """Images of pure white noise of sigma 3 (flux units): log p is known exactly.

    -log p(x) = sum x^2 / (2 sigma^2) + D/2 log(2 pi sigma^2). With D = 64 each image's
    NLL has standard deviation sqrt(D/2) = 5.7 nats, so the mean over the 120 test
    images has a standard error of 0.52 nats = 0.008 nats/dim. The tolerance of
    0.03 nats/dim allows ~3.7 standard errors plus a small model error; a model that
    ignored the preprocessing Jacobian would be off by about log(3) = 1.1 nats/dim.
    """
    rng = np.random.default_rng(0)
    sigma, n = 3.0, 600
    imgs = (rng.standard_normal((n, 1, 8, 8)) * sigma).astype(np.float32)
    s = imageset.ImageSet(images=imgs, catalog={"object_id": np.arange(n, dtype=np.int64)},
                          kind="observed", survey="test", bands=("r",),
                          pixel_scale_arcsec=0.2, zero_point=27.0)
    path = imageset.write(tmp_path / "noise.h5", s)
    out = train(path, out=tmp_path / "m", background="none", **TINY)
    ref = evaluate(out, path, out=None, split="test", device="cpu")
    x = imgs[ref["object_id"].to_numpy()]
    d = 64
    true_nll = 0.5 * (x**2).sum((1, 2, 3)) / sigma**2 + d / 2 * np.log(2 * np.pi * sigma**2)
    model_nll = -ref["log_prob_nats"].to_numpy()
    assert abs(model_nll.mean() - true_nll.mean()) / d < 0.03
    # bits/dim in flux units, no 8-bit offset: true value is log2(sqrt(2 pi e) sigma)
    expected_bpd = 0.5 * np.log2(2 * np.pi * np.e * sigma**2)
    assert ref["bits_per_dim"].mean() == pytest.approx(expected_bpd, abs=0.05)


def test_doubled_noise_gets_lower_log_prob(tmp_path) -> None:
    """Doubled noise is caught by the raw likelihood; fresh observed-like images look typical.

    The likelihood *ratio* is built to cancel sky and noise (both flows see the same noise
    level), so its response to a noise-level error depends on the trained weights: with
    one initialisation the doubled-noise images scored lower, with another higher. A
    noise-level error is therefore asserted on the raw likelihood here and on the global
    axis (S/N) in the morphology tests, not on the ratio.
    """
    obs = galaxy_imageset(tmp_path / "obs.h5", n=400, size=16)
    out = train(obs, out=tmp_path / "m", background="sersic", **TINY)
    ref = evaluate(out, obs, out=None, split="test", device="cpu")
    noisy = evaluate(out, galaxy_imageset(tmp_path / "noisy.h5", n=80, size=16, seed=5,
                                          noise_scale=2.0), out=None, device="cpu")
    same = evaluate(out, galaxy_imageset(tmp_path / "same.h5", n=80, size=16, seed=7),
                    out=None, device="cpu")
    assert np.isfinite(ref["llr_nats"]).all()
    assert noisy["log_prob_nats"].max() < ref["log_prob_nats"].min()
    # fresh images from the observed distribution look typical
    assert 25 < same["percentile"].median() < 75
