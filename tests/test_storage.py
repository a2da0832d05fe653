"""Storage for clusters (fsray/storage.py) against a real S3-compatible server started here (moto's
server, on 127.0.0.1): the probe before any training, one-line errors, the results copy and
`fsray report URI`, and Ray Train checkpoints that live in the object store and resume from it in a
fresh Ray instance that cannot see the first one's directories."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster_harness import BIN, free_port

REPO = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).parent / "fixtures" / "pinned_paired_record.json"
BUCKET = "fsray-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* set the way pyarrow and Ray read them
    (restored afterwards). Yields the environment to give subprocesses."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield {**os.environ, **aws}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def _keys(prefix: str = "") -> list[str]:
    import boto3

    out = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in out]


def _records(run_dir: Path, n: int = 3) -> None:
    """A results store of ``n`` paired seeds (the pinned record, seeds changed)."""
    rec = json.loads(PINNED.read_text())
    lines = []
    for seed in range(n):
        r = json.loads(json.dumps(rec))
        r["seed"] = r["baseline"]["seed"] = r["fs"]["seed"] = seed
        r["fs"]["token_acc"] = r["baseline"]["token_acc"] + 0.01 * (seed + 1)
        lines.append(json.dumps(r))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"name": "t"}) + "\n")
    (run_dir / "optuna.db").write_bytes(b"not copied")


def _configs(report_json: str) -> list:
    """The per-configuration rows of `fsray report --format json`, without where they were read."""
    data = json.loads(report_json)
    rows = data.get("summary", data) if isinstance(data, dict) else data
    return [{k: v for k, v in r.items() if "path" not in k and "source" not in k} for r in rows]


# --- the probe --------------------------------------------------------------------------------


def test_check_storage_on_a_bucket_and_a_local_path(s3, tmp_path):
    from fsray.storage import check_storage

    st = check_storage(f"s3://{BUCKET}/runs")
    assert st.remote and st.uri == f"s3://{BUCKET}/runs" and st.path == f"{BUCKET}/runs"
    assert st.run_config_kwargs() == {"storage_path": f"s3://{BUCKET}/runs"}
    assert st.child("demo", "tune") == f"s3://{BUCKET}/runs/demo/tune"
    assert not [k for k in _keys("runs/") if ".fsray-probe" in k]      # the marker is removed
    local = check_storage(tmp_path / "shared" / "ray")
    assert local.is_local and (tmp_path / "shared" / "ray").is_dir() and not list((tmp_path / "shared" / "ray").iterdir())


@pytest.mark.parametrize("uri, words", [
    ("s3://no-such-bucket-fsray/runs", "bucket does not exist"),
    ("foo://bucket/runs", "unknown scheme 'foo'"),
    ("s3://", "name a bucket"),
])
def test_bad_storage_is_one_usage_line(s3, uri, words):
    from fsray.errors import UsageError
    from fsray.storage import check_storage

    with pytest.raises(UsageError) as info:
        check_storage(uri)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_unreachable_endpoint_is_one_usage_line(s3, monkeypatch):
    from fsray.errors import UsageError
    from fsray.storage import check_storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")   # nothing listens
    with pytest.raises(UsageError) as info:
        check_storage(f"s3://{BUCKET}/elsewhere", timeout_s=20)
    msg = str(info.value)
    assert "\n" not in msg and ("cannot be reached" in msg or "no answer" in msg), msg


def test_fsray_tune_with_bad_storage_path_writes_nothing(s3, tmp_path):
    out = tmp_path / "run"
    for uri in ("s3://no-such-bucket-fsray/x", "gopher://x/y"):
        proc = subprocess.run([str(BIN / "fsray"), "tune", str(REPO / "search_spaces/simulated.yaml"),
                               "--storage-path", uri, "--out", str(out)],
                              env=s3, cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and uri in lines[0], proc.stderr
        assert not out.exists()


def test_storage_path_in_the_search_yaml(tmp_path):
    from fsray.errors import UsageError
    from fsray.search.space import load_space, parse_space
    import yaml

    raw = yaml.safe_load((REPO / "search_spaces/simulated.yaml").read_text())
    space = parse_space({**raw, "storage_path": "s3://bucket/fsray", "storage": "sqlite:///x.db"})
    assert space.storage_path == "s3://bucket/fsray" and space.storage == "sqlite:///x.db"
    assert load_space(REPO / "search_spaces/simulated.yaml").storage_path is None   # old files
    with pytest.raises(UsageError, match="storage_path"):
        parse_space({**raw, "storage_path": "  "})


# --- the results copy ----------------------------------------------------------------------------


def test_upload_fetch_and_fsray_report_uri(s3, tmp_path):
    from fsray.storage import check_storage, fetch_run, run_location, upload_run

    run_dir = tmp_path / "demo"
    _records(run_dir)
    st = check_storage(f"s3://{BUCKET}/searches")
    dest = run_location(st, run_dir)
    assert dest == f"s3://{BUCKET}/searches/demo"
    assert upload_run(run_dir, dest) == ["results.jsonl", "summary.json"]
    files = sorted(k for k in _keys("searches/demo/") if not k.endswith("/"))   # pyarrow adds dir markers
    assert files == ["searches/demo/results.jsonl", "searches/demo/summary.json"]
    back = fetch_run(dest, tmp_path / "back")
    assert (back / "results.jsonl").read_bytes() == (run_dir / "results.jsonl").read_bytes()
    # the CLI: `fsray report URI` reads the copy
    proc = subprocess.run([str(BIN / "fsray"), "report", dest, "--format", "json"], env=s3, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    local = subprocess.run([str(BIN / "fsray"), "report", str(run_dir), "--format", "json"], env=s3,
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    assert _configs(proc.stdout) == _configs(local.stdout) != []
    proc = subprocess.run([str(BIN / "fsray"), "report", f"s3://{BUCKET}/searches/none"], env=s3,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "no fsray results" in lines[0], proc.stderr


# --- Ray Train checkpoints through the object store ------------------------------------------------

FIT = r'''
import json, os, sys, tempfile
import ray
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

storage, forbidden, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])


def train_fn(config):
    import json, os, tempfile
    import ray.train

    os.chdir(tempfile.mkdtemp(prefix="worker-cwd-"))      # nothing relative to the driver's cwd
    # the resumed fit runs after the first one's directories were deleted: only the object store
    # can hold its checkpoint
    assert not config["forbidden"] or not os.path.exists(config["forbidden"]), "first run's dir visible"
    start = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.load(open(os.path.join(d, "state.json")))["step"]
    for step in range(start + 1, start + config["steps"] + 1):
        with tempfile.TemporaryDirectory() as d:
            json.dump({"step": step}, open(os.path.join(d, "state.json"), "w"))
            ray.train.report({"step": step, "resumed_from": start}, checkpoint=Checkpoint.from_directory(d))


ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=os.environ["FIT_TEMP"])
result = TorchTrainer(train_fn, train_loop_config={"forbidden": forbidden, "steps": steps},
                      scaling_config=ScalingConfig(num_workers=1),
                      run_config=RunConfig(name="fit", storage_path=storage)).fit()
print("RESULT", json.dumps({"metrics": result.metrics, "path": result.checkpoint.path,
                            "fs": type(result.checkpoint.filesystem).__name__}))
'''


@pytest.mark.slow
def test_ray_train_checkpoints_to_s3_and_resumes_from_there(s3, tmp_path):
    """Two Ray Train fits with RunConfig(storage_path="s3://..."), each in its own Ray instance
    (own temp dir) and its own working directory; between them the first one's directories are
    deleted (a preempted node's disk). The second resumes from the first's last checkpoint."""
    from fsray.storage import check_storage

    storage = check_storage(f"s3://{BUCKET}/ray").uri
    results = []
    first_dir = tmp_path / "node_a"
    for i, (cwd, steps) in enumerate(((first_dir, 2), (tmp_path / "node_b", 1))):
        cwd.mkdir()
        ray_tmp = f"/tmp/rcs_{os.getpid()}_{i}"
        try:
            proc = subprocess.run([sys.executable, "-c", FIT, storage, str(first_dir) if i else "", str(steps)],
                                  env={**s3, "FIT_TEMP": ray_tmp, "PYTHONPATH": str(REPO)}, cwd=cwd,
                                  capture_output=True, text=True, timeout=240)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout.split("RESULT", 1)[1]))
        assert not list(cwd.rglob("checkpoint_*")) and not list(cwd.rglob("state.json"))  # not on "disk"
        shutil.rmtree(cwd)
    first, second = results
    assert first["metrics"] == {"step": 2, "resumed_from": 0} and first["fs"] == "S3FileSystem"
    assert second["metrics"] == {"step": 3, "resumed_from": 2}        # resumed from the object store
    assert second["path"].startswith(f"{BUCKET}/ray/fit/checkpoint_")
    keys = _keys("ray/fit/")
    assert sum(k.endswith("/state.json") for k in keys) == 3 and "ray/fit/checkpoint_manager_snapshot.json" in keys


@pytest.mark.slow
def test_fsray_tune_copies_its_results_to_the_storage_uri(s3, tmp_path):
    """`fsray tune --storage-path s3://...`: the probe passes, the search runs, and at the end a copy
    of the run's results sits at <storage>/<run name>/, which `fsray report URI` reads."""
    out = tmp_path / "sim_run"
    proc = subprocess.run([str(BIN / "fsray"), "tune", str(REPO / "search_spaces/simulated.yaml"),
                           "--trials", "2", "--seeds", "2", "--confirm-seeds", "0",
                           "--storage-path", f"s3://{BUCKET}/searches", "--out", str(out)],
                          env=s3, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dest = f"s3://{BUCKET}/searches/sim_run"
    assert f"results copied to {dest}" in proc.stdout
    files = {k.rsplit("/", 1)[1] for k in _keys("searches/sim_run/") if not k.endswith("/")}
    assert {"results.jsonl", "summary.json", "space.json", "report.html"} <= files
    import boto3

    body = boto3.client("s3").get_object(Bucket=BUCKET, Key="searches/sim_run/results.jsonl")["Body"].read()
    assert body == (out / "results.jsonl").read_bytes()
    remote = subprocess.run([str(BIN / "fsray"), "report", dest, "--format", "json"], env=s3, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    local = subprocess.run([str(BIN / "fsray"), "report", str(out / "results.jsonl"), "--format", "json"],
                           env=s3, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert remote.returncode == 0 and local.returncode == 0, (remote.stderr, local.stderr)
    assert _configs(remote.stdout) == _configs(local.stdout) != []


LOST_RUN = """
import json, os, signal, sys, time
import ray
from fsray.fsconfig import FSConfig
from fsray.harness import SeedRunHarness
from fsray.spec import TrainSpec
from fsray.trainer import run_mode

spec = TrainSpec.model_validate({
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 80, "batch_size": 16, "eval_every": 10, "warmup": 1},
    "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
})
fs = FSConfig(alpha_init=0.0, alpha_lr=1e-2)
uri, marker_dir = sys.argv[1], sys.argv[2]
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
import pyarrow.fs as pafs
store, root = pafs.FileSystem.from_uri(marker_dir)
with SeedRunHarness(spec, groups=1, storage_path=uri, checkpoint_every_s=0.0) as h:
    job = h.submit(4, fs, tag="trial s3")
    deadline, pid = time.monotonic() + 120, None
    while time.monotonic() < deadline and pid is None:
        leases = ray.get(h.dispatcher.leases_now.remote())
        saved = [f for f in store.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
                 if f.path.endswith("state.pt")]
        if leases and saved:
            pid = next(iter(leases.values()))["pid"]
        time.sleep(0.05)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    got = h.result(job)
whole = run_mode(spec, 4, fs)
print("RESULT", json.dumps({"killed": pid is not None, "got": got, "whole": whole}))
"""


def test_a_seed_run_lost_mid_way_resumes_from_its_checkpoint_in_the_object_store(s3, tmp_path):
    """The harness with its storage in S3 (its own Ray, started with the AWS_* environment): the
    group's worker is SIGKILLed after the run saved its state there; the run given back resumes from
    that state (not from step 0), its result equals an undisturbed run's, and the state is deleted
    once the run returns."""
    uri = f"s3://{BUCKET}/harness"
    proc = subprocess.run([sys.executable, "-c", LOST_RUN, uri, f"{uri}/seed_runs"], env=s3, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[0][7:])
    got, whole = out["got"], out["whole"]
    assert out["killed"], "the run never saved its state to the object store"
    assert got["status"] == "ok" and got.get("resumed_from_step", 0) >= 10
    for key in ("token_acc", "loss", "seq_acc", "curve", "data_hash", "tokens", "steps"):
        assert got[key] == whole[key], key
    assert not [k for k in _keys("harness/seed_runs/") if k.endswith("state.pt")]   # cleared at the end


@pytest.fixture(scope="module")
def s3_with_auth():
    """A second moto server that checks credentials from the first request on (moto's
    INITIAL_NO_AUTH_ACTION_COUNT=0): a key it never issued, or none, is refused as AWS refuses it."""
    pytest.importorskip("moto")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto_server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("keys", ["unknown", "none"])
def test_refused_or_missing_credentials_are_one_usage_line(s3_with_auth, keys, monkeypatch, tmp_path):
    from fsray.errors import UsageError
    from fsray.storage import check_storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))                   # no ~/.aws/credentials either
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    if keys == "unknown":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTISSUEDBYMOTO0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(UsageError) as info:   # a location no other test has proved (checks are cached)
        check_storage(f"s3://{BUCKET}/credentials-{keys}", timeout_s=20)
    msg = str(info.value)
    said = "access refused or no credentials" if keys == "unknown" else "no credentials found"
    assert "\n" not in msg and said in msg, msg
    assert "AWS_ACCESS_KEY_ID" in msg
