"""The closure benchmark's ceiling on the "larger" variant is the population's own.

``benchmarks/closure.py`` reports, beside the AUROCs, the largest AUROC any test can reach
between the "same" and the "larger" populations: the size scatter at fixed stellar mass
hides part of the 1.5x shift. The analytic value must be what the drawn populations give
when each galaxy's true size and mass are known.
"""

from __future__ import annotations

import numpy as np
from _benchmarks import benchmark


def test_larger_ceiling_is_the_auroc_of_the_true_sizes_at_fixed_mass():
    cp = benchmark("closure_population")
    from simcompare.stats.metrics import auroc

    n = 20000
    same = cp.draw_population(n, 1, variant="same")
    larger = cp.draw_population(n, 2, variant="larger")

    def residual(pop):  # log size about the population's size-mass relation
        return np.log10(pop["r_d"]) - 0.25 * (pop["logm"] - 10.0)

    measured = auroc(residual(same), residual(larger))  # P(larger size > same size)
    ceiling = cp.larger_ceiling_auroc()
    assert abs(measured - ceiling) < 0.01, (measured, ceiling)
    assert 0.88 < ceiling < 0.90  # 1.5x against 0.1 dex: no axis can reach 0.9 on this variant
