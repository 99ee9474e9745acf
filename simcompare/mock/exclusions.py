"""Why a simulated galaxy was left out of a render, and what the user can change."""

from __future__ import annotations

from ..config import SimDescriptor

__all__ = ["explain_exclusions"]


#: Why a galaxy was left out, and what the user can change, by exclusion reason.
_EXCLUSION_HELP = {
    "wind_only": ("only stellar wind cells (GFM_StellarFormationTime <= 0), no stars",
                  "select other subhalos ([selection] ids or min_stellar_mass_msun in {source})"),
    "no_star_particles": ("no star particles", "select other subhalos ([selection] in {source})"),
    "too_few_star_particles": ("too few star particles after dropping wind cells",
                               "lower [selection] min_star_particles in {source}"),
    "non_finite_particle_data": ("NaN/inf or unphysical star-particle data (Coordinates, Masses, "
                                 "GFM_StellarFormationTime, GFM_Metallicity)",
                                 "download the snapshot chunks again"),
    "larger_than_stamp": ("more light outside the stamp than allowed", "raise --stamp-size"),
    "no_flux_in_view": ("no flux inside the stamp", "check the observation redshift and --stamp-size"),
    "no_particles": ("no star particles", "select other subhalos ([selection] in {source})"),
    "invalid_particles": ("invalid particle data", "download the snapshot chunks again"),
    "render_error": ("a rendering error (logged above)", "run with -v and report the warning"),
}


def explain_exclusions(exclusions: dict[str, int], sim: SimDescriptor) -> str:
    """One sentence: every exclusion reason with its count and meaning, then what to change."""
    parts, fixes = [], []
    for reason, count in sorted(exclusions.items(), key=lambda kv: -kv[1]):
        key = reason.removeprefix("reader_")
        what, fix = _EXCLUSION_HELP.get(key, (key.replace("_", " "), "check the selection"))
        parts.append(f"{count} with {what}")
        fix = fix.format(source=sim.source or f"the descriptor of {sim.name}")
        if fix not in fixes:
            fixes.append(fix)
    if not parts:
        return "the selection returned no galaxy; loosen [selection] in the descriptor"
    return f"{'; '.join(parts)}; {' or '.join(fixes)}"
