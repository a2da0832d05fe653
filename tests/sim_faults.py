"""Faults and a run log for the simulated trainable, injected by the tests themselves.

``fsray.search.simulated`` never fails and logs nothing. A test that needs a crashing, diverging
(NaN) or out-of-memory seed run, or a line per training run made (to check that nothing is trained
twice), wraps the module's ``baseline_run`` / ``fs_run`` with this module:

* in the test's own process (``evaluate_config`` without Ray): ``patch(monkeypatch, faults, run_log)``;
* in a search through Ray, whose seed runs happen in the driver *and* in Ray worker processes (a
  monkeypatch in the test process reaches neither): run the driver as

      python tests/sim_faults.py SPEC.json tune SPACE.yaml --out DIR [--resume]

  It installs the wrappers in itself, then starts Ray with ``install_from_env`` as the job's
  ``worker_process_setup_hook`` (Ray's runtime_env), so every Ray worker installs them before it
  runs anything, then runs the fsray CLI (which finds Ray started and uses it).

SPEC.json: ``{"faults": [{"when": {knob: value, ...}, "kind": "raise" | "nan" | "oom",
"at_seed": int | null}, ...], "run_log": path | null}``. A fault hits the FS run of every
configuration whose knobs match ``when``, on ``at_seed`` only (on every seed when null). The run log
gets ``no_fs SEED`` and ``prompt_fs CONFIG_HASH SEED`` lines, one per run made.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

SPEC_ENV = "FSRAY_TEST_SIM_FAULTS"   # path of the SPEC.json the Ray workers read
HERE = Path(__file__).resolve().parent


class SimulatedOOM(MemoryError):
    """What an injected out-of-memory failure raises (stands in for torch.OutOfMemoryError)."""


def write_spec(path: str | Path, faults: list[dict] = (), run_log: str | Path | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"faults": list(faults), "run_log": str(run_log) if run_log else None}))
    return path


def _log(run_log: str | None, line: str) -> None:
    if run_log:
        with open(run_log, "a") as fh:
            fh.write(line + "\n")


def wrappers(faults: list[dict] = (), run_log: str | None = None):
    """``(baseline_run, fs_run)``: the simulated module's own functions, logged and faulted."""
    from fsray.fsconfig import config_hash
    from fsray.search import simulated

    # the module's own functions, even when a wrapper is installed already
    real_baseline = getattr(simulated.baseline_run, "__wrapped__", simulated.baseline_run)
    real_fs = getattr(simulated.fs_run, "__wrapped__", simulated.fs_run)
    faults = [dict(f) for f in faults]

    def baseline_run(sim, seed, options=None):
        _log(run_log, f"no_fs {seed}")
        return real_baseline(sim, seed, options)

    def fs_run(sim, cfg, seed, baseline, options=None):
        _log(run_log, f"prompt_fs {config_hash(cfg)} {seed}")
        values = cfg.model_dump()
        for fault in faults:
            if (all(values.get(k) == v for k, v in fault["when"].items())
                    and fault.get("at_seed") in (None, seed)):
                kind = fault.get("kind", "raise")
                if kind == "raise":
                    raise RuntimeError(f"simulated crash of {cfg.label()} on seed {seed}")
                if kind == "oom":
                    raise SimulatedOOM(f"simulated out of memory of {cfg.label()} on seed {seed}")
                if kind == "nan":   # a diverged run: metrics are NaN, the caller must notice
                    nan = math.nan
                    run = real_fs(sim, cfg, seed, baseline, options)
                    return {**run, "token_acc": nan, "loss": nan, "seq_acc": nan}
                raise ValueError(f"unknown fault kind {kind!r}")
        return real_fs(sim, cfg, seed, baseline, options)

    baseline_run.__wrapped__, fs_run.__wrapped__ = real_baseline, real_fs
    return baseline_run, fs_run


def patch(monkeypatch, faults: list[dict] = (), run_log: str | Path | None = None) -> None:
    """Install the wrappers in this process for one test (undone by ``monkeypatch``)."""
    from fsray.search import simulated

    baseline_run, fs_run = wrappers(faults, str(run_log) if run_log else None)
    monkeypatch.setattr(simulated, "baseline_run", baseline_run)
    monkeypatch.setattr(simulated, "fs_run", fs_run)


def install_from_env() -> None:
    """Install the wrappers of ``$FSRAY_TEST_SIM_FAULTS`` in this process (Ray's setup hook)."""
    from fsray.search import simulated

    spec = json.loads(Path(os.environ[SPEC_ENV]).read_text())
    simulated.baseline_run, simulated.fs_run = wrappers(spec.get("faults") or [], spec.get("run_log"))


def main(argv: list[str]) -> int:
    spec, *fsray_args = argv
    os.environ[SPEC_ENV] = str(Path(spec).resolve())
    # Ray workers inherit this environment: they find this module and its spec
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    install_from_env()   # the driver trains baselines and confirmation runs itself
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": "sim_faults.install_from_env"})
    from fsray.cli import main as fsray_main

    try:
        return fsray_main(fsray_args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
