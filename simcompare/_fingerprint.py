"""Fingerprints of the input files a pipeline stage reads; they enter its cache key.

A file's fingerprint is its size and a sha256 of its bytes: of the whole file when it is
small (at most :data:`FULL_HASH_MAX_BYTES`) or when the caller asks for it (catalogues,
manifests, descriptors), else of its first and last :data:`HEAD_BYTES` (the FITS and
HDF5 headers) together with its modification time. Hashes are remembered per workspace
in ``<workspace>/.simcompare/fingerprints.sqlite``, keyed by the file's path, size,
``st_mtime_ns``, ``st_ctime_ns`` and inode: an unchanged file is only ``stat``-ed again.
The change time is part of the memo key because a program (or a test) can restore a
file's size and modification time after editing it, but not its change time; the edited
file is then hashed again and its new content changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["FULL_HASH_MAX_BYTES", "HEAD_BYTES", "FingerprintMemo", "changed_names", "combined",
           "fingerprints"]

#: Files up to this size are hashed in full (bytes).
FULL_HASH_MAX_BYTES = 1 << 20
#: Bytes hashed at each end of a larger file.
HEAD_BYTES = 1 << 16

MISSING = "missing"


def _full_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _head_tail_sha(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            fh.seek(max(HEAD_BYTES, size - HEAD_BYTES))
            h.update(fh.read(HEAD_BYTES))
    return h.hexdigest()


class FingerprintMemo:
    """Per-file hashes remembered across runs (an SQLite file; ``None`` path: memory only).

    Parameters
    ----------
    path : path or None
        The memo file; created with its folder when missing.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self._rows: dict[str, tuple[int, int, int, int, str, str]] = {}
        self._new: dict[str, tuple[int, int, int, int, str, str]] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=60.0)
            self._db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                             "mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, mode TEXT, digest TEXT)")
            for row in self._db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, mode, digest "
                                        "FROM files"):
                self._rows[row[0]] = tuple(row[1:])  # type: ignore[assignment]

    def digest(self, path: str | os.PathLike, *, full: bool) -> str:
        """The fingerprint of one file (``"missing"`` when it does not exist)."""
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except OSError:
            return MISSING
        mode = "full" if full or st.st_size <= FULL_HASH_MAX_BYTES else "head"
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, mode)
        row = self._rows.get(key)
        if row is not None and row[:5] == stamp:
            return row[5]
        if mode == "full":
            digest = f"{st.st_size}:{_full_sha(Path(key))[:20]}"
        else:
            digest = f"{st.st_size}:{st.st_mtime_ns}:{_head_tail_sha(Path(key), st.st_size)[:20]}"
        self._rows[key] = self._new[key] = (*stamp, digest)
        return digest

    def save(self) -> None:
        """Write the hashes computed since the last save."""
        if self._db is None or not self._new:
            return
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 [(k, *v) for k, v in self._new.items()])
        self._new.clear()

    def close(self) -> None:
        """Save and close the memo file."""
        self.save()
        if self._db is not None:
            self._db.close()
            self._db = None


def fingerprints(
    files: Iterable[tuple[str | os.PathLike, bool]], *, memo: FingerprintMemo,
    workspace: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Fingerprints of ``(path, full)`` pairs, named by their path relative to ``workspace``.

    Parameters
    ----------
    files : iterable of (path, bool)
        Each file and whether to hash it in full whatever its size.
    memo : FingerprintMemo
    workspace : path, optional
        Files inside it are named relative to it (so that the names, not absolute paths,
        enter a cache key); others by their absolute path.

    Returns
    -------
    dict
        Name -> fingerprint, sorted by name.
    """
    prefixes = () if workspace is None else tuple(
        {os.path.join(os.path.abspath(workspace), ""), os.path.join(str(Path(workspace).resolve()), "")})
    out: dict[str, str] = {}
    for path, full in files:
        p = os.path.abspath(path)  # absolute, with ".." folded
        name = next((p[len(pre):] for pre in prefixes if p.startswith(pre)), p)
        out[Path(name).as_posix() if os.sep != "/" else name] = memo.digest(p, full=bool(full))
    return dict(sorted(out.items()))


def combined(prints: Mapping[str, str]) -> str:
    """One sha256 over a name -> fingerprint mapping (hex)."""
    h = hashlib.sha256()
    for name in sorted(prints):
        h.update(f"{name}\0{prints[name]}\n".encode())
    return h.hexdigest()


def changed_names(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Names whose fingerprint differs, including added and removed files (sorted)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
