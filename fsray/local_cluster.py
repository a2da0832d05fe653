"""`ray up` for a Ray cluster on this one machine: Ray's fake_multinode provider, reached without SSH.

Ray's ``FakeMultiNodeProvider`` starts worker nodes as extra raylets on the head's machine (the
autoscaler in the head's monitor calls it) and removes them when idle. Ray 2.60 offers it for
``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config ...`` only: ``ray up`` / ``ray down``
with ``type: fake_multinode`` stop at two gaps,

* the provider's defaults file (``fake_multi_node/example.yaml``), which the wheel does not ship;
* a way to run the head's setup and start commands: every provider but the Docker one reaches its
  head over SSH, and the Docker variant needs a Docker engine and Ray's image;

and an uploaded ``--working-dir`` breaks on its cluster: the worker nodes share the head's session
directory, so every node's runtime-env agent unpacks the upload into the same
``<session>/runtime_resources``, and a new node's agent deletes and unpacks it again (Ray's
working_dir plugin unpacks with ``overwrite=True``) under the job driver standing in it.

:class:`LocalClusterProvider` is that same provider, loaded through Ray's documented extension point
(``provider: {type: external, module: fsray.local_cluster.LocalClusterProvider}``), with only those
gaps filled: the head is this machine, and its commands run here (:class:`LocalCommandRunner`, a
``ray.autoscaler.command_runner.CommandRunnerInterface``); a worker node gets its own runtime-resources
directory, as a node with its own disk has. Scheduling, scaling and node lifetimes stay Ray's.

One thing needs care on a shared machine: ``ray stop`` stops every Ray process on it, other users'
clusters included, and ``ray up`` / ``ray down`` run ``ray stop`` on the head. On this cluster's
head, ``ray`` is a shim whose ``stop`` stops this cluster's processes only: every process it starts
carries ``FSRAY_LOCAL_CLUSTER=<cluster name>`` in its environment (inherited by the daemons, the
worker nodes the autoscaler starts, Ray's workers and submitted jobs), and that marker, not a
process name, is what is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray._common.utils as ray_common_utils
import ray._private.services as services
from ray._private import ray_constants
from ray._private.node import Node
from ray._private.parameter import RayParams
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.command_runner import CommandRunnerInterface
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

MARKER = "FSRAY_LOCAL_CLUSTER"
BIN = Path(sys.executable).parent


def state_dir(cluster_name: str, provider_config: dict[str, Any] | None = None) -> Path:
    """Where the head keeps its command shim and command log (``provider.state_dir`` or a folder
    named after the cluster in the temp dir)."""
    given = (provider_config or {}).get("state_dir")
    return Path(given).expanduser() if given else Path(tempfile.gettempdir()) / f"fsray-cluster-{cluster_name}"


# --- this cluster's processes ---------------------------------------------------------------------


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cluster_pids(cluster_name: str) -> list[int]:
    """The processes of this cluster (their environment carries the marker), the caller and its
    ancestors excepted (``ray stop`` run on the head is itself one of the cluster's commands)."""
    entry = f"{MARKER}={cluster_name}".encode()
    spare = _ancestors(os.getpid())
    return sorted(int(p.name) for p in Path("/proc").iterdir()
                  if p.name.isdigit() and int(p.name) not in spare and _environ_has(int(p.name), entry))


def _gcs_addresses(pids: list[int]) -> list[tuple[str, Path]]:
    """(address, temp dir) of each GCS server among ``pids``, read from its command line."""
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name != "gcs_server":
            continue
        flags = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
        if {"gcs_server_port", "node-ip-address", "session-dir"} <= flags.keys():
            found.append((f"{flags['node-ip-address']}:{flags['gcs_server_port']}",
                          Path(flags["session-dir"]).parent))
    return found


def _forget_address(address: str, temp_dir: Path) -> None:
    """What ``ray stop`` also does: remove the "latest cluster" file (``ray start`` writes it, and a
    plain ``ray.init()`` on this machine connects to the address in it) when it names this cluster,
    in its temp dir and in Ray's default one."""
    for directory in {temp_dir, Path(ray_common_utils.get_default_ray_temp_dir())}:
        path = Path(ray_common_utils.get_ray_address_file(str(directory)))
        try:
            if path.read_text().strip() == address:
                path.unlink()
        except OSError:
            pass


def terminate(pids: list[int], grace_s: float = 3.0) -> None:
    """SIGTERM ``pids``, then SIGKILL what is still alive after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def stop_cluster(cluster_name: str, grace_s: float = 10.0) -> int:
    """``ray stop`` for this cluster only: SIGTERM its processes, SIGKILL what outlives ``grace_s``,
    forget its address. Returns how many processes there were."""
    pids = cluster_pids(cluster_name)
    addresses = _gcs_addresses(pids)
    seen = set(pids)
    for _ in range(3):
        if not pids:
            break
        terminate(pids, grace_s)
        # processes started while stopping (a worker the raylet was spawning) go in another round
        pids = cluster_pids(cluster_name)
        seen |= set(pids)
    for address, temp_dir in addresses:
        _forget_address(address, temp_dir)
    return len(seen)


# --- the head's commands --------------------------------------------------------------------------


def _write_shim(directory: Path, cluster_name: str) -> Path:
    """``<state>/bin/ray``: ``ray stop`` stops this cluster; anything else is Ray's own CLI."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "ray"
    shim.write_text(
        "#!/bin/sh\n"
        "# written by fsray.local_cluster: on this one-machine cluster `ray stop` stops this\n"
        "# cluster's processes, not every Ray process on the machine\n"
        'if [ "$1" = "stop" ]; then\n'
        f"  exec {shlex.quote(sys.executable)} -m fsray.local_cluster stop {shlex.quote(cluster_name)}\n"
        "fi\n"
        f'exec {shlex.quote(str(BIN / "ray"))} "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def _local_path(path: str) -> Path:
    return Path(os.path.expanduser(path))


class LocalCommandRunner(CommandRunnerInterface):
    """Runs the head's commands on this machine, in the cluster's environment (see the module
    docstring); file syncs are copies."""

    def __init__(self, cluster_name: str, directory: Path, log_prefix: str = ""):
        self.cluster_name = cluster_name
        self.directory = directory
        self.log_prefix = log_prefix

    def _env(self, extra: dict[str, object] | None) -> dict[str, str]:
        shim_dir = _write_shim(self.directory, self.cluster_name)
        env = {**os.environ, MARKER: self.cluster_name, "RAY_FAKE_CLUSTER": "1",
               "PATH": f"{shim_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        for key, value in (extra or {}).items():
            env[key] = value if isinstance(value, str) else json.dumps(value)
        return env

    def run(self, cmd: str | None = None, timeout: int = 120, exit_on_fail: bool = False,
            port_forward=None, with_output: bool = False,
            environment_variables: dict[str, object] | None = None, run_env: str = "auto",
            ssh_options_override_ssh_key: str = "", shutdown_after_run: bool = False) -> str:
        env = self._env(environment_variables)
        if not cmd or cmd.strip() == "$SHELL":   # `ray attach`: a shell on the head, on this terminal
            return str(subprocess.call(["bash", "-l"], env=env))
        self.directory.mkdir(parents=True, exist_ok=True)
        # Output goes through a file, not a pipe: `ray start` leaves daemons holding its stdout,
        # and a pipe would never reach end-of-file.
        with tempfile.TemporaryFile(dir=self.directory) as out:
            code = subprocess.call(["bash", "-c", cmd], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
            out.seek(0)
            text = out.read().decode(errors="replace")
        with open(self.directory / "commands.log", "a") as log:
            log.write(f"$ {cmd}\n{text}[exit {code}]\n")
        if not with_output and text:
            sys.stdout.write(text)
            sys.stdout.flush()
        if code != 0:
            if exit_on_fail:
                sys.stderr.write(f"{self.log_prefix}command failed on the head (exit {code}): {cmd}\n")
                sys.exit(1)
            raise subprocess.CalledProcessError(code, cmd, output=text, stderr=text)
        return text if with_output else ""

    def run_rsync_up(self, source: str, target: str, options: dict[str, Any] | None = None) -> None:
        self._copy(_local_path(source), _local_path(target))

    def run_rsync_down(self, source: str, target: str, options: dict[str, Any] | None = None) -> None:
        self._copy(_local_path(source), _local_path(target))

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        if source.resolve() == target.resolve():
            return
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

    def remote_shell_command_str(self) -> str:
        return "bash -l"

    def run_init(self, *, as_head: bool, file_mounts: dict[str, str], sync_run_yet: bool):
        return None


# --- the provider ---------------------------------------------------------------------------------


class LocalClusterProvider(FakeMultiNodeProvider):
    """Ray's fake_multinode provider, plus a head that ``ray up`` can create, update and tear down
    on this machine."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str):
        # The fake provider refuses to run unless the head was started as a fake cluster; this
        # provider is one by definition (and sets it for the head's commands, see the runner).
        os.environ.setdefault("RAY_FAKE_CLUSTER", "1")
        super().__init__(provider_config, cluster_name)
        self._state_dir = state_dir(cluster_name, provider_config)

    # `ray up` relaunches the head when its launch hash differs (always, for a fresh provider): the
    # head is then "terminated" (this cluster's Ray stopped) and "created" (registered; its start
    # commands start Ray). Worker nodes are the fake provider's own.
    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int):
        if tags.get(TAG_RAY_NODE_KIND) != NODE_KIND_HEAD:
            raise NotImplementedError("worker nodes are created by the autoscaler on the head")
        with self.lock:
            self._nodes[self._head_node_id] = {"tags": {
                TAG_RAY_NODE_NAME: self._head_node_id,
                TAG_RAY_USER_NODE_TYPE: tags.get(TAG_RAY_USER_NODE_TYPE, "ray.head.default"),
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                **tags,
            }}

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        """A worker node: a raylet started from this process (the head's monitor) and joined to the
        head's GCS under the provider's node id, as in Ray's fake provider, but with a
        runtime-resources directory of its own (see the module docstring: an uploaded working dir)."""
        resources = dict(resources)
        with self.lock:
            node_id = self._next_hex_node_id()
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            gcs = self._gcs_address or f"{services.get_node_ip_address()}:{ray_constants.DEFAULT_PORT}"
            params = RayParams(
                gcs_address=gcs, redis_address=gcs,
                num_cpus=resources.pop("CPU", 0), num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources, labels=labels,
                runtime_env_dir_name=f"{ray_constants.DEFAULT_RUNTIME_ENV_DIR_NAME}_{node_id}",
                # ports: any free one (several raylets share this machine's)
                min_worker_port=0, max_worker_port=0, dashboard_port=None, dashboard_agent_listen_port=0,
                # how the autoscaler recognises the raylet as this node
                env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id, "RAY_CLOUD_INSTANCE_ID": node_id,
                          "RAY_NODE_TYPE_NAME": node_type,
                          ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                          ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels)})
            node = Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[node_id] = {"node": node, "tags": {
                TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE, **tags}}

    def terminate_node(self, node_id: str):
        if node_id != self._head_node_id:
            return super().terminate_node(node_id)
        stop_cluster(self.cluster_name)
        with self.lock:
            self._nodes.pop(node_id, None)

    def set_node_tags(self, node_id: str, tags: dict[str, str]):
        with self.lock:
            self._nodes[node_id]["tags"].update(tags)

    def get_command_runner(self, log_prefix, node_id, auth_config, cluster_name, process_runner,
                           use_internal_ip, docker_config=None) -> CommandRunnerInterface:
        if node_id != self._head_node_id:
            raise NotImplementedError(
                f"{node_id} is a worker node of a one-machine cluster: it takes no commands (its "
                "processes are the autoscaler's children on the head)")
        return LocalCommandRunner(cluster_name, self._state_dir, log_prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsray.local_cluster",
        description="`ray stop` for one local cluster (its processes only).")
    sub = parser.add_subparsers(dest="command", required=True)
    stop = sub.add_parser("stop", help="stop this cluster's processes")
    stop.add_argument("cluster_name")
    args = parser.parse_args(argv)
    if args.command == "stop":
        n = stop_cluster(args.cluster_name)
        print(f"Stopped the {n} processes of local cluster {args.cluster_name!r}" if n
              else f"No process of local cluster {args.cluster_name!r} was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
