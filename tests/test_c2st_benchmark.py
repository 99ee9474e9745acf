"""The classifier benchmark's particle galaxies are its galsim galaxies, made of particles.

``benchmarks/c2st.py`` scores the same population rendered from star particles (the
package's k-NN smoothing and sub-pixel light map) against the galsim sample. That case
only measures the render path if, particle noise aside, both draw the same galaxy: same
centre, orientation, shear, clumps and flux.
"""

from __future__ import annotations

import numpy as np
from _benchmarks import benchmark


def test_particle_galaxies_converge_to_the_galsim_drawings():
    bench = benchmark("c2st")
    drawn, params = bench.population(3, rng=np.random.default_rng(5), noise=False)
    errors = {}
    for n_part in (10_000, 200_000):
        parts = bench.particle_population(3, rng=np.random.default_rng(1), n_part=n_part,
                                          noise=False, params=params)
        for k in range(3):
            g, p = drawn[k, 0], parts[k, 0]
            if n_part == 200_000:  # at 10,000 shot noise may move the peak by a pixel
                assert np.unravel_index(p.argmax(), p.shape) == np.unravel_index(g.argmax(), g.shape)
            assert abs(p.sum() / g.sum() - 1) < 0.01
            errors.setdefault(n_part, []).append(np.abs(p - g).sum() / g.sum())
    # the particles' shot noise falls as sqrt(N): 20x the particles, ~4.5x less L1 error
    assert max(errors[200_000]) < 0.01
    assert np.mean(errors[200_000]) < np.mean(errors[10_000]) / 2.5


def test_particle_stamps_carry_the_survey_sky_noise():
    bench = benchmark("c2st")
    stamps = bench.particle_population(2, rng=np.random.default_rng(0), n_part=2000)
    corner = stamps[:, 0, :6, :6]
    assert stamps.shape == (2, 1, bench.STAMP, bench.STAMP)
    assert 0.7 * bench.SKY_SIGMA_I < corner.std() < 1.3 * bench.SKY_SIGMA_I
