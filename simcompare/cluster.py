"""Where the heavy stages run: in this process, or on one dask.distributed cluster.

Every stage that works through many galaxies (render, ingest, morphology, evaluate) hands
its work to a :class:`Cluster` as a list of batches and gets the batch results back in
submission order, with a bounded number in flight. ``score`` opens one cluster for the
whole chain, so all stages share its workers:

* ``Cluster()`` (the default, ``workers=1``): each batch runs in this process;
* ``Cluster(workers=N)``: a ``distributed.LocalCluster`` of N single-threaded worker
  processes, started on the first batch and closed with the cluster
  (``Cluster(workers=1, in_process=False)`` starts one such worker: the same machinery
  as N, which is what a strong-scaling measurement compares);
* ``Cluster(scheduler="tcp://host:8786")``: an existing scheduler (for example one
  started by dask-jobqueue on a SLURM allocation, see the README); ``workers`` is then
  ignored and the scheduler's workers are used.

The local workers run one thread each and allocate memory as this process does: dask's
default ``MALLOC_TRIM_THRESHOLD_=65536`` for the worker processes is not applied, because
it fixes glibc's mmap threshold at 128 KiB, so that every stamp-sized array is mapped and
unmapped afresh (page faults); the stages ran up to 3x slower in a worker than in this
process with it. Workers of a running scheduler keep whatever environment they were
started with (see the README).

Results are collected by this process and written by the stage itself, so the stage's
own resumable output (``<out>.part`` files) decides what is left to do after a killed
client; a killed *worker* loses only its tasks in flight, which the scheduler reruns on
another worker (``distributed.scheduler.allowed-failures`` times, then the stage fails with
:class:`~simcompare.errors.SimcompareError` naming the batch). Batch functions must be
deterministic in their inputs (seeds per galaxy, never per worker), so a rerun task gives
the same answer.

Examples
--------
>>> from simcompare.cluster import Cluster
>>> with Cluster() as cluster:
...     list(cluster.map(sum, [[1, 2], [3, 4]], name="doc"))
[3, 7]
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .errors import ConfigError, SimcompareError

__all__ = ["Cluster", "as_cluster"]

log = logging.getLogger(__name__)

_COUNTER = itertools.count()


class Cluster:
    """A pool of workers shared by the stages of a run.

    Parameters
    ----------
    workers : int
        Local worker processes; 1 runs every batch in this process.
    scheduler : str or distributed.Client, optional
        Address of a running dask scheduler (or a connected client); overrides
        ``workers``.
    connect_timeout : str
        How long to keep trying to reach ``scheduler`` (a dask time string).
    in_process : bool, optional
        Whether the batches run in this process. Default: when ``workers`` is 1 and no
        ``scheduler`` is given. ``False`` with one worker starts a local dask cluster of
        one worker process (the same machinery as several workers); ``True`` needs
        ``workers=1`` and no scheduler.
    """

    def __init__(self, workers: int = 1, scheduler: Any = None, *,
                 connect_timeout: str = "30s", in_process: bool | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            msg = f"workers must be a whole number of at least 1, got {workers!r}"
            raise ConfigError(msg)
        if in_process and (workers > 1 or scheduler is not None):
            msg = "in_process=True runs one worker in this process: use workers=1 and no scheduler"
            raise ConfigError(msg)
        self.workers = workers
        self.in_process = in_process
        self.scheduler = scheduler
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._local: Any = None
        self._own_client = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def distributed(self) -> bool:
        """True when batches run on dask workers rather than in this process."""
        if self.in_process is not None:
            return not self.in_process
        return self.scheduler is not None or self.workers > 1

    @property
    def client(self) -> Any:
        """The dask client, started on first use (None when running in this process)."""
        if not self.distributed:
            return None
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - dask is a core dependency
            msg = "running on several workers needs dask.distributed: pip install 'dask[distributed]'"
            raise ConfigError(msg) from exc
        if self.scheduler is not None:
            if isinstance(self.scheduler, Client):
                return self.scheduler
            try:
                client = Client(self.scheduler, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                msg = (f"cannot reach the dask scheduler at {self.scheduler!r} ({exc}); start it "
                       "(dask scheduler) or check --scheduler")
                raise ConfigError(msg) from exc
            self._own_client = True
            return client
        import dask

        # dask's pre-spawn environment pins every BLAS/OpenMP pool to one thread (kept: one
        # core per worker) and sets MALLOC_TRIM_THRESHOLD_ (dropped: see the module notes);
        # each nanny reads it once, here (a worker it restarts gets the same environment)
        # The nannies write that environment into this process's os.environ too, where it
        # stayed: torch, imported later, then started one thread, and training in the
        # calling process ran on one core (the demo's epochs 4.2 s instead of 2.7 s). The
        # calling process gets its own environment back.
        saved = dict(os.environ)
        try:
            with dask.config.set(
                    {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self._local = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                           processes=True, dashboard_address=":0",
                                           silence_logs=logging.ERROR)
        finally:
            _restore_environ(saved)
        self._own_client = True
        log.info("started a local dask cluster of %d workers", self.workers)
        return Client(self._local)

    @property
    def n_workers(self) -> int:
        """Workers that run batches (1 in this process)."""
        if not self.distributed:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def worker_pids(self) -> list[int]:
        """Process ids of the dask workers (empty when running in this process)."""
        if not self.distributed:
            return []
        import os

        return sorted(self.client.run(os.getpid).values())

    def gpu_workers(self) -> int:
        """How many workers see a CUDA device (0 in this process without one)."""
        if not self.distributed:
            return int(_cuda_available())
        return sum(bool(v) for v in self.client.run(_cuda_available).values())

    def close(self) -> None:
        """Close the client and the local cluster this object started."""
        if self._own_client and self._client is not None:
            self._client.close()
        if self._local is not None:
            self._local.close()
        self._client = self._local = None
        self._own_client = False

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = (f"scheduler={self.scheduler!r}" if self.scheduler is not None
                 else f"workers={self.workers}")
        if self.in_process is not None:
            where += f", in_process={self.in_process}"
        return f"Cluster({where})"

    # ------------------------------------------------------------------ work
    def map(self, fn: Callable[..., Any], batches: Sequence[Any], *args: Any, name: str,
            window: int | None = None) -> Iterator[Any]:
        """Yield ``fn(batch, *args)`` for every batch, in the order of ``batches``.

        Parameters
        ----------
        fn : callable
            A module-level function (it is pickled to the workers).
        batches : sequence
            One item per task.
        *args
            Shared arguments; sent to every worker once per call.
        name : str
            Stage name, used in task keys and error messages.
        window : int, optional
            Tasks in flight at once; default two per worker plus two.
        """
        if not batches:
            return iter(())
        if not self.distributed:
            return (fn(b, *args) for b in batches)
        return self._map_dask(fn, batches, args, name=name, window=window)

    def _map_dask(self, fn: Callable[..., Any], batches: Sequence[Any], args: tuple, *,
                  name: str, window: int | None) -> Iterator[Any]:
        from distributed import KilledWorker

        client = self.client
        window = window or 2 * self.n_workers + 2
        shared = client.scatter(list(args), broadcast=True) if args else []
        token = hashlib.sha256(f"{name}-{next(_COUNTER)}-{id(self)}".encode()).hexdigest()[:10]
        pending: deque = deque()
        it = iter(enumerate(batches))

        def submit(i: int, batch: Any) -> Any:
            return client.submit(fn, batch, *shared, key=f"simcompare-{name}-{token}-{i}",
                                 pure=False)

        try:
            for i, batch in it:
                pending.append((i, submit(i, batch)))
                if len(pending) >= window:
                    break
            while pending:
                i, fut = pending.popleft()
                try:
                    res = fut.result()
                except KilledWorker as exc:
                    msg = (f"{name}: batch {i} killed its workers repeatedly ({exc}); the "
                           "results so far are kept, rerun to resume")
                    raise SimcompareError(msg) from exc
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], submit(*nxt)))
                yield res
        finally:
            for _, fut in pending:
                fut.cancel()


def as_cluster(cluster: Cluster | None, *, workers: int = 1, scheduler: Any = None) -> tuple[Cluster, bool]:
    """The cluster to use and whether the caller owns it (and so must close it).

    Parameters
    ----------
    cluster : Cluster or None
        A cluster the caller was given (returned as is, not owned).
    workers : int
        Workers of a new cluster when ``cluster`` is None.
    scheduler : str or distributed.Client, optional
        Scheduler of a new cluster when ``cluster`` is None.

    Returns
    -------
    (Cluster, bool)
        The cluster and whether the caller must close it.
    """
    if cluster is not None:
        return cluster, False
    return Cluster(workers=workers, scheduler=scheduler), True


def batched(items: Iterable[Any], size: int) -> list[list[Any]]:
    """``items`` cut into lists of at most ``size``."""
    items = list(items)
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def _restore_environ(saved: dict[str, str]) -> None:
    """Put ``os.environ`` back to ``saved`` (keys added since removed, changed ones reset)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
