"""Resources no node can ever give: refused at once, saying what was asked and what the cluster has.

A worker group of a real search needs, on one node, ``cpus_per_worker`` CPUs and
``gpus_per_worker`` GPUs for each worker (Ray Train places each worker as one bundle). A request
that no node of the cluster could satisfy even when idle (a GPU on a CPU-only cluster, 8 CPUs per
worker on 4-CPU nodes) would otherwise wait until ``capacity_timeout_s`` and then look like lost
capacity; ``check_resources`` makes it one ``UsageError`` line before anything trains. It applies
to the local Ray instance fsray starts for itself (which never grows); a cluster joined through
``RAY_ADDRESS`` may have an autoscaler that adds such nodes on demand (cluster.yaml scales GPU
workers from zero), so there the capacity timeout stays the guard.
"""

from __future__ import annotations

from fsray.errors import UsageError
from fsray.search.space import SearchSpace


def _fmt(x: float) -> str:
    return f"{x:g}"


def worker_bundle(space: SearchSpace) -> dict[str, float]:
    """What one Ray Train worker of a seed run holds (fsray.harness): with GPUs, Ray Train's default
    bundle of 1 CPU and 1 GPU; without, the worker's threads (whole CPUs, at least 1)."""
    r = space.resources
    if r.gpus_per_worker > 0:
        return {"CPU": 1.0, "GPU": 1.0}
    return {"CPU": float(max(1, int(r.cpus_per_worker))), "GPU": 0.0}


def may_grow() -> bool:
    """Whether the Ray instance may get nodes of other shapes: a cluster joined through
    ``RAY_ADDRESS`` may have an autoscaler (cluster.yaml scales GPU workers from zero); the local
    instance fsray starts for itself never grows."""
    from fsray.cluster import cluster_address

    return cluster_address() is not None


def check_resources(space: SearchSpace, nodes: list[dict] | None = None,
                    autoscaling: bool | None = None) -> None:
    """Raise UsageError when no alive node has the resources of one worker (see module doc).
    ``nodes``: ``ray.nodes()``, and ``autoscaling``, read from the running Ray when None."""
    if space.trainable != "real":
        return
    if autoscaling is None:
        autoscaling = may_grow()
    if autoscaling:
        return
    if nodes is None:
        import ray

        nodes = ray.nodes()
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    need = worker_bundle(space)
    if any(all(res.get(k, 0.0) >= v for k, v in need.items() if v > 0) for res in alive):
        return
    has = "; ".join(f"node {i + 1}: {_fmt(res.get('CPU', 0.0))} CPU, {_fmt(res.get('GPU', 0.0))} GPU"
                    for i, res in enumerate(alive)) or "no alive node"
    r = space.resources
    asked = (f"{_fmt(r.gpus_per_worker)} GPU (resources.gpus_per_worker)" if r.gpus_per_worker > 0
             else f"{_fmt(need['CPU'])} CPU (resources.cpus_per_worker)")
    raise UsageError(f"resources: each worker asks for {asked} on one node, which no node of the "
                     f"cluster has ({has}): lower it, or run where such a node exists")
