"""A real multi-node Ray cluster on this machine, for tests and benches.

Each node is a separate raylet started with ``ray start`` (the head with ``--head``), all of them
under one temporary directory of their own (``--temp-dir``), their own ports and their own ``HOME``
(so the token file the cluster uses, ``$HOME/.ray/auth_token``, is the cluster's own and never the
user's). Token authentication is on the way Ray turns it on: a token exists in ``$HOME/.ray`` when
the head starts, so ``ray start --head`` enables it; a joining node and a driver need
``RAY_AUTH_MODE=token`` and the token (``cluster.env`` has both).

Everything is stopped by process id: the processes whose command line names this cluster's temp dir
(gcs_server, raylets, agents, monitors) and their descendants (the Ray workers). Nothing else on the
machine is touched; ``ray stop`` is never used (other Ray instances may share the machine).

    with LocalCluster(tmp_path, head_cpus=1) as c:
        node = c.add_node(num_cpus=2)
        subprocess.run([...], env=c.env)        # a driver with RAY_ADDRESS=c.address
        c.kill_node(node)                         # SIGKILL of that node's raylet
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fsray.local_cluster import terminate as kill_pids  # SIGTERM, then SIGKILL after a grace

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(p.name))
    return kids


def pids_with(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (this cluster's temp dir), not ours."""
    me = os.getpid()
    return sorted(int(p.name) for p in Path("/proc").iterdir()
                  if p.name.isdigit() and int(p.name) != me and text in _cmdline(int(p.name)))


def with_descendants(pids: list[int]) -> list[int]:
    kids = _children()
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        todo += kids.get(pid, [])
    return out


@dataclass
class Node:
    raylet_pid: int
    num_cpus: float
    resources: dict = field(default_factory=dict)


class LocalCluster:
    """A head node (``head_cpus`` CPUs) and worker nodes added with :meth:`add_node`."""

    def __init__(self, root: Path, head_cpus: float = 1, token: bool = True,
                 dashboard: bool = False, head_resources: dict | None = None,
                 autoscaling_config: Path | None = None, autoscaling_overrides: dict | None = None):
        self.root = Path(root)
        self.home = self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        # short: Ray's unix socket paths live under it (108-byte limit)
        self.temp_dir = f"/tmp/rc_{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.dashboard_port = free_port() if dashboard else None
        self.head_cpus = head_cpus
        self.head_resources = head_resources or {}
        self.token = token
        self.dashboard = dashboard
        # a fake_multinode cluster config (cluster_local.yaml): the head's autoscaler starts worker
        # nodes as extra raylets here; the copy used names this head's GCS address
        self.autoscaling_config = autoscaling_config
        self.autoscaling_overrides = autoscaling_overrides or {}
        self.nodes: list[Node] = []
        self.head: Node | None = None
        self.address: str | None = None
        self.env = {**os.environ, "HOME": str(self.home), "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(k, None)
        if token:
            self.token_path.parent.mkdir(parents=True, exist_ok=True)
            self.token_path.write_text(secrets.token_hex(32))
            self.token_path.chmod(0o600)

    @property
    def token_path(self) -> Path:
        return self.home / ".ray" / "auth_token"

    # --- start / stop ----------------------------------------------------------------------

    def _raylets(self) -> set[int]:
        return {p for p in pids_with(self.temp_dir) if "/raylet/raylet" in _cmdline(p)}

    def _ray_start(self, args: list[str], env: dict) -> str:
        before = self._raylets()
        proc = subprocess.run([str(BIN / "ray"), "start", *args, "--temp-dir", self.temp_dir,
                               "--min-worker-port", "0", "--max-worker-port", "0",
                               "--dashboard-agent-listen-port", str(free_port()),
                               "--disable-usage-stats"],
                              env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        new = self._raylets() - before
        if len(new) != 1:
            self.stop()
            raise RuntimeError(f"ray start {' '.join(args)}: expected one new raylet, found {new}")
        self._new_raylet = new.pop()
        return proc.stdout + proc.stderr

    def start(self) -> "LocalCluster":
        args = ["--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus)]
        if self.head_resources:
            import json

            args += ["--resources", json.dumps(self.head_resources)]
        if self.dashboard:
            args += ["--include-dashboard=true", "--dashboard-port", str(self.dashboard_port),
                     "--dashboard-host", "127.0.0.1"]
        else:
            args += ["--include-dashboard=false"]
        env = self.env
        if self.autoscaling_config is not None:
            import ray._private.services as services
            import yaml

            cfg = yaml.safe_load(Path(self.autoscaling_config).read_text())
            cfg.update(self.autoscaling_overrides)
            cfg["provider"]["gcs_address"] = f"{services.get_node_ip_address()}:{self.port}"
            head = cfg["available_node_types"][cfg["head_node_type"]]
            head["resources"] = {**head.get("resources", {}), "CPU": self.head_cpus}
            copy = self.root / "autoscaling.yaml"
            copy.write_text(yaml.safe_dump(cfg))
            args += ["--autoscaling-config", str(copy)]
            env = {**self.env, "RAY_FAKE_CLUSTER": "1"}
        out = self._ray_start(args, env)
        m = re.search(r"ray start --address='([^']+)'", out)
        self.address = m.group(1) if m else f"127.0.0.1:{self.port}"
        self.head = Node(self._new_raylet, self.head_cpus, self.head_resources)
        self.env["RAY_ADDRESS"] = self.address
        if self.token:
            # what a joining node and a driver need (the head turned token auth on by itself)
            self.env["RAY_AUTH_MODE"] = "token"
        return self

    def add_node(self, num_cpus: float = 2, resources: dict | None = None) -> Node:
        args = ["--address", self.address, "--num-cpus", str(num_cpus)]
        if resources:
            import json

            args += ["--resources", json.dumps(resources)]
        self._ray_start(args, self.env)
        node = Node(self._new_raylet, num_cpus, resources or {})
        self.nodes.append(node)
        return node

    def kill_node(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Kill that node's raylet (by pid): the node is lost, as when its machine goes."""
        os.kill(node.raylet_pid, sig)

    def wait_nodes(self, n: int, timeout_s: float = 60.0) -> list[dict]:
        """Wait until ``n`` nodes are alive (asked through ``ray list nodes``-free means: a small
        driver in a subprocess, so this process never joins the cluster)."""
        code = ("import ray, json; ray.init(log_to_driver=False); "
                "print('NODES', json.dumps([n for n in ray.nodes() if n['Alive']]))")
        deadline = time.monotonic() + timeout_s
        alive: list[dict] = []
        while time.monotonic() < deadline:
            proc = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True,
                                  text=True, timeout=120)
            for line in proc.stdout.splitlines():
                if line.startswith("NODES "):
                    import json

                    alive = json.loads(line[6:])
            if len(alive) >= n:
                return alive
            time.sleep(1)
        raise TimeoutError(f"{len(alive)} of {n} nodes alive after {timeout_s}s")

    def pids(self) -> list[int]:
        return with_descendants(pids_with(self.temp_dir))

    def stop(self, keep_files: bool = False) -> None:
        kill_pids(self.pids())
        if not keep_files:
            import shutil

            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def monitor_log(self) -> str:
        """The autoscaler's log (a fake_multinode cluster): node launches and idle removals."""
        return "\n".join(p.read_text(errors="replace")
                         for p in Path(self.temp_dir).glob("session_*/logs/monitor.log"))

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
