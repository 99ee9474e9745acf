"""Simulation readers: star particles in physical units, one galaxy at a time."""

from __future__ import annotations

from .base import Galaxy, StarParticles

__all__ = ["Galaxy", "StarParticles"]
