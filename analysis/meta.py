"""Across tasks: a random-effects summary of FS's effect over tasks (statsmodels' meta-analysis).

Each task contributes one effect estimate (a mean paired delta, ``fs - no_fs``) and its variance
(``s^2 / n``, the squared standard error of the mean over its seeds). ``combine_effects``
(``statsmodels.stats.meta_analysis``) pools them under the random-effects model
``effect_task = mu + u_task + e_task``, ``u ~ N(0, tau^2)``, with tau^2 estimated by Paule-Mandel
(``pm``, the default: recommended for few studies) or DerSimonian-Laird (``dl``). Reported: the
pooled effect ``mu`` with its interval, tau^2, I^2 (the share of the spread between tasks that is
not seed noise, floored at 0), Cochran's Q with its chi-square p, and the prediction interval for
the effect on a new task, ``mu +- t_{k-2} sqrt(tau^2 + se(mu)^2)`` (Higgins, Thompson & Spiegelhalter
2009; it needs 3 tasks).

Two summaries:

* a configuration's effect over the tasks it was run on (the same FS knobs: ``analysis.contrast``'s
  FS side of a row), for every configuration run on two tasks or more;
* "FS as configured": one estimate per task, the mean over that task's configurations of their mean
  deltas (variance: the sum of their variances over the count squared, configurations being
  separate runs), i.e. the effect of the average configuration tried on the task.

A task with fewer than 2 seeds has no variance and is left out (listed). Tasks are the report's task
labels: an ordering or prompt length of a task is a task of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects

from .contrast import factors
from .errors import AnalysisInputError

METHODS = {"pm": "Paule-Mandel", "dl": "DerSimonian-Laird"}
AS_CONFIGURED = "FS as configured"


@dataclass
class MetaResult:
    what: str                       # AS_CONFIGURED or a configuration's label
    stage: str
    method: str                     # pm | dl
    tasks: pd.DataFrame             # task, effect, se, n, ci_lo, ci_hi, weight (random effects)
    k: int
    mu: float
    se: float
    ci_lo: float
    ci_hi: float
    tau2: float
    i2: float
    q: float
    q_p: float
    pi_lo: float | None             # prediction interval for a new task (k >= 3)
    pi_hi: float | None
    left_out: list[str] = field(default_factory=list)

    def line(self, metric: str) -> str:
        lvl = "" if self.pi_lo is None else f"[{self.pi_lo:+.4f}, {self.pi_hi:+.4f}]"
        return (f"{self.what} [{self.stage}] over {self.k} tasks: pooled d_{metric} {self.mu:+.4f} "
                f"[{self.ci_lo:+.4f}, {self.ci_hi:+.4f}], tau^2 {self.tau2:.3g} "
                f"(tau {math.sqrt(max(self.tau2, 0.0)):.4f}), I^2 {100 * self.i2:.0f}%, "
                f"Q {self.q:.2f} (df {self.k - 1}, p {self.q_p:.3g}); a new task: "
                + (lvl if lvl else "— (needs 3 tasks)"))

    def row(self) -> dict:
        return {"what": self.what, "stage": self.stage, "method": self.method, "k": self.k,
                "mu": self.mu, "se": self.se, "ci_lo": self.ci_lo, "ci_hi": self.ci_hi,
                "tau2": self.tau2, "i2": self.i2, "q": self.q, "q_p": self.q_p,
                "pi_lo": self.pi_lo, "pi_hi": self.pi_hi,
                "tasks": " ".join(str(t) for t in self.tasks["task"])}


def pool(effects, variances, names, *, method: str = "pm", level: float = 0.95,
         what: str = AS_CONFIGURED, stage: str = "", n=None) -> MetaResult:
    """Random-effects pooling of per-task ``effects`` with sampling ``variances``."""
    if method not in METHODS:
        raise AnalysisInputError(f"--tau2 must be one of {sorted(METHODS)}, got {method!r}")
    eff, var = np.asarray(effects, float), np.asarray(variances, float)
    if eff.size < 2:
        raise AnalysisInputError("a random-effects summary needs 2 tasks or more")
    # A task whose seeds all agree has no sampling variance: floor it at a tiny share of the rest
    # (its weight would otherwise be infinite).
    floor = max(float(np.max(var)) * 1e-6, 1e-12)
    var = np.maximum(var, floor)
    alpha = 1.0 - level
    res = combine_effects(eff, var, method_re=method, row_names=list(names), alpha=alpha)
    frame = res.summary_frame(alpha=alpha)
    re = frame.loc["random effect"]
    k = int(eff.size)
    mu, se = float(re["eff"]), float(re["sd_eff"])
    tau2 = float(max(res.tau2, 0.0))
    pi_lo = pi_hi = None
    if k >= 3:
        half = float(sps.t.ppf(1 - alpha / 2, k - 2)) * math.sqrt(tau2 + se ** 2)
        pi_lo, pi_hi = mu - half, mu + half
    tasks = pd.DataFrame({"task": list(names), "effect": eff, "se": np.sqrt(var),
                          "n": list(n) if n is not None else [None] * k,
                          "ci_lo": frame["ci_low"].to_numpy()[:k],
                          "ci_hi": frame["ci_upp"].to_numpy()[:k],
                          "weight": frame["w_re"].to_numpy()[:k]})
    q = float(res.q)
    return MetaResult(what=what, stage=stage, method=method, tasks=tasks, k=k, mu=mu, se=se,
                      ci_lo=float(re["ci_low"]), ci_hi=float(re["ci_upp"]), tau2=tau2,
                      i2=float(max(res.i2, 0.0)), q=q, q_p=float(sps.chi2.sf(q, k - 1)),
                      pi_lo=pi_lo, pi_hi=pi_hi)


def _cells(data: pd.DataFrame, dcol: str) -> pd.DataFrame:
    """Per (stage, task, configuration): n, mean, variance of the mean, FS-side identity."""
    rows = []
    d = data[data[dcol].notna()]
    ident = [repr(sorted(factors(r)[0].items())) for r in d.to_dict(orient="records")]
    d = d.assign(_fs=ident)
    for (stage, task, h), g in d.groupby(["stage", "task", "config_hash"], sort=False):
        x = g[dcol].to_numpy(float)
        rows.append({"stage": stage, "task": task, "config_hash": h, "fs": g["_fs"].iloc[0],
                     "config": str(g["config"].iloc[0]), "n": x.size, "mean": float(x.mean()),
                     "var": float(x.var(ddof=1) / x.size) if x.size >= 2 else math.nan})
    return pd.DataFrame(rows)


def _per_task(cells: pd.DataFrame) -> pd.DataFrame:
    """One estimate per task: the mean of its configurations' means; variance: the sum of theirs
    over the count squared (separate runs)."""
    return cells.groupby("task", sort=False).agg(
        effect=("mean", "mean"), var=("var", lambda v: float(v.sum()) / len(v) ** 2),
        n=("n", "sum"))


def build(data: pd.DataFrame, *, metric: str = "acc", method: str = "pm",
          level: float = 0.95) -> list[MetaResult]:
    """Every across-task summary ``data`` allows (see the module doc); raises AnalysisInputError
    when no stage has two tasks with a spread."""
    dcol = f"d_{metric}"
    cells = _cells(data, dcol)
    out: list[MetaResult] = []
    if cells.empty:
        raise AnalysisInputError("--across-tasks: no paired seed")
    for stage, sc in cells.groupby("stage", sort=False):
        usable = sc[sc["n"] >= 2]
        short = sorted(set(sc["task"]) - set(usable["task"]))
        per_task = _per_task(usable)
        if len(per_task) >= 2:
            r = pool(per_task["effect"], per_task["var"], per_task.index, method=method,
                     level=level, what=AS_CONFIGURED, stage=stage, n=per_task["n"])
            r.left_out = [f"{t}: fewer than 2 seeds per configuration" for t in short]
            out.append(r)
        for _, g in usable.groupby("fs", sort=False):
            if g["task"].nunique() < 2:
                continue
            labels = list(dict.fromkeys(g["config"]))
            what = "configuration " + ", ".join(labels[:3]) + (" …" if len(labels) > 3 else "")
            if len(labels) > 1:
                what += " (the same FS knobs)"
            per_task = _per_task(g)
            out.append(pool(per_task["effect"], per_task["var"], per_task.index, method=method,
                            level=level, what=what, stage=stage, n=per_task["n"]))
    if not out:
        raise AnalysisInputError("--across-tasks: no stage has two tasks with 2 or more seeds "
                                 "(a task's effect needs a spread to be weighed)")
    return out
