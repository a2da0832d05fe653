"""Experiment tracking by flag (issue 22): ``fsray tune --mlflow URI`` logs through Ray Tune's own
MLflowLoggerCallback -- one MLflow run per trial with the FS knobs as params and the trial's paired
statistics as metrics -- and the HTML report as an artifact of a closing run. Checked on a local
MLflow file store after a small simulated search."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

mlflow = pytest.importorskip("mlflow", reason="MLflow is in the test extra (fsray[mlflow] for users)")

REPO = Path(__file__).resolve().parents[1]


def test_mlflow_logs_trials_and_the_report(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps its file store only on request (README: prefer sqlite:///...)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    raw = yaml.safe_load((REPO / "search_spaces" / "simulated.yaml").read_text())
    raw["tuner"].update({"trials": 4, "concurrency": 2})
    raw["seeds"] = {"count": 3, "confirm": 0}
    raw["baseline_cache"] = str(tmp_path / "cache")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    store = tmp_path / "mlruns"
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([sys.executable, "-m", "fsray.cli", "tune", str(space), "--out", str(out),
                          "--mlflow", store.as_uri()], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"MLflow: experiment 'simulated' at {store.as_uri()}" in res.stdout

    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("simulated")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.info.run_name.startswith("_trial_")]
    report, = [r for r in runs if r.info.run_name == "simulated: report"]
    assert len(trials) == 4
    for r in trials:
        # the searched knobs as params, the paired statistics as metrics
        assert set(raw["knobs"]) <= set(r.data.params)
        assert {"objective", "mean_delta", "spread", "lower", "upper", "n_seeds"} <= set(r.data.metrics)
        assert r.data.metrics["lower"] <= r.data.metrics["mean_delta"] <= r.data.metrics["upper"] \
            or r.data.metrics.get("noop") == 1.0
        assert r.data.tags.get("fsray.search") == "simulated"
    # the HTML report (and summary) as artifacts of the closing run, the best's numbers as metrics
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"report.html", "summary.json"} <= names
    html = Path(mlflow.artifacts.download_artifacts(run_id=report.info.run_id,
                                                    artifact_path="report.html",
                                                    tracking_uri=store.as_uri(),
                                                    dst_path=str(tmp_path / "dl"))).read_text()
    assert html == (out / "report.html").read_text()
    assert "best_mean" in report.data.metrics and "best_config" in report.data.params
    # nothing written where the search was started
    assert list(cwd.iterdir()) == []
