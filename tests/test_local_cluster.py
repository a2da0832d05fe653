"""cluster_local.yaml: `ray up` / `ray job submit` / `ray down` on a one-machine cluster (Ray's
fake_multinode provider behind fsray.local_cluster), and that cluster's scoped `ray stop`.

The `ray up` test uses its own HOME (its own token), ports, temp dir and cluster name; whatever it
leaves is stopped by the marker in its processes' environment, never by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from cluster_harness import BIN, free_port, kill_pids, pids_with, with_descendants
from fsray.local_cluster import MARKER, LocalClusterProvider, LocalCommandRunner, cluster_pids, stop_cluster

REPO = Path(__file__).resolve().parents[1]


def _sleeper(env_extra: dict, name: str = "sleep", tmp: Path | None = None) -> subprocess.Popen:
    exe = "sleep"
    if name != "sleep":  # a decoy whose process name is a Ray daemon's (what `ray stop` matches)
        exe = str(tmp / name)
        shutil.copy("/bin/sleep", exe)
    return subprocess.Popen([exe, "300"], env={**os.environ, **env_extra})


# --- the scoped `ray stop` and the head's command runner (no Ray) ----------------------------------


def test_stop_cluster_stops_its_processes_only(tmp_path):
    name = f"t{uuid.uuid4().hex[:8]}"
    ours = [_sleeper({MARKER: name}) for _ in range(2)]
    other_cluster = _sleeper({MARKER: name + "x"})
    decoy = _sleeper({}, "raylet", tmp_path)  # `ray stop` would kill this one by its name
    try:
        assert sorted(p.pid for p in ours) == cluster_pids(name)
        assert stop_cluster(name, grace_s=2) == 2
        assert all(p.wait(timeout=5) is not None for p in ours)
        assert other_cluster.poll() is None and decoy.poll() is None
        assert cluster_pids(name) == [] and stop_cluster(name) == 0
    finally:
        for p in (*ours, other_cluster, decoy):
            p.kill()


def test_stop_cluster_forgets_its_address_like_ray_stop(tmp_path):
    """`ray start` leaves the cluster's address in <temp dir>/ray_current_cluster, and a plain
    `ray.init()` on this machine then tries to join it: stopping the cluster removes that file when
    it names this cluster (and leaves another cluster's)."""
    name = f"t{uuid.uuid4().hex[:8]}"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for d, address in ((ours, "10.1.2.3:6390"), (theirs, "10.9.9.9:6379")):
        (d / "session_x").mkdir(parents=True)
        (d / "ray_current_cluster").write_text(address)
    # a process that looks like this cluster's GCS server (argv[0] and the flags Ray gives it)
    gcs = subprocess.Popen(["gcs_server", "-c", "import time; time.sleep(300)", "--gcs_server_port=6390",
                            "--node-ip-address=10.1.2.3", f"--session-dir={ours / 'session_x'}"],
                           executable=sys.executable, env={**os.environ, MARKER: name})
    other = subprocess.Popen(["gcs_server", "-c", "import time; time.sleep(300)", "--gcs_server_port=6379",
                              "--node-ip-address=10.9.9.9", f"--session-dir={theirs / 'session_x'}"],
                             executable=sys.executable)
    try:
        assert stop_cluster(name, grace_s=2) == 1
        assert not (ours / "ray_current_cluster").exists()
        assert (theirs / "ray_current_cluster").read_text() == "10.9.9.9:6379" and other.poll() is None
    finally:
        gcs.kill()
        other.kill()


def test_head_runner_runs_here_with_the_marker_and_a_scoped_ray_stop(tmp_path, monkeypatch):
    name = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    runner = LocalCommandRunner(name, tmp_path / "state")
    # commands run on this machine, in the cluster's environment, with Ray's environment variables
    out = runner.run("echo $FSRAY_LOCAL_CLUSTER $RAY_FAKE_CLUSTER $X", with_output=True,
                     environment_variables={"X": {"CPU": 2}})
    assert out.split() == [name, "1", '{"CPU":', "2}"]
    # a failing command is an error carrying its exit status (the updater reports it)
    with pytest.raises(subprocess.CalledProcessError) as err:
        runner.run("exit 3")
    assert err.value.returncode == 3
    # file mounts: `~` is this machine's home
    src = tmp_path / "bootstrap.yaml"
    src.write_text("cluster_name: x\n")
    runner.run_rsync_up(str(src), "~/ray_bootstrap_config.yaml")
    assert (tmp_path / "home" / "ray_bootstrap_config.yaml").read_text() == "cluster_name: x\n"
    # `ray stop` on the head stops what its commands started, nothing else; `ray` is Ray's otherwise
    runner.run("setsid sleep 300 > /dev/null 2>&1 &")
    decoy = _sleeper({}, "gcs_server", tmp_path)
    try:
        assert len(cluster_pids(name)) == 1
        said = runner.run("ray stop", with_output=True)
        assert "Stopped the 1 processes" in said
        assert cluster_pids(name) == [] and decoy.poll() is None
        assert runner.run("ray --version", with_output=True).startswith("ray, version")
    finally:
        decoy.kill()
        stop_cluster(name)
    assert "$ ray stop" in (tmp_path / "state" / "commands.log").read_text()


def test_cluster_local_yaml_is_complete_and_names_the_local_provider():
    """Ray fills in no defaults for an external provider: every field Ray's schema knows must be
    there; the head may not scale, the workers start from zero; the provider is Ray's fake one."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
    from ray.autoscaler._private.providers import _get_node_provider_cls

    cfg = yaml.safe_load((REPO / "cluster_local.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["provider"]["type"] == "external"
    provider = _get_node_provider_cls(cfg["provider"])  # how Ray resolves it
    assert provider is LocalClusterProvider and issubclass(provider, FakeMultiNodeProvider)
    for key in ("setup_commands", "head_setup_commands", "initialization_commands", "file_mounts",
                "cluster_synced_files", "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter",
                "docker", "auth", "idle_timeout_minutes", "upscaling_speed"):
        assert key in cfg, key
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["max_workers"] == 0
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert workers and all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)
    start = cfg["head_start_ray_commands"]
    assert start[0] == "ray stop" and "--autoscaling-config=~/ray_bootstrap_config.yaml" in start[1]


# --- `ray up` for real ------------------------------------------------------------------------------


def _local_config(tmp_path: Path, name: str, gcs_port: int, dash_port: int, temp_dir: str) -> Path:
    """cluster_local.yaml with this test's name, ports, temp dir and a quicker idle timeout."""
    import ray._private.services as services

    cfg = yaml.safe_load((REPO / "cluster_local.yaml").read_text())
    cfg["cluster_name"] = name
    cfg["idle_timeout_minutes"] = 0.2
    cfg["provider"]["gcs_address"] = f"{services.get_node_ip_address()}:{gcs_port}"
    cfg["provider"]["state_dir"] = str(tmp_path / "state")
    start = cfg["head_start_ray_commands"][1]
    assert "--port 6379" in start and "--dashboard-port 8265" in start, start
    cfg["head_start_ray_commands"][1] = (
        start.replace("--port 6379", f"--port {gcs_port}").replace("--dashboard-port 8265", f"--dashboard-port {dash_port}")
        + f" --temp-dir {temp_dir} --ray-client-server-port {free_port()} --min-worker-port 0"
        f" --max-worker-port 0 --dashboard-agent-listen-port {free_port()}")
    path = tmp_path / "cluster_local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _alive_cpus(env: dict) -> list[float]:
    proc = subprocess.run(
        [sys.executable, "-c", "import ray, json; ray.init(log_to_driver=False); print('CPUS', "
         "json.dumps(sorted(n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive'])))"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "CPUS" in proc.stdout, proc.stderr[-2000:]
    return json.loads(proc.stdout.split("CPUS", 1)[1])


@pytest.mark.slow
def test_ray_up_scales_for_a_submitted_search_and_ray_down_stops_it_alone(tmp_path):
    """`ray up cluster_local.yaml` starts the head (0 worker nodes); `ray job submit --working-dir .
    -- fsray tune ...` (the README's path) asks for more CPUs than the head has, the autoscaler starts
    a worker node, every seed run succeeds, the results land in --out, the uploaded project is intact
    under the driver; the idle node goes; `ray down` stops every process of this cluster and nothing
    else Ray-named."""
    name = f"fsray_t{uuid.uuid4().hex[:6]}"
    gcs_port, dash_port = free_port(), free_port()
    temp_dir = f"/tmp/rc_{uuid.uuid4().hex[:8]}"
    config = _local_config(tmp_path, name, gcs_port, dash_port, temp_dir)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex * 2)  # Ray then turns token auth on
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_FAKE_CLUSTER"):
        env.pop(k, None)
    client = {**env, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": f"127.0.0.1:{gcs_port}"}
    decoy = _sleeper({}, "raylet", tmp_path)
    try:
        up = subprocess.run([str(BIN / "ray"), "up", "-y", "--no-config-cache", str(config)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=180)
        (tmp_path / "ray_up.txt").write_text(up.stdout + up.stderr)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        assert "Ray runtime started" in up.stdout
        assert (Path(temp_dir) / "ray_current_cluster").read_text().strip().endswith(f":{gcs_port}")
        assert _alive_cpus(client) == [1.0]                                   # the head alone
        marked = cluster_pids(name)
        assert marked and set(pids_with(temp_dir)) <= set(marked)           # every daemon is marked

        raw = yaml.safe_load((REPO / "search_spaces/simulated.yaml").read_text())
        raw["simulated"]["seconds_per_run"] = 1.0    # the demand outlasts the autoscaler's 5 s loop
        raw["tuner"].update(trials=3, concurrency=2)
        space = tmp_path / "sim_slow.yaml"
        space.write_text(yaml.safe_dump(raw))
        out = tmp_path / "runs" / "sim"
        # The README's path: the project uploaded (`--working-dir .`). The driver stands in the
        # unpacked copy while the autoscaler adds a worker node whose agent unpacks it too; the
        # entrypoint's shell then still finds the project where it stands (on a shared
        # runtime-resources directory the new node's agent deletes it: `test -f` fails).
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash_port}",
             "--working-dir", ".", "--", "bash", "-c",
             f"fsray tune {space} --seeds 2 --confirm-seeds 0 --out {out}"
             " && test -f search_spaces/simulated.yaml && echo WORKING-DIR-INTACT"],
            env=client, cwd=REPO, capture_output=True, text=True, timeout=300)
        (tmp_path / "job_output.txt").write_text(job.stdout + "\n--- stderr\n" + job.stderr)
        assert job.returncode == 0 and "succeeded" in job.stdout.lower(), job.stdout[-3000:]
        assert "WORKING-DIR-INTACT" in job.stdout, job.stdout[-3000:]
        records = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
        assert len(records) >= 3 and all(r["status"] == "ok" for r in records), records
        assert json.loads((out / "summary.json").read_text())["name"] == "simulated"
        monitor = "\n".join(p.read_text(errors="replace")
                            for p in Path(temp_dir).glob("session_*/logs/monitor.log"))
        assert "Adding 1 node(s) of type cpu_worker" in monitor, monitor[-3000:]
        deadline = time.monotonic() + 90
        while _alive_cpus(client) != [1.0]:
            assert time.monotonic() < deadline, "the idle worker node was not removed"
            time.sleep(5)

        down = subprocess.run([str(BIN / "ray"), "down", "-y", str(config)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
        assert "Stopped the" in down.stdout and "processes of local cluster" in down.stdout
        assert cluster_pids(name) == [] and pids_with(temp_dir) == []
        # ... and forgets it, as `ray stop` does: a plain ray.init() here would try to join it
        assert not (Path(temp_dir) / "ray_current_cluster").exists()
        assert decoy.poll() is None                                          # not `ray stop`
    finally:
        decoy.kill()
        stop_cluster(name, grace_s=2)
        kill_pids(with_descendants(pids_with(temp_dir)))
        shutil.rmtree(temp_dir, ignore_errors=True)
