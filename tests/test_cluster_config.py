"""cluster.yaml is a valid Ray cluster launcher config (Ray's own schema and validator)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_matches_rays_cluster_schema(cluster):
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


def test_passes_rays_validator_after_defaults(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(dict(cluster)))


def test_head_and_autoscaling_gpu_workers_that_install_this_project(cluster):
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["min_workers"] == 0 and t["max_workers"] >= 2 for t in gpu)
    assert cluster["provider"]["type"] in ("aws", "gcp", "azure")
    setup = " ".join(cluster["setup_commands"])
    assert "pip install -e" in setup and "~/fsray" in setup
    assert cluster["file_mounts"]["~/fsray"] == "."


def test_a_broken_config_is_rejected():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"cluster_name": "x", "provider": {"region": "us-east-1"}}, schema)
