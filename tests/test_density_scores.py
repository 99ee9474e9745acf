"""Local log-likelihood terms: per-level maps sum to log p; footprint and per-level ratios."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simcompare.density import DensityModel
from simcompare.density.scores import (
    footprint_mask,
    local_scores,
    orient,
    peak_of_map,
    pool_mask,
    ratio_map,
    unorient,
)
from simcompare.errors import ConfigError


def _model(bands: int = 2, size: int = 16, levels: int = 2, seed: int = 0) -> DensityModel:
    torch.manual_seed(seed)
    m = DensityModel(bands=bands, size=size, levels=levels, blocks=2, hidden=8,
                     noise_sigma=[0.7 + b for b in range(bands)], asinh_softening=3.0)
    m.initialize(torch.randn(32, bands, size, size) * 3 + 1)
    with torch.no_grad():
        for p in m.flow.parameters():  # every layer does real work, bases included
            p.add_(0.1 * torch.randn_like(p))
    m.eval()
    return m


@pytest.mark.parametrize(("bands", "levels", "channels_last"),
                         [(2, 2, True), (1, 3, False), (3, 2, False)])
def test_level_maps_sum_to_log_prob(bands: int, levels: int, channels_last: bool) -> None:
    m = _model(bands=bands, levels=levels)
    x = torch.randn(7, bands, 16, 16) * 4 + 1
    f = m.freeze(channels_last=channels_last)
    maps, pre = f.level_maps(x)
    assert [tuple(t.shape) for t in maps] == [(7, 16 // 2 ** (k + 1), 16 // 2 ** (k + 1))
                                              for k in range(levels)]
    total = sum(t.double().sum((1, 2)) for t in maps) + pre.double()
    with torch.no_grad():
        ref = m.log_prob(x).double()
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-2)
    # scoring in concurrent shards gives the same maps
    sharded, pre_s = m.freeze(channels_last=channels_last, shards=3).level_maps(x)
    for a, b in zip(maps, sharded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(pre, pre_s)
    # the terms are local: a change in one corner moves only the maps near that corner
    x2 = x.clone()
    x2[:, :, :2, :2] += 5.0
    maps2, _ = f.level_maps(x2)
    fine = (maps2[0] - maps[0]).abs()
    assert float(fine[:, :2, :2].sum()) > 0
    assert float(fine[:, 5:, 5:].max()) == 0.0   # beyond the couplings' receptive field


def test_local_scores_split_the_ratio() -> None:
    main, back = _model(seed=1).freeze(), _model(seed=2).freeze()
    x = (torch.randn(6, 2, 16, 16) * 3).numpy()
    everything = np.ones((6, 16, 16), bool)
    s = local_scores(main, back, x, footprint=everything)
    with torch.no_grad():
        lp = main.log_prob(torch.from_numpy(x)).double().numpy()
        lpb = back.log_prob(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(s["log_p"], lp, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(s["llr"], lp - lpb, rtol=1e-5, atol=2e-2)
    # same preprocessing (same sigma and softening) -> the levels add up to the ratio
    np.testing.assert_allclose(s["llr_level0"] + s["llr_level1"], s["llr"], atol=2e-2)
    np.testing.assert_allclose(s["llr_footprint"], s["llr"], atol=2e-2)
    nothing = np.zeros((6, 16, 16), bool)
    s0 = local_scores(main, back, x, footprint=nothing)
    np.testing.assert_allclose(s0["llr_footprint"], 0.0, atol=1e-6)
    half = np.zeros((6, 16, 16), bool)
    half[:, :8] = True
    s1 = local_scores(main, back, x, footprint=half)
    rest = local_scores(main, back, x, footprint=~half)
    np.testing.assert_allclose(s1["llr_footprint"] + rest["llr_footprint"], s["llr"], atol=2e-2)
    with pytest.raises(ConfigError, match="levels or stamp sizes"):
        local_scores(main, _model(levels=3).freeze(), x, footprint=None)
    # the finest-grid map holds every level and sums to the levels' ratio
    assert s["llr_map"].shape == (6, 8, 8)
    np.testing.assert_allclose(s["llr_map"].sum((1, 2)), s["llr_level0"] + s["llr_level1"], rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(s["llr_peak"], peak_of_map(s["llr_map"]))


def test_orient_and_unorient_are_the_eight_symmetries_of_the_square() -> None:
    a = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    seen = set()
    for j in range(8):
        b = orient(a, j)
        np.testing.assert_array_equal(unorient(b, j), a)
        seen.add(b.tobytes())
    assert len(seen) == 8                      # all eight different
    np.testing.assert_array_equal(orient(a, 0), a)
    np.testing.assert_array_equal(orient(a, 1), np.rot90(a, 1, axes=(-2, -1)))
    np.testing.assert_array_equal(orient(a, 4), a[..., ::-1])


@pytest.mark.parametrize("n", [4, 8])
def test_scores_averaged_over_orientations_do_not_depend_on_how_the_image_lies(n: int) -> None:
    """A flow is not exactly rotation invariant; the orientation average is, map and all."""
    main, back = _model(seed=1).freeze(), _model(seed=2).freeze()
    x = (torch.randn(5, 2, 16, 16) * 3).numpy()
    turned = np.ascontiguousarray(np.rot90(x, 1, axes=(-2, -1)))
    mirrored = np.ascontiguousarray(x[..., ::-1])
    one = local_scores(main, back, x, footprint=None)
    one_t = local_scores(main, back, turned, footprint=None)
    # one orientation: the model's own error under a quarter turn is there to average out
    assert np.abs(one["llr"] - one_t["llr"]).max() > 1e-2
    s = local_scores(main, back, x, footprint=None, orientations=n)
    s_t = local_scores(main, back, turned, footprint=None, orientations=n)
    for key in ("log_p", "llr", "llr_level0", "llr_level1", "llr_peak"):
        np.testing.assert_allclose(s_t[key], s[key], rtol=1e-5, atol=2e-3)
    # the maps stay on the image's grid: the turned image's map is the turned map
    np.testing.assert_allclose(s_t["llr_map"], np.rot90(s["llr_map"], 1, axes=(-2, -1)),
                               rtol=1e-5, atol=2e-3)
    s_m = local_scores(main, back, mirrored, footprint=None, orientations=n)
    if n == 8:
        np.testing.assert_allclose(s_m["llr"], s["llr"], rtol=1e-5, atol=2e-3)
    else:  # quarter turns only: a mirror image is another set of four
        assert np.abs(s_m["llr"] - s["llr"]).max() > 1e-3
    # and the average is the mean of the orientations' own scores
    each = [local_scores(main, back, np.ascontiguousarray(orient(x, j)), footprint=None)["llr"]
            for j in range(n)]
    np.testing.assert_allclose(s["llr"], np.mean(each, axis=0), rtol=1e-6, atol=1e-3)
    with pytest.raises(ConfigError, match="orientations"):
        local_scores(main, back, x, footprint=None, orientations=3)


def test_peak_of_the_finest_grid_finds_a_small_excess() -> None:
    rng = np.random.default_rng(3)
    fine = rng.normal(0.0, 0.1, (4, 8, 8))
    coarse = rng.normal(0.0, 0.1, (4, 4, 4))
    fine[0, 5, 2] += 10.0                     # one finest cell of image 0
    coarse[1, 1, 3] += 10.0                   # one coarse cell (four finest) of image 1
    m = ratio_map([fine, coarse])
    assert m.shape == (4, 8, 8)
    np.testing.assert_allclose(m.sum((1, 2)), fine.sum((1, 2)) + coarse.sum((1, 2)))
    np.testing.assert_allclose(m[1, 2:4, 6:8], coarse[1, 1, 3] / 4 + fine[1, 2:4, 6:8])
    peak = peak_of_map(m, fraction=1 / 64)    # the single largest cell
    assert peak[0] == pytest.approx(m[0].max()) and peak[0] > 9.0
    assert 2.0 < peak[1] < 3.0                # a coarse excess counts a quarter per finest cell
    assert (peak[2:] < 1.0).all()
    assert peak_of_map(m, fraction=1.0) == pytest.approx(m.sum((1, 2)))


def test_footprint_mask_finds_the_central_galaxy() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    gal = 30 * np.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / (2 * 2.5**2))
    other = 30 * np.exp(-((yy - 3) ** 2 + (xx - 28) ** 2) / (2 * 1.0**2))
    x = (gal + other + rng.normal(0, 1, (2, 1, 32, 32))).astype(np.float32)
    x[1] = rng.normal(0, 1, (1, 32, 32))          # blank sky: central disc fallback
    fp = footprint_mask(x, sigma=[1.0])
    assert fp[0, 16, 16] and not fp[0, 3, 28] and not fp[0, 0, 0]
    assert 50 < fp[0].sum() < 400
    assert fp[1, 16, 16] and fp[1].sum() < 60
    pooled = pool_mask(fp, 8)
    assert pooled.shape == (2, 8, 8) and pooled[0, 4, 4]
    with pytest.raises(ConfigError, match="pooled"):
        pool_mask(fp, 5)
