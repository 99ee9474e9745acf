"""A workspace lock: one ``simcompare score`` at a time writes a workspace's cache.

The lock is the file ``<workspace>/.simcompare/lock`` holding the holder's pid, host,
process start time and start date as JSON. It is created complete (written to a
temporary file, then hard-linked into place, which fails when the lock exists), so a
lock is never half written. A lock whose process is gone (same host, pid not running or
running with another start time) is stale: it is taken over, with a log line. A lock
held by a live process, or by another host, makes :func:`workspace_lock` raise
:class:`~simcompare.errors.WorkspaceBusyError`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import WorkspaceBusyError

__all__ = ["lock_path", "workspace_lock"]

log = logging.getLogger(__name__)


def lock_path(workspace: str | os.PathLike) -> Path:
    """The lock file of a workspace."""
    return Path(workspace) / ".simcompare" / "lock"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell from here; never steal another machine's lock
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if not _alive(pid):
        return False
    started = holder.get("process_start")
    return started is None or _start_time(pid) in (None, started)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def workspace_lock(workspace: str | os.PathLike, *, what: str = "score") -> Iterator[Path]:
    """Hold the workspace lock for the duration of the block.

    Raises
    ------
    WorkspaceBusyError
        Another live process holds the lock.
    """
    path = lock_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _start_time(os.getpid()),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": what}
    tmp = path.with_name(f".lock.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                holder = _read(path)
                if holder is None:
                    continue  # released meanwhile
                if holder and _holder_alive(holder):
                    msg = (f"workspace {Path(workspace)} is busy: simcompare {holder.get('command', '')} "
                           f"(pid {holder.get('pid')} on {holder.get('host')}, since "
                           f"{holder.get('since')}) holds {path}; wait for it to finish, use another "
                           "--workspace, or delete that file if no such process runs")
                    raise WorkspaceBusyError(msg) from None
                log.warning("taking over the stale workspace lock %s of pid %s on %s (that process "
                            "is gone)", path, holder.get("pid", "?"), holder.get("host", "?"))
                stale = path.with_name(f".lock.stale.{uuid.uuid4().hex[:8]}")
                try:
                    os.rename(path, stale)  # one taker wins the rename; others retry
                except FileNotFoundError:
                    continue
                if _read(stale) != holder:  # a fresh lock taken meanwhile: put it back
                    try:
                        os.link(stale, path)
                    except FileExistsError:
                        pass
                stale.unlink()
        else:
            msg = f"could not take the workspace lock {path}; run the command again"
            raise WorkspaceBusyError(msg)
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if (_read(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
