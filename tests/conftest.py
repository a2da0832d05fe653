"""Shared test fixtures.

Ray takes 5-10 s to start on this machine, so the whole session shares one local instance
(`ray_local`), started on first use and shut down at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "fixtures" / "upstream_results"

# Keep torch and BLAS to one thread per process in tests: deterministic and fair to 2-core CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# pytest-xdist's workers export COLUMNS=80: the terminal table would then fit 80 columns under
# `make test` (-n 2) and 120 (no terminal) under a plain pytest. Tests see no terminal either way;
# those about widths set COLUMNS themselves.
os.environ.pop("COLUMNS", None)
# Tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Quieter, faster local Ray.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def upstream_dir() -> Path:
    """The researchers' real result files (../shared beside the repo). Skipped, saying so, where absent;
    a failure where FSRAY_REQUIRE_UPSTREAM=1 (set by .ci/run: CI has ../shared, so there a missing
    directory is a broken checkout, not a reason to skip)."""
    if not UPSTREAM.is_dir():
        message = f"{UPSTREAM} not found: the researchers' fixtures live in ../shared (CI has it)"
        if os.environ.get("FSRAY_REQUIRE_UPSTREAM") == "1":
            pytest.fail(message + "; FSRAY_REQUIRE_UPSTREAM=1 requires it")
        pytest.skip(message)
    return UPSTREAM


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """A real 2-node Ray cluster on this machine (tests/cluster_harness.py): a head with 1 CPU and one
    worker node with 2 CPUs, separate raylets, token auth on as Ray turns it on. Yields the
    ``LocalCluster``: ``.address``, ``.env`` (RAY_ADDRESS, RAY_AUTH_MODE=token and the cluster's own
    HOME with its token: run drivers as subprocesses with it), ``.nodes[0]`` (the worker node),
    ``.kill_node(node)`` (SIGKILL of its raylet), ``.add_node(num_cpus)``, ``.wait_nodes(n)``.
    Everything it started is stopped by pid at the end (never `ray stop`)."""
    from cluster_harness import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("ray_cluster"), head_cpus=1).start()
    try:
        cluster.add_node(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()


# `make test` runs two test files at a time (pytest-xdist, --dist loadfile), handing files out in
# collection order. The longest files (a minute or more each, mostly waiting on Ray) go first, so
# that the run does not end with one worker alone on one of them; the rest keep their order.
LONGEST_FIRST = ("test_search_cluster.py", "test_search_faults.py", "test_storage.py",
                 "test_local_cluster.py", "test_search_tune.py", "test_fused.py", "test_harness.py", "test_e2e.py",
                 "test_multinode.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
