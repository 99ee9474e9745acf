"""ci/oldest.txt pins exactly the floors pyproject.toml declares (what `tox -e oldest` tests)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
# torch: the oldest environment uses the CPU wheel of the other environments (see tox.ini).
NOT_AT_FLOOR = {"torch"}
# Undeclared (transitive) pins of the oldest environment, each explained in ci/oldest.txt.
TRANSITIVE = {"pyparsing"}


def _declared() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    floors = {}
    for text in reqs:
        req = Requirement(text)
        lowest = [s.version for s in req.specifier if s.operator in (">=", "==")]
        assert len(lowest) == 1, f"pyproject.toml: {text!r} needs one floor (>=) or pin (==)"
        names = [req.name, *sorted(req.extras)]  # dask[distributed] installs distributed too
        for name in names:
            floors[name.lower()] = Version(lowest[0])
    return floors


def _pinned() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
            assert m, f"ci/oldest.txt: {line!r} is not a name==version pin"
            pins[m.group(1).lower()] = Version(m.group(2))
    return pins


def test_every_declared_floor_is_pinned_in_the_oldest_environment():
    floors, pins = _declared(), _pinned()
    assert not TRANSITIVE & set(floors), "a declared dependency is listed as transitive"
    pinned = set(pins) - TRANSITIVE
    assert pinned == set(floors), (f"only in pyproject: {sorted(set(floors) - pinned)}; "
                                   f"only in ci/oldest.txt: {sorted(pinned - set(floors))}")
    wrong = {n: (str(floors[n]), str(pins[n])) for n in floors
             if n not in NOT_AT_FLOOR and floors[n] != pins[n]}
    assert not wrong, f"floor in pyproject.toml vs pin in ci/oldest.txt: {wrong}"


def test_the_exception_still_satisfies_its_floor():
    floors, pins = _declared(), _pinned()
    for name in NOT_AT_FLOOR:
        assert pins[name] >= floors[name], name
