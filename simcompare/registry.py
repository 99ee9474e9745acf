"""Find simulation and survey descriptors by name.

The workspace's own ``sims/`` and ``observed/`` folders are searched first, then the
descriptors that ship with simcompare. A user adds a simulation or survey by dropping a
TOML file into the workspace.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .config import SimDescriptor, SurveyDescriptor, load_sim_descriptor, load_survey_descriptor
from .errors import ConfigError

__all__ = ["as_sim", "as_survey", "builtin_dir", "find_sim", "find_survey", "list_sims", "list_surveys"]


def builtin_dir(kind: str) -> Path:
    """Folder of the built-in descriptors of ``kind`` (``"sims"`` or ``"observed"``).

    In an installed wheel they live in ``simcompare/descriptors/<kind>``; in a source
    checkout, in ``<repo>/<kind>``.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "descriptors" / kind
    if packaged.is_dir():
        return packaged
    return here.parent / kind


def _candidates(kind: str, workspace: str | Path | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    folders = [builtin_dir(kind)]
    if workspace is not None:
        folders.append(Path(workspace) / kind)
    for folder in folders:  # later folders (the workspace) win
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return found


def _find(kind: str, what: str, name: str, workspace: str | Path | None) -> Path:
    cands = _candidates(kind, workspace)
    if name in cands:
        return cands[name]
    close = difflib.get_close_matches(name, list(cands), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    msg = (f"unknown {what} {name!r}{hint} Known: {', '.join(sorted(cands)) or 'none'}. "
           f"Add {kind}/{name}.toml to the workspace to define it.")
    raise ConfigError(msg)


def find_sim(name: str, *, workspace: str | Path | None = ".") -> SimDescriptor:
    """Load the simulation descriptor called ``name``."""
    return load_sim_descriptor(_find("sims", "simulation", name, workspace))


def find_survey(name: str, *, workspace: str | Path | None = ".") -> SurveyDescriptor:
    """Load the survey descriptor called ``name``."""
    return load_survey_descriptor(_find("observed", "survey", name, workspace))


def as_sim(sim: SimDescriptor | str, *, workspace: str | Path | None = ".") -> SimDescriptor:
    """``sim`` itself when it is a descriptor, else the descriptor of that name (:func:`find_sim`)."""
    return sim if isinstance(sim, SimDescriptor) else find_sim(str(sim), workspace=workspace)


def as_survey(survey: SurveyDescriptor | str, *, workspace: str | Path | None = ".") -> SurveyDescriptor:
    """``survey`` itself when it is a descriptor, else the descriptor of that name (:func:`find_survey`)."""
    return (survey if isinstance(survey, SurveyDescriptor)
            else find_survey(str(survey), workspace=workspace))


def list_sims(*, workspace: str | Path | None = ".") -> dict[str, Path]:
    """Names and files of every simulation descriptor visible from ``workspace``."""
    return _candidates("sims", workspace)


def list_surveys(*, workspace: str | Path | None = ".") -> dict[str, Path]:
    """Names and files of every survey descriptor visible from ``workspace``."""
    return _candidates("observed", workspace)
