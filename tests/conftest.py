"""Shared test fixtures: real-data folder, seeded torch, package logger reset, slow tests, HSC SPS table."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def worker_killing_cluster():
    """A :class:`simcompare.cluster.Cluster` that SIGKILLs one dask worker mid-stage.

    The first result of its first ``map`` comes back, then the first worker process is
    killed while the other tasks are in flight on both workers; ``killed`` lists its pid.
    A stage run on it must complete with the output of an undisturbed run.
    """
    import signal

    from simcompare.cluster import Cluster

    class KillsAWorker(Cluster):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.killed: list[int] = []

        def map(self, *args, **kwargs):
            for i, res in enumerate(super().map(*args, **kwargs)):
                if i == 0 and not self.killed:
                    pid = self.worker_pids()[0]
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                yield res

    return KillsAWorker


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real survey and simulation files (env SIMCOMPARE_TEST_DATA).

    Defaults to ``../shared/data`` beside the repository; tests that need it are
    skipped with a clear reason when it is absent.
    """
    path = Path(os.environ.get("SIMCOMPARE_TEST_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real test data folder not found at {path}; set SIMCOMPARE_TEST_DATA")
    return path


@pytest.fixture(autouse=True)
def _package_logger_reset():
    """Start every test with the ``simcompare`` logger as the package leaves it.

    ``simcompare.cli.main`` gives it a stderr handler and stops its propagation (so the
    command line prints each line once). Left in place, by a test or by a module or
    session fixture that runs the command line, that hides every later test's records
    from ``caplog``, which listens on the root logger.
    """
    logger = logging.getLogger("simcompare")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    yield


@pytest.fixture(autouse=True)
def _torch_seed():
    """Seed torch locally for every test without touching global state afterwards."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


#: Observation redshift of the mock-rendering tests' shared flux table.
Z_OBS = 0.3


@pytest.fixture(scope="session")
def hsc():
    """The built-in HSC survey descriptor."""
    from simcompare.registry import find_survey

    return find_survey("hsc", workspace=None)


@pytest.fixture(scope="session")
def table(hsc, tmp_path_factory):
    """HSC band-flux table at ``Z_OBS`` (built once per session; the SPS grid is slow to fold)."""
    from simcompare.config import Cosmology
    from simcompare.sps import BandFluxTable

    return BandFluxTable.build(filters=hsc.filters, redshift=Z_OBS, cosmology=Cosmology(),
                               zero_point=hsc.zero_point, cache_dir=tmp_path_factory.mktemp("sps"))
