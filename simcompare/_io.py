"""Atomic file writes: a temporary file in the same folder, renamed into place.

A crash or Ctrl+C never leaves a partly written output; the temporary file is removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json_atomic", "write_parquet_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 text (with ``\\n`` line ends) to ``path`` atomically.

    ``fsync=True`` also flushes the file to disk before the rename.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Mapping[str, Any], *, indent: int = 1,
                      fsync: bool = False) -> Path:
    """Write ``data`` as sorted, indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(dict(data), indent=indent, sort_keys=True, default=str),
                             fsync=fsync)


def write_parquet_atomic(df: Any, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to Parquet atomically (no index)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)
