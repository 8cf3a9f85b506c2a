"""Fixtures: the compose cluster, brought up once for every test that needs it.

Cluster tests are marked `cluster`. When the cluster cannot start they error
rather than skip, so a run that could not test the real thing fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.cluster import DockerCluster, SessionTransport
from sim.fleet import Fleet, load_fleet
from sim.paths import DEFAULT_FLEET
from sim.slurm import Slurm

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in item.fixturenames or "slurm" in item.fixturenames:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[DockerCluster]:
    """The default fleet's cluster; `down -v` at the end even if start-up failed.

    SIM_KEEP_CLUSTER=1 leaves it running afterwards, for a developer's next run.
    """
    control = DockerCluster()
    try:
        control.up(build=True)
        yield control
    finally:
        if os.environ.get("SIM_KEEP_CLUSTER") != "1":
            control.down(volumes=True)


@pytest.fixture(scope="session")
def slurm(cluster: DockerCluster) -> Slurm:
    return Slurm(SessionTransport(cluster))


@pytest.fixture(scope="session")
def default_fleet() -> Fleet:
    return load_fleet(DEFAULT_FLEET)
