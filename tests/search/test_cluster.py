"""A study on a real two-node Ray cluster (``ray start`` on loopback, token authentication),
with PostgreSQL storage; one node is stopped in the middle and its trials are retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.search.crash_helpers import finish, processes_titled, start, wait_for, write_spec
from tests.servers import RayCluster

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist", "edgetune_home")]


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    c = RayCluster()
    try:
        c.add_node(head=True, cpus=1)
        c.add_node(cpus=1)
        yield c
    finally:
        c.stop()


def test_a_stopped_node_loses_no_trial(
    tmp_path: Path, postgres_url: str, cluster: RayCluster
) -> None:
    spec = write_spec(tmp_path, steps=60, trials=3)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    proc = start(
        "search",
        str(spec),
        "--storage",
        postgres_url,
        "--ray-address",
        cluster.address,
        "--workers",
        "2",
        "--json",
        **auth,
    )
    # both nodes run a trial at once (one CPU each), so the study really spans the cluster
    wait_for(
        "two trials running",
        lambda: len(processes_titled("ray::_remote_trial", cluster.pids())) >= 2,
        timeout=600,
        proc=proc,
    )
    cluster.kill_node(1)
    out = finish(proc)
    assert out["states"]["failed"] == 0, "the lost node's trial was retried on the head node"
    assert out["trained"] == 3
