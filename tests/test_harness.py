"""The one Ray Train harness (fsray.harness): long-lived worker groups serve seed runs that equal the
in-process trainer's, a crashed group's run is run again, and the dispatcher's leases, retries and
capacity timeout behave as documented."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import ray

from fsray.fsconfig import FSConfig
from fsray.harness import Dispatcher, HarnessClient, SeedRunHarness
from fsray.spec import TrainSpec
from fsray.trainer import run_mode

SPEC = TrainSpec.model_validate({
    "model": {"n_layer": 2, "d_model": 32, "head_size": 8},
    "budget": {"steps": 4, "batch_size": 16, "eval_every": 2, "warmup": 1},
    "data": {"n_train": 64, "n_val": 32, "eval_batch_size": 32},
    "wkv_backend": "torch",
})
FS_ON = FSConfig(fs_layer_start=1, alpha_init=0.0, alpha_lr=1e-2)


def _close(a: dict, b: dict, tol: float) -> None:
    assert a["mode"] == b["mode"] and a["status"] == b["status"] == "ok"
    assert (a["steps"], a["tokens"], a["init_hash"], a["data_hash"]) == (b["steps"], b["tokens"], b["init_hash"], b["data_hash"])
    for ca, cb in zip(a["curve"], b["curve"], strict=True):
        assert ca[0] == cb[0]
        assert all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(ca[1:], cb[1:]))


# ------------------------------------------------------------------ the dispatcher alone (no Train)


def _dispatcher(**kw):
    return ray.remote(num_cpus=0)(Dispatcher).remote(**kw)


def _events(d, n):
    return [ray.get(d.next_event.remote()) for _ in range(n)]


def test_a_lost_group_gives_its_run_to_another_group_and_the_retry_is_said(ray_local):
    d = _dispatcher(max_retries=1, capacity_timeout_s=60)
    client = HarnessClient(d)
    job = client.submit(3, FS_ON, tag="trial t1")
    node = ray.get_runtime_context().get_node_id()
    got = ray.get(d.next_job.remote("a", node, 111))
    assert got["seed"] == 3 and got["fs"] == FS_ON
    ray.get(d.group_lost.remote("a", "its node was lost"))
    (event,) = _events(d, 1)
    assert event["kind"] == "retry" and "seed 3 (trial t1 prompt_fs)" in event["line"]
    assert "retry 1 of 1" in event["line"]
    again = ray.get(d.next_job.remote("b", node, 222))          # any other group takes it
    assert again["id"] == got["id"]
    ray.get(d.finish.remote("b", again["id"], {"mode": "prompt_fs", "status": "ok", "token_acc": 0.5}))
    assert client.result(job)["token_acc"] == 0.5
    # a second loss past max_retries fails the run, naming why
    job2 = client.submit(4, None)
    ray.get(d.next_job.remote("b", node, 222))
    ray.get(d.group_lost.remote("b", "its fit failed"))
    ray.get(d.next_job.remote("c", node, 333))
    ray.get(d.group_lost.remote("c", "its fit failed"))
    out = client.result(job2)
    assert out["status"] == "failed" and "lost 2 times" in out["failure"] and out["lost"]


def test_a_restarted_group_gets_its_own_run_back_first(ray_local):
    d = _dispatcher()
    client = HarnessClient(d)
    first, second = client.submit(0, None), client.submit(1, None)
    node = ray.get_runtime_context().get_node_id()
    held = ray.get(d.next_job.remote("a", node, 1))
    assert held["id"] == first
    # the same group asks again without finishing: Ray Train restarted it; its run comes back first
    assert ray.get(d.next_job.remote("a", node, 2))["id"] == first
    assert ray.get(d.stats.remote())["pending"] == 1 and second == first + 1


def test_runs_fail_with_a_clear_message_when_no_group_is_ever_alive(ray_local):
    d = _dispatcher(capacity_timeout_s=1.5)
    client = HarnessClient(d)
    t0 = time.monotonic()
    out = client.run(0, None)
    assert out["status"] == "failed" and "no worker group was alive for 2 s" in out["failure"]
    assert "--resume" in out["failure"] and time.monotonic() - t0 < 30


def test_idle_groups_wait_without_polling(ray_local):
    """An idle group's request is one pending call, answered IDLE after its wait (or a job)."""
    d = _dispatcher()
    node = ray.get_runtime_context().get_node_id()
    ref = d.next_job.remote("a", node, 1, 0.5)
    assert ray.get(ref, timeout=10) == "idle"
    ref = d.next_job.remote("a", node, 1)
    time.sleep(0.5)
    assert ray.wait([ref], timeout=0)[0] == []      # still waiting, not returning to poll
    HarnessClient(d).submit(5, None)
    assert ray.get(ref, timeout=10)["seed"] == 5


# ------------------------------------------------------------------ real worker groups



@pytest.mark.slow
def test_one_group_runs_every_job_like_the_in_process_trainer(ray_local, tmp_path):
    events = []
    with SeedRunHarness(SPEC, groups=1, storage_path=str(tmp_path), on_event=events.append) as h:
        got = h.run_many([(0, None), (0, FS_ON)], tag="t")
    for r, (seed, fs) in zip(got, [(0, None), (0, FS_ON)]):
        _close(r, run_mode(SPEC, seed, fs), tol=1e-6)
    assert sorted(e["mode"] for e in events if e["kind"] == "done") == ["no_fs", "prompt_fs"]


@pytest.mark.slow
def test_two_workers_match_the_in_process_run(ray_local, tmp_path):
    with SeedRunHarness(SPEC, groups=1, workers=2, storage_path=str(tmp_path)) as h:
        got = h.run(1, FS_ON)
    _close(got, run_mode(SPEC, 1, FS_ON), tol=1e-4)


@pytest.mark.slow
def test_a_killed_worker_groups_run_is_run_again(ray_local, tmp_path):
    """SIGKILL of the group's worker while it trains: Ray Train restarts the group, which gets its
    run back; the result equals an undisturbed run and the retry was said."""
    slow = SPEC.model_copy(update={"budget": SPEC.budget.model_copy(update={"steps": 60, "eval_every": 30})})
    events = []
    with SeedRunHarness(slow, groups=1, storage_path=str(tmp_path), on_event=events.append) as h:
        job = h.submit(2, FS_ON, tag="trial k")
        deadline = time.monotonic() + 120
        leases = {}
        while not leases and time.monotonic() < deadline:
            leases = ray.get(h.dispatcher.leases_now.remote())
            time.sleep(0.2)
        (lease,) = leases.values()
        time.sleep(1.0)                                   # let it train a little
        os.kill(lease["pid"], signal.SIGKILL)
        got = h.result(job)
    _close(got, run_mode(slow, 2, FS_ON), tol=1e-6)
    retries = [e for e in events if e["kind"] == "retry"]
    assert len(retries) == 1 and "seed 2 (trial k prompt_fs)" in retries[0]["line"]
    assert "restarted" in retries[0]["line"]
