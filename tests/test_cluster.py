"""The shared worker pool: ordered results, one cluster for several stages, killed workers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from simcompare.cluster import Cluster, batched
from simcompare.errors import ConfigError


def _slow_square(batch, delay):
    time.sleep(delay)
    return [x * x for x in batch]


def test_in_process_map_keeps_order_and_starts_nothing():
    with Cluster() as cluster:
        assert not cluster.distributed and cluster.client is None
        out = list(cluster.map(_slow_square, batched(range(7), 3), 0.0, name="t"))
    assert out == [[0, 1, 4], [9, 16, 25], [36]]
    assert cluster.worker_pids() == [] and cluster.n_workers == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(bad):
    with pytest.raises(ConfigError, match="workers"):
        Cluster(workers=bad)


def test_unreachable_scheduler_is_one_typed_error():
    with pytest.raises(ConfigError, match="scheduler"):
        Cluster(scheduler="tcp://127.0.0.1:9", connect_timeout="2s").client  # noqa: B018


def test_local_cluster_survives_a_killed_worker():
    batches = batched(range(40), 2)
    expected = [[x * x for x in b] for b in batches]
    with Cluster(workers=2) as cluster:
        assert cluster.distributed and cluster.n_workers == 2
        first = cluster.worker_pids()
        out = []
        for i, res in enumerate(cluster.map(_slow_square, batches, 0.05, name="kill")):
            out.append(res)
            if i == 2:  # tasks are in flight on both workers
                os.kill(first[0], signal.SIGKILL)
        assert out == expected
        # the nanny restarted the killed worker: the pool is whole again
        deadline = time.time() + 30
        while time.time() < deadline and cluster.n_workers < 2:
            time.sleep(0.2)
        assert cluster.n_workers == 2 and first[0] not in cluster.worker_pids()


def _worker_env():
    import torch

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), torch.get_num_threads()


def test_one_worker_process_on_request_single_threaded_without_malloc_trim(monkeypatch):
    # the parent's own setting would be inherited (dask's precedence); test without it
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with Cluster(workers=1, in_process=False) as cluster:
        assert cluster.distributed and cluster.n_workers == 1
        assert cluster.worker_pids() != [os.getpid()]
        assert list(cluster.map(_slow_square, batched(range(5), 2), 0.0, name="one")) == [
            [0, 1], [4, 9], [16]]
        # one thread per worker (one core each); glibc's own mmap threshold, as here
        assert list(cluster.client.run(_worker_env).values()) == [(None, 1)]


def test_a_local_cluster_leaves_the_calling_process_environment_alone(monkeypatch):
    """The workers get one thread each; the calling process keeps its own thread settings.

    dask's nannies wrote OMP_NUM_THREADS=1 (and the BLAS equivalents) into this process's
    environment, so torch, imported after the cluster started, trained on one core.
    """
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    with Cluster(workers=2) as cluster:
        assert list(cluster.map(_slow_square, batched(range(3), 2), 0.0, name="env")) == [
            [0, 1], [4]]
        assert dict(os.environ) == before
        assert {threads for _, threads in cluster.client.run(_worker_env).values()} == {1}


def test_in_process_needs_one_worker_and_no_scheduler():
    assert not Cluster(in_process=True).distributed
    with pytest.raises(ConfigError, match="in_process"):
        Cluster(workers=2, in_process=True)
    with pytest.raises(ConfigError, match="in_process"):
        Cluster(scheduler="tcp://127.0.0.1:9", in_process=True)
