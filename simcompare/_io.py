"""Atomic file writes (a temporary file in the same folder, renamed into place), and the table reader.

A crash or Ctrl+C never leaves a partly written output; the temporary file is removed.
:func:`load_table` reads the Parquet/CSV score and morphology tables the statistics take.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path", "check_output_dir", "check_output_file", "load_table", "write_json_atomic",
    "write_parquet_atomic", "write_text_atomic",
]


def _make_parent(path: Path) -> None:
    """Create the folder that will hold ``path``; a typed error names what is in the way."""
    from .errors import ConfigError

    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                msg = f"cannot write {path}: {parent} is a file, not a folder; choose another --out"
                raise ConfigError(msg)
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}; choose a writable --out"
        raise ConfigError(msg) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        msg = f"cannot write {path}: permission denied in {path.parent}; choose a writable --out"
        raise ConfigError(msg)


def check_output_file(path: str | os.PathLike) -> Path:
    """Check that a file can be written at ``path`` (its folder is created) before any work.

    Raises
    ------
    ConfigError
        When ``path`` is an existing directory, a parent is a file, or the folder is not
        writable; the message names the path and says to choose another ``--out``.
    """
    from .errors import ConfigError

    path = Path(path)
    if path.is_dir():
        msg = (f"cannot write {path}: it is an existing directory; give a file path as --out "
               "(or remove the directory)")
        raise ConfigError(msg)
    _make_parent(path)
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path``; a typed error when a file is in the way or it is not writable."""
    from .errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        msg = f"cannot write {path}: it is a file, not a folder; give a folder path as --out"
        raise ConfigError(msg)
    _make_parent(path)
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}; choose a writable --out"
        raise ConfigError(msg) from None
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Raises
    ------
    ConfigError
        When ``path`` cannot be written (see :func:`check_output_file`).
    """
    path = check_output_file(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    r"""Write UTF-8 text (with ``\n`` line ends) to ``path`` atomically.

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


def read_csv_or_parquet(path: Path, *, what: str):
    """A :class:`pandas.DataFrame` from a user's table file: Parquet by suffix, else CSV.

    Parameters
    ----------
    path : Path
        An existing file; ``.parquet`` / ``.pq`` are read as Parquet, anything else as CSV.
    what : str
        What the file is ("catalogue", "manifest"), for the error message.

    Raises
    ------
    DataFormatError
        The file cannot be read as that format.
    """
    import pandas as pd

    from .errors import DataFormatError

    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # pandas and pyarrow raise many unrelated types
        msg = f"{path}: cannot read the {what} ({type(exc).__name__}: {exc}); it must be CSV or Parquet"
        raise DataFormatError(msg) from None


def load_table(table: Any, *, what: str = "table"):
    """Return a :class:`pandas.DataFrame` from a DataFrame or a Parquet/CSV path.

    Parameters
    ----------
    table : DataFrame or path-like
        The table itself, or a ``.parquet`` / ``.csv`` file.
    what : str
        Name used in error messages.
    """
    import pandas as pd

    from .errors import DataFormatError, DataNotFoundError

    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.exists():
        msg = f"{what} {path} does not exist; create it with 'simcompare evaluate' or pass a DataFrame"
        raise DataNotFoundError(msg)
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        msg = f"{what} {path} is not a readable Parquet/CSV table ({exc}); regenerate it"
        raise DataFormatError(msg) from None
