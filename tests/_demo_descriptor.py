"""A tiny demo-simulation descriptor for tests that render through the real reader."""

from __future__ import annotations


def tiny_demo_toml(*, n_galaxies: int) -> str:
    """TOML text of a ``tinydemo`` simulation with ``n_galaxies`` galaxies."""
    return f"""
name = "tinydemo"
title = "tiny demo for tests"
reader = "demo"
snapshots = [78]
default_snapshot = 78
box_size_ckpc_h = 75000.0
softening_kpc = 0.5
observation_redshift = 0.3
[cosmology]
H0 = 67.74
Om0 = 0.3089
Ob0 = 0.0486
[selection]
min_stellar_mass_msun = 3.0e9
mass_definition = "total"
min_star_particles = 100
[demo]
n_galaxies = {n_galaxies}
seed = 5
min_log_mass = 9.5
max_log_mass = 10.3
snapshot = 78
redshift = 0.3
"""

