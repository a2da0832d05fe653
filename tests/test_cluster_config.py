"""cluster.yaml: a valid Ray cluster-launcher config (Ray's own schema and validator) whose content
is what fsray needs: a CPU head, autoscaling GPU workers that fit the shipped GPU searches, setup
commands that install this project with the Ray and torch versions pyproject.toml asks for, and
start commands that join the workers to the head."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def project_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {r.name: r for r in reqs}


def _setup_requirements(cluster) -> dict[str, Requirement]:
    """The packages the setup commands pip-install by requirement (not the project itself)."""
    out = {}
    for cmd in cluster["setup_commands"]:
        words = shlex.split(cmd)
        if "pip" in words and "install" in words:
            for w in words[words.index("install") + 1:]:
                if not w.startswith("-") and not w.startswith(".") and w != "pip":
                    req = Requirement(w)
                    out[req.name] = req
    return out


def _start_flags(command: str) -> dict[str, str | bool]:
    start = command.split("ray start", 1)[1]
    flags = {}
    for w in shlex.split(start):
        if w.startswith("--"):
            key, _, value = w[2:].partition("=")
            flags[key] = value or True
    return flags


def test_matches_rays_cluster_schema(cluster):
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


def test_passes_rays_validator_after_defaults(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(dict(cluster)))


def test_cpu_head_and_autoscaling_gpu_workers(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] >= 1   # no training there
    assert head["min_workers"] == head["max_workers"] == 0
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no worker type with a GPU"
    for t in gpu.values():
        assert t["min_workers"] == 0 and 2 <= t["max_workers"] <= cluster["max_workers"]   # scale from zero
    assert cluster["provider"]["type"] in ("aws", "gcp", "azure")


def test_every_shipped_gpu_search_fits_the_gpu_workers(cluster):
    """A seed run's worker must fit on one GPU node, and a search's concurrent trials on the nodes
    the cluster may start (else Ray waits for resources that never come)."""
    from fsray.search.space import load_space

    nodes = [t for t in cluster["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    gpu_spaces = [load_space(p) for p in sorted((REPO / "search_spaces").glob("*.yaml"))]
    gpu_spaces = [s for s in gpu_spaces if s.trainable == "real" and s.resources.gpus_per_worker > 0]
    assert len(gpu_spaces) >= 10
    for space in gpu_spaces:
        r = space.resources
        fitting = [t for t in nodes if t["resources"]["GPU"] >= r.gpus_per_worker
                   and t["resources"]["CPU"] >= r.cpus_per_worker]
        assert fitting, f"{space.name}: no GPU node type holds a worker ({r.cpus_per_worker} CPU, {r.gpus_per_worker} GPU)"
        capacity = sum(t["max_workers"] * int(t["resources"]["GPU"] // r.gpus_per_worker) for t in fitting)
        assert space.tuner.concurrency * r.workers <= capacity, space.name


def test_setup_installs_this_project_with_the_ray_and_torch_pyproject_asks_for(cluster, project_requirements):
    import ray

    setup = cluster["setup_commands"]
    # this project, from the mounted checkout
    assert cluster["file_mounts"]["~/fsray"] == "."
    assert any(re.search(r"cd ~/fsray && .*pip install -e \"?\.", c) for c in setup), setup
    pinned = _setup_requirements(cluster)
    # Ray pinned to one version (driver, head and workers must run the same Ray), one that
    # pyproject.toml accepts and that this checkout was tested with, with the extras fsray needs
    ray_req = pinned["ray"]
    versions = [s.version for s in ray_req.specifier if s.operator == "=="]
    assert len(versions) == 1, f"ray is not pinned in the setup commands: {ray_req}"
    assert project_requirements["ray"].specifier.contains(versions[0]), (ray_req, project_requirements["ray"])
    assert versions[0] == ray.__version__, f"cluster runs Ray {versions[0]}, the tests ran {ray.__version__}"
    assert project_requirements["ray"].extras <= ray_req.extras and "default" in ray_req.extras  # + dashboard/jobs
    # torch: exactly what pyproject.toml asks for (the GPU build comes from pip's default index)
    assert pinned["torch"].specifier == project_requirements["torch"].specifier
    # the project's own install must come after Ray's pin, or pip could pick another Ray
    ray_at = next(i for i, c in enumerate(setup) if "ray[" in c)
    project_at = next(i for i, c in enumerate(setup) if "cd ~/fsray" in c)
    assert ray_at < project_at
    excluded = set(cluster["rsync_exclude"])
    assert {"**/.git", "**/.venv", "runs/**"} <= excluded   # never ship the local venv or runs


def test_head_and_worker_start_commands_join_one_cluster(cluster):
    head_cmds, worker_cmds = cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"]
    for cmds in (head_cmds, worker_cmds):
        assert cmds[0] == "ray stop"   # a restarted node starts clean
        assert sum("ray start" in c for c in cmds) == 1
    head = _start_flags(next(c for c in head_cmds if "ray start" in c))
    worker = _start_flags(next(c for c in worker_cmds if "ray start" in c))
    assert head["head"] is True and "head" not in worker
    assert head["autoscaling-config"] == "~/ray_bootstrap_config.yaml"   # where the launcher puts it
    # `ray job submit --address http://127.0.0.1:8265` (README) reaches the dashboard through the
    # forwarded port: the dashboard listens beyond localhost on the head
    assert head["dashboard-host"] == "0.0.0.0"
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"   # workers join the head's GCS port
    assert worker["object-manager-port"] == head["object-manager-port"]
