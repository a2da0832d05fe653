"""Experiment tracking of a search through Ray Tune's own logger callbacks.

``fsray tune --mlflow URI``: ``ray.air.integrations.mlflow.MLflowLoggerCallback`` logs one MLflow
run per trial (the trial's FS knobs as params; what the trial reports -- objective, mean delta,
spread, interval bounds, seeds -- as metrics, one step per seed); at the end the search's HTML
report and summary are logged to a closing run of the same experiment (``log_report``, MLflow's
own client). ``fsray tune --wandb PROJECT``: ``ray.air.integrations.wandb.WandbLoggerCallback``
the same way, offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads it later).
No logging client is written here: these are the trackers' and Ray's APIs.
"""

from __future__ import annotations

import os
from pathlib import Path

from fsray.errors import UsageError

EXPERIMENT_TAG = "fsray.search"


def logger_callbacks(name: str, run_dir: Path, mlflow_uri: str | None = None,
                     wandb_project: str | None = None) -> list:
    """The Tune logger callbacks the flags ask for (checked here: a missing package is one line)."""
    out = []
    tags = {EXPERIMENT_TAG: name, "fsray.run_dir": str(run_dir)}
    if mlflow_uri:
        try:
            from ray.air.integrations.mlflow import MLflowLoggerCallback
            import mlflow  # noqa: F401 - the callback imports it late; say it is missing now
        except ImportError:
            raise UsageError("--mlflow needs MLflow: pip install 'fsray[mlflow]'") from None
        _mlflow_experiment(mlflow_uri, name, run_dir)
        out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=name, tags=tags))
    if wandb_project:
        try:
            from ray.air.integrations.wandb import WandbLoggerCallback
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--wandb needs Weights & Biases: pip install wandb") from None
        out.append(WandbLoggerCallback(project=wandb_project, group=name,
                                       mode=os.environ.get("WANDB_MODE", "offline")))
    return out


def _mlflow_experiment(uri: str, name: str, run_dir: Path) -> str:
    """The search's MLflow experiment (created when new). With a local store (a path, file: or
    sqlite:) its artifacts go in the run directory (``mlflow-artifacts/``), not in whatever
    directory the search was started from; a tracking server keeps its own artifact store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 - a store MLflow refuses is bad input, said in one line
        raise UsageError(f"--mlflow {uri}: {str(exc).splitlines()[0]}") from None
    if exp is not None:
        return exp.experiment_id
    local = "://" not in uri or uri.startswith(("file:", "sqlite:"))
    where = (run_dir / "mlflow-artifacts").resolve().as_uri() if local else None
    return client.create_experiment(name, artifact_location=where)


def log_report(mlflow_uri: str, name: str, run_dir: Path, summary: dict) -> str:
    """The search's closing run in its MLflow experiment: the HTML report and summary.json as
    artifacts, the best configuration's paired statistics as metrics. Returns the run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp_id = _mlflow_experiment(mlflow_uri, name, run_dir)
    run = client.create_run(exp_id, run_name=f"{name}: report",
                            tags={EXPERIMENT_TAG: name, "fsray.run_dir": str(run_dir)})
    rid = run.info.run_id
    best = summary.get("best") or {}
    metrics = {f"best_{k}": best.get(k) for k in ("objective", "mean", "std", "lo", "hi", "n")}
    counts = summary.get("counts") or {}
    metrics.update({k: counts.get(k) for k in ("configs", "runs_made", "racing_runs_saved")})
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            client.log_metric(rid, k, float(v))
    if best.get("label"):
        client.log_param(rid, "best_config", str(best["label"])[:500])
    for f in ("report.html", "summary.json"):
        if (run_dir / f).exists():
            client.log_artifact(rid, str(run_dir / f))
    client.set_terminated(rid)
    return rid
