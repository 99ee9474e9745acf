"""Fail unless every package pinned in a constraints file is installed at that version.

Run by ``tox -e oldest`` before the tests, so that the suite is known to have run on the
oldest declared versions and not on whatever pip chose instead.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def main(path: str) -> int:
    """Check the pins of constraints file ``path``; 0 when all are installed, else 1."""
    wrong = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if not m:
            continue
        name, want = m.groups()
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: not installed (want {want})")
            continue
        if have.split("+", 1)[0] != want:
            wrong.append(f"{name}: {have} installed, {want} pinned")
    for w in wrong:
        print(f"{path}: {w}", file=sys.stderr)
    print(f"{path}: {'FAILED' if wrong else 'all pins installed'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
