"""The statistics table of the stability report: one summary row per configuration.

``build(loaded, options)`` turns a ``loaders.Loaded`` table into a ``Report``: one summary row per
(stage, task, configuration) with the statistics of ``analysis.stats.summarize``, the adjusted
p-values of ``analysis.multiplicity`` (family = the configurations of one stage and task), the
winner's-curse flag, the breakthrough split of ``analysis.bimodal`` where runs say whether they
learned, and the verdict of ``analysis.verdict`` (helps / hurts / no effect / undecided / no-op, with
the seeds that would decide it) plus one family statement per stage and task. Issue 20 adds, per
configuration: borrowed variance (``analysis.shrinkage``: the interval ``ci_lo``/``ci_hi`` and
``t_p`` are the moderated t of the family prior where one applies, ``own_ci_lo``/``own_ci_hi`` the
configuration's own; ``variance``, ``prior_df``), the stopping-aware estimate of settled
configurations (``estimate``, ``est_lo``, ``est_hi``) and the variance split of the token-accuracy
delta (``split_*``, ``analysis.evalsplit``). Rendering lives in
``analysis.renderers``; ``analysis.report`` gathers both. No statistic is computed here: this module
groups, joins and orders.

Provably no-op configurations (records of status "noop", or every delta exactly 0) are listed as
A/A evidence, sorted after the real configurations, and never ranked as a family's best.

Missing numbers are None in the summary and print as "—" (null in JSON, empty in CSV): a NaN never
reaches a report as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import bimodal, evalsplit, multiplicity, shrinkage, stats, verdict
from .errors import AnalysisInputError
from .loaders import Loaded
from .schema import METRIC_TEXT

METRICS = METRIC_TEXT   # the metrics by short name (analysis.schema)
FORMATS = ("table", "md", "html", "csv", "json")
DASH = "—"
# Knob importance (Optuna's PED-ANOVA) contrasts the top IMPORTANCE_TARGET_QUANTILE of a search's
# configurations with all of them; Optuna's guidance is at least 5 configurations in that top set,
# so at least 50 at its default quantile of 0.1. With fewer it is noise (4 configurations give
# 1.00 / 0.00 / 0.00 / 0.00): the report says how many it needs instead of printing it.
IMPORTANCE_TARGET_QUANTILE = 0.1
IMPORTANCE_MIN_TOP = 5
IMPORTANCE_MIN_CONFIGS = math.ceil(IMPORTANCE_MIN_TOP / IMPORTANCE_TARGET_QUANTILE - 1e-9)
STAGE_ORDER = {"selection": 0, "confirmation": 1, "train": 2, "import": 3}
# Columns of the breakthrough split carried into the summary, prefixed "bt_"; bt_metric names the
# run metric that decided "learned" and that the split's deltas are measured on.
BT_COLUMNS = ("metric", "both", "only_fs", "only_base", "neither", "base_rate", "fs_rate", "rate_change",
              "rate_lo", "rate_hi", "mcnemar_p", "quality_mean", "quality_lo", "quality_hi",
              "median_lo", "median_hi", "iqm", "iqm_lo", "iqm_hi", "bimodal", "advice")


@dataclass
class ReportOptions:
    metric: str = "acc"                   # acc | loss | seq
    group_by: tuple[str, ...] = ("task", "config")
    interval: str = "t"                   # t | bca | percentile
    level: float = 0.95
    effect: float | None = None           # effect for seeds_needed (default: the observed mean)
    learned_above: float | None = None    # threshold on the run metric that counts as learned
    n_resamples: int = 10_000
    max_plot_configs: int = 40
    delta: float = verdict.DEFAULT_DELTA  # smallest effect of interest of the verdicts
    horizon: int = verdict.DEFAULT_HORIZON  # seeds a configuration's sequential design may reach
    design: str = verdict.DEFAULT_DESIGN  # sprt | spending: the settling design the verdicts replay
    borrow: bool = True                   # borrowed variance: a variance prior per family

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise AnalysisInputError(f"--metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.interval not in stats.METHODS:
            raise AnalysisInputError(f"--interval must be one of {stats.METHODS}, got {self.interval!r}")
        if self.effect is not None and not (math.isfinite(self.effect) and self.effect != 0):
            raise AnalysisInputError(f"--effect must be a finite non-zero number, got {self.effect}")
        if self.learned_above is not None and not (
                isinstance(self.learned_above, (int, float)) and 0.0 <= self.learned_above < 1.0):
            # Runs are judged on token or sequence accuracy (for --metric loss too): both in [0, 1].
            raise AnalysisInputError(
                f"--learned-above must lie in [0, 1) (token and sequence accuracy are fractions), "
                f"got {self.learned_above}")
        if not (isinstance(self.level, (int, float)) and 0.5 < self.level < 1.0):
            # The verdicts' equivalence test uses a 1 - 2 (1 - level) interval.
            raise AnalysisInputError(f"--level must lie in (0.5, 1), got {self.level}")
        try:
            self.delta = verdict.check_delta(self.delta)
        except AnalysisInputError:
            raise AnalysisInputError(f"--delta must be a positive number, got {self.delta!r}") from None
        if self.design not in verdict.DESIGNS:
            raise AnalysisInputError(f"--design must be one of {verdict.DESIGNS}, got {self.design!r}")
        if self.metric != "loss" and self.delta >= 1.0:
            # token and sequence accuracy lie in [0, 1]: an effect of 1 or more can never be seen
            raise AnalysisInputError(f"--delta must lie in (0, 1) for --metric {self.metric} (an accuracy), "
                                     f"got {self.delta:g}")
        if (isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer))
                or self.horizon < verdict.MIN_SEEDS):
            raise AnalysisInputError(f"--max-seeds must be an integer >= {verdict.MIN_SEEDS}, "
                                     f"got {self.horizon!r}")


@dataclass
class Report:
    options: ReportOptions
    summary: pd.DataFrame                 # one row per configuration, sorted as printed
    data: pd.DataFrame                    # the paired seeds the statistics used (status ok)
    excluded: pd.DataFrame                # failed / noop records (counted and listed)
    families: list[dict] = field(default_factory=list)   # per (stage, task): winner's curse
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)    # per configuration: n < 2, all zero, ...
    importance: dict | None = None
    keys: list[str] = field(default_factory=list)        # columns a configuration is grouped on
    shown: list[str] = field(default_factory=list)       # columns a configuration is shown by
    contrasts: list = field(default_factory=list)        # analysis.contrast.Contrasts (--contrast)
    meta: list = field(default_factory=list)             # analysis.meta.MetaResult (--across-tasks)

    def ids_by_hash(self) -> dict:
        """config hash -> the short id ("C3") the report's tables name it by: what the search's
        closing table (``fsray.commands.tune.render_summary``) prints beside its own rows, so both
        tables name a configuration alike."""
        s = self.summary
        if "config_hash" not in s.columns:
            return {}
        return {h: cid for h, cid in zip(s["config_hash"], s["config_id"])}

    @property
    def exit_code(self) -> int:
        """0: everything read; 1: something skipped but a report was produced."""
        return 1 if (self.problems or self.skipped) else 0


# --------------------------------------------------------------------------------------------------
# building


def group_columns(options: ReportOptions, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns grouped on, columns shown). The stage is always a key (selection and confirmation
    are reported apart); a configuration is grouped by its hash and shown by its label."""
    keys, shown = ["stage"], ["stage"]
    for c in options.group_by:
        if c == "stage":
            continue
        if c not in df.columns or c in ("d_acc", "d_loss", "d_seq"):
            raise AnalysisInputError(f"--group-by {c!r}: not a column of the results; have "
                                     f"{[x for x in df.columns if x not in ('d_acc', 'd_loss', 'd_seq')]}")
        keys.append("config_hash" if c == "config" else c)
        shown.append(c)
    return keys, shown


def _learned_flags(data: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Per seed: whether each run learned (``bl``/``fl``) and the level that splits the clusters
    (``bt_chance``/``bt_margin``), from --learned-above, the recorded flags, or chance + margin."""
    m = "acc" if options.metric == "loss" else options.metric
    out = pd.DataFrame(index=data.index)
    if options.learned_above is None:
        # Recorded flags judged the metric the trainer names (learned_metric): split on that one.
        per_row = data["learned_metric"].where(data["learned_metric"].isin(["acc", "seq"]), m)
    else:
        per_row = pd.Series(m, index=data.index)
    is_seq = (per_row == "seq").to_numpy()
    pick = lambda side: pd.Series(  # noqa: E731
        np.where(is_seq, pd.to_numeric(data[f"{side}_seq"], errors="coerce"),
                 pd.to_numeric(data[f"{side}_acc"], errors="coerce")), index=data.index)
    out["bt_base"], out["bt_fs"] = pick("base"), pick("fs")
    out["bt_metric"] = per_row
    if options.learned_above is not None:
        thr = float(options.learned_above)
        out["bl"], out["fl"] = out["bt_base"] > thr, out["bt_fs"] > thr
        out["bt_chance"], out["bt_margin"] = thr, 0.0
    else:
        chance = pick("chance")  # chance_acc / chance_seq of each row's metric
        margin = pd.to_numeric(data["learned_margin"], errors="coerce").fillna(0.0)
        rec_b, rec_f = data["base_learned"], data["fs_learned"]
        have_rec = rec_b.notna() & rec_f.notna()
        from_chance = chance.notna() & ~have_rec & out["bt_base"].notna() & out["bt_fs"].notna()
        out["bl"], out["fl"] = rec_b.where(have_rec), rec_f.where(have_rec)
        out.loc[from_chance, "bl"] = out.loc[from_chance, "bt_base"] > (chance + margin)[from_chance]
        out.loc[from_chance, "fl"] = out.loc[from_chance, "bt_fs"] > (chance + margin)[from_chance]
        out["bt_chance"], out["bt_margin"] = chance, margin
    out["bt_known"] = out["bl"].notna() & out["fl"].notna() & out["bt_base"].notna() & out["bt_fs"].notna()
    return out


def _breakthrough(data: pd.DataFrame, flags: pd.DataFrame, keys: list[str],
                  options: ReportOptions) -> pd.DataFrame | None:
    if not flags["bt_known"].any():
        return None
    d = pd.concat([data[keys], flags], axis=1)
    # A configuration is split only when every seed of it says whether it learned.
    complete = d.groupby(keys, sort=False, dropna=False)["bt_known"].transform("all")
    d = d[complete].copy()
    if d.empty:
        return None
    d["bl"], d["fl"] = d["bl"].astype(bool), d["fl"].astype(bool)
    has_chance = d.groupby(keys, sort=False, dropna=False)["bt_chance"].transform(
        lambda s: s.notna().all())
    parts = []
    for with_chance, part in d.groupby(has_chance, sort=False):
        parts.append(bimodal.summarize_breakthrough(
            part, keys, "bt_base", "bt_fs",
            chance="bt_chance" if with_chance else None,
            margin="bt_margin" if with_chance else 0.0,
            base_learned_col="bl", fs_learned_col="fl", level=options.level,
            n_resamples=options.n_resamples))
    bt = pd.concat(parts, ignore_index=True)
    bt = bt.rename(columns={c: f"bt_{c}" for c in bt.columns if c not in keys})
    metric = d.groupby(keys, sort=False, dropna=False)["bt_metric"].first().reset_index()
    return bt.merge(metric, on=keys, how="left")


def _family_adjust(summary: pd.DataFrame, options: ReportOptions) -> list[dict]:
    """Holm / BH within each (stage, task) family, the winner's curse on its top configuration and
    the family's verdict statement. No-op configurations are left out of all three (A/A evidence:
    never adjusted against, never the best)."""
    higher_is_better = options.metric != "loss"
    for col in ("sign_p", "wilcoxon_p"):
        summary[f"{col}_holm"] = None
        summary[f"{col}_bh"] = None
    summary["winners_curse"] = False
    summary["family_size"] = 0
    families = []
    fam_cols = family_columns(summary)
    for fam_key, fam in summary.groupby(fam_cols, sort=False):
        stage = fam_key[0] if isinstance(fam_key, tuple) else fam_key
        task = fam_key[1] if isinstance(fam_key, tuple) and len(fam_key) > 1 else None
        real = fam[~fam["noop"].astype(bool)]
        idx = real.index
        summary.loc[fam.index, "family_size"] = len(idx)
        for col in ("sign_p", "wilcoxon_p"):
            if not len(idx):
                continue
            p = real[col].to_numpy(dtype=object)
            summary.loc[idx, f"{col}_holm"] = _objects(multiplicity.holm(p))
            summary.loc[idx, f"{col}_bh"] = _objects(multiplicity.benjamini_hochberg(p))
        entry = {"stage": stage, "task": task, "n_configs": int(len(idx)),
                 "n_noop": int(len(fam) - len(idx)), "n_compared": 0, "top": None, "flag": False,
                 "inflation_se": 0.0, "message": "",
                 "statement": _statement(fam, stage, task, options)}
        # Configurations with a spread are ranked; a one-seed search (the best of K on seed 0, the
        # plainest winner's curse) is ranked on its single seeds.
        ranked = real[real["n"] >= 2] if (real["n"] >= 2).any() else real[real["n"] >= 1]
        if len(ranked) == 0:
            families.append(entry)
            continue
        score = "mean" if higher_is_better else "neg_mean"
        if score == "neg_mean":
            ranked = ranked.assign(neg_mean=-pd.to_numeric(ranked["mean"]))
        # Only a gain is a claim to confirm: a best that is no improvement raises no flag.
        claims = pd.to_numeric(ranked[score]).max() > 0
        same_seeds = stage != "confirmation" and claims and _seeds_overlap(ranked)
        wc = multiplicity.winners_curse(ranked, selected_on_same_seeds=same_seeds, score_col=score)
        if wc["flag"]:
            summary.loc[wc["top"], "winners_curse"] = True
        entry.update({
            "n_compared": wc["n_compared"],
            "top": str(summary.loc[wc["top"], "config"]) if "config" in summary.columns
            else str(wc["top"]), "flag": wc["flag"], "inflation_se": wc["inflation_se"],
            "message": wc["message"],
        })
        families.append(entry)
    return families


def _statement(fam: pd.DataFrame, stage: str, task, options: ReportOptions) -> str:
    verdicts = {str(r.get("config", i)): r["_verdict"] for i, r in fam.iterrows()}
    means = {str(r.get("config", i)): (r["mean"] if options.metric != "loss" else -r["mean"])
             for i, r in fam.iterrows() if r["mean"] is not None}
    return verdict.family_statement(verdicts, options.delta, f"{task or 'all'} [{stage}]", means)


# --------------------------------------------------------------------------------------------------
# verdicts

VERDICT_COLUMNS = ("verdict", "verdict_ge_delta", "verdict_label", "verdict_n", "verdict_lo",
                   "verdict_hi", "verdict_basis", "seeds_to_decide", "would_decide", "verdict_note",
                   "looks", "verdict_design", "verdict_prior_df", "estimate", "est_lo", "est_hi")


def _noop_rows(excluded: pd.DataFrame, dcol: str, keys: list[str], options: ReportOptions):
    """Summary rows of configurations recorded as provably no-op (status "noop") and never run:
    every delta is 0 by construction."""
    noop = excluded[excluded["status"] == "noop"].copy()
    if noop.empty:
        return None
    noop[dcol] = 0.0
    return noop


def family_columns(summary: pd.DataFrame) -> list[str]:
    """The columns that name a family of configurations compared together: stage and task."""
    return ["stage", "task"] if "task" in summary.columns else ["stage"]


def _verdicts(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str],
              options: ReportOptions) -> pd.DataFrame:
    """The verdict of every summary row (analysis.verdict), with the basis of a "helps": fresh
    seeds (confirmation), Bonferroni over the K configurations a search stage chose from
    (selection, or a confirmation that reuses selection seeds), or as measured (train, import)."""
    dcol = f"d_{options.metric}"
    level_alpha = round(1.0 - options.level, 12)
    fam_cols = family_columns(summary)
    real = summary[~summary["noop"].astype(bool) & (summary["n"] >= 1)]
    k_of = real.groupby(fam_cols, sort=False).size().to_dict()
    reuse = _reused_seeds(data)
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in data.groupby(keys, sort=False, dropna=False)}
    out = []
    for _, r in summary.iterrows():
        key = tuple(r[k] for k in keys)
        g = groups.get(key)
        fam_key = tuple(r[c] for c in fam_cols)
        fam_key = fam_key if len(fam_key) > 1 else fam_key[0]
        stage = r["stage"]
        selected_from, basis = 1, verdict.AS_MEASURED
        if stage == "selection":
            selected_from = int(k_of.get(fam_key, 1))
            basis = f"Bonferroni over {selected_from}" if selected_from > 1 else "single configuration"
        elif stage == "confirmation":
            basis = verdict.FRESH
            if (r.get("task"), r.get("config_hash")) in reuse:
                sel_key = ("selection", r["task"]) if len(fam_cols) > 1 else "selection"
                selected_from = max(int(k_of.get(sel_key, 1)), 1)
                basis = (f"Bonferroni over {selected_from} (confirmation reuses selection seeds)"
                         if selected_from > 1 else "reuses selection seeds")
        # Curtailment is a settling loop's stopping choice: flagged only where the records say a
        # settling ran with it (older settlings and as-measured seeds: never).
        horizon, kind, curtail = options.horizon, options.design, 0.0
        deltas, looks = [], None
        if g is not None:
            rounds = pd.to_numeric(g["settle_round"], errors="coerce")
            order = np.argsort(rounds.fillna(-1).to_numpy(), kind="stable")
            deltas = pd.to_numeric(g[dcol], errors="coerce").to_numpy(float)[order]
            if rounds.notna().any():
                looks = verdict.looks_from_rounds(
                    [None if np.isnan(x) else int(x) for x in rounds.to_numpy(float)[order]])
            hz = pd.to_numeric(g["settle_horizon"], errors="coerce").dropna()
            if len(hz):
                horizon = int(hz.max())
            ran = [x for x in g["settle_design"] if x in verdict.DESIGNS]
            kind = ran[0] if ran else options.design   # replay the design a settling ran
            cut = pd.to_numeric(g["settle_curtail"], errors="coerce").dropna()
            if len(cut):
                curtail = float(cut.iloc[-1])
        design = verdict.Design(delta=options.delta, alpha=level_alpha,
                                horizon=max(horizon, verdict.MIN_SEEDS),
                                higher_is_better=options.metric != "loss", selected_from=selected_from,
                                kind=kind, curtail=curtail)
        v = verdict.verdict(deltas, design, looks, noop=bool(r["noop"]), prior=r["_prior"], estimate=True)
        v.basis = basis
        out.append(v)
    res = pd.DataFrame({
        "verdict": [v.verdict for v in out],
        "verdict_ge_delta": [bool(v.ge_delta) for v in out],
        "verdict_label": [v.label(options.delta) for v in out],
        "verdict_n": [v.decided_at if v.decided_at is not None else v.n for v in out],
        "verdict_lo": [v.lo for v in out], "verdict_hi": [v.hi for v in out],
        "verdict_basis": [v.basis for v in out],
        "seeds_to_decide": [v.seeds_to_decide for v in out],
        "would_decide": [v.would_decide for v in out],
        "verdict_note": [v.note for v in out],
        "looks": [list(v.looks) for v in out],
        "verdict_design": [v.design for v in out],
        "verdict_curtailed": [bool(v.curtailed) for v in out],   # a settling stopped it (sprt)
        "verdict_prior_df": [v.prior_df for v in out],
        "estimate": [v.estimate for v in out],      # stopping-aware (analysis.stopped), settled only
        "est_lo": [v.est_lo for v in out], "est_hi": [v.est_hi for v in out],
    }, index=summary.index)
    for c in ("verdict_lo", "verdict_hi", "seeds_to_decide", "would_decide", "verdict_prior_df",
              "estimate", "est_lo", "est_hi"):
        res[c] = res[c].astype(object).where(res[c].notna(), None)
    res["_verdict"] = out
    return res


BORROW_COLUMNS = ("variance", "prior_df", "prior_sd", "prior_configs", "ci_df", "own_ci_lo",
                  "own_ci_hi", "t_p")


def _borrowed(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str],
              options: ReportOptions) -> pd.DataFrame:
    """Borrowed variance per family (stage and task: one model, budget and metric within a
    search): each configuration's prior (``shrinkage.family_priors``), its moderated t interval
    (``ci_lo``/``ci_hi`` when the interval method is t; the configuration's own interval stays in
    ``own_ci_lo``/``own_ci_hi``) and moderated t p-value ``t_p``. Columns ``BORROW_COLUMNS`` and
    ``_prior`` (used by the verdicts)."""
    dcol = f"d_{options.metric}"
    groups = {k if isinstance(k, tuple) else (k,): pd.to_numeric(g[dcol], errors="coerce").dropna().to_numpy(float)
              for k, g in data.groupby(keys, sort=False, dropna=False)}
    fam_cols = family_columns(summary)
    priors: dict = {}
    for _, fam in summary.groupby(fam_cols, sort=False, dropna=False):
        real = {i: groups.get(tuple(summary.loc[i, k] for k in keys), np.array([]))
                for i in fam.index if not bool(summary.loc[i, "noop"])}
        fitted = shrinkage.family_priors(real) if options.borrow else {}
        for i in fam.index:
            priors[i] = fitted.get(i, shrinkage.Prior.none())
    rows = []
    for i, r in summary.iterrows():
        p = priors[i]
        x = groups.get(tuple(r[k] for k in keys), np.array([]))
        row = {"_prior": p, "variance": "own", "prior_df": None, "prior_sd": None,
               "prior_configs": int(p.n_configs), "ci_df": None, "own_ci_lo": r["ci_lo"],
               "own_ci_hi": r["ci_hi"], "t_p": None, "ci_lo": r["ci_lo"], "ci_hi": r["ci_hi"]}
        if x.size >= 2 and not bool(r["noop"]):
            lo, hi, df = shrinkage.moderated_interval(x, p, options.level)
            row["ci_df"] = df
            row["t_p"] = shrinkage.moderated_p(x, p)
            if p.applies and p.prior_df(x.size - 1) > 0:
                row.update(variance="borrowed", prior_df=float(p.prior_df(x.size - 1)),
                           prior_sd=math.sqrt(p.s0sq))
                if options.interval == "t":
                    row["ci_lo"], row["ci_hi"] = lo, hi
            elif p.outlier:
                row["variance"] = "own (out of line with its family)"
        rows.append(row)
    out = pd.DataFrame(rows, index=summary.index)
    for c in ("prior_df", "prior_sd", "ci_df", "t_p", "own_ci_lo", "own_ci_hi", "ci_lo", "ci_hi"):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


SPLIT_COLUMNS = ("split_eval_sd", "split_trajectory_sd", "split_eval_share", "split_bound", "split_advice")


def _splits(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str], options: ReportOptions) -> pd.DataFrame:
    """The variance split of each configuration's token-accuracy delta (``analysis.evalsplit``):
    from its seeds' per-item outcomes when every seed has them, else a bound from the eval size a
    file states; None for other metrics and where neither is known."""
    out = pd.DataFrame({c: [None] * len(summary) for c in SPLIT_COLUMNS}, index=summary.index, dtype=object)
    if options.metric != "acc":
        return out
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in data.groupby(keys, sort=False, dropna=False)}
    for i, r in summary.iterrows():
        g = groups.get(tuple(r[k] for k in keys))
        if g is None or len(g) < 2 or bool(r["noop"]):
            continue
        try:
            if g["base_items"].map(lambda x: isinstance(x, dict)).all() and \
                    g["fs_items"].map(lambda x: isinstance(x, dict)).all():
                sp = evalsplit.split_from_items([(evalsplit.decode_items(b), evalsplit.decode_items(f))
                                                 for b, f in zip(g["base_items"], g["fs_items"])])
            elif pd.to_numeric(g["eval_n"], errors="coerce").notna().all():
                sp = evalsplit.split_bound(g["d_acc"].to_numpy(float), float(g["base_acc"].mean()),
                                           float(g["fs_acc"].mean()), int(pd.to_numeric(g["eval_n"]).min()))
            else:
                continue
        except AnalysisInputError as exc:
            out.loc[i, "split_advice"] = f"no split: {exc}"
            continue
        out.loc[i, SPLIT_COLUMNS] = [sp.eval_sd, sp.trajectory_sd, sp.eval_share, sp.bound, sp.advice]
    return out


def _reused_seeds(data: pd.DataFrame) -> dict:
    """(task, config hash) -> the selection seeds its confirmation used again (non-empty only)."""
    if "config_hash" not in data.columns:
        return {}
    sel = data[data["stage"] == "selection"].groupby(["task", "config_hash"])["seed"].agg(set)
    conf = data[data["stage"] == "confirmation"].groupby(["task", "config_hash"])["seed"].agg(set)
    return {k: seeds & sel[k] for k, seeds in conf.items() if k in sel.index and seeds & sel[k]}


def _seeds_overlap(ranked: pd.DataFrame) -> bool:
    """Whether the configurations of a family were measured on shared seeds (so picking the best
    of them and quoting its mean reuses the seeds that picked it)."""
    seeds = [set(s) for s in ranked["seeds"]]
    return len(seeds) > 1 and sum(map(len, seeds)) > len(set().union(*seeds))


def _objects(arr) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(arr, dtype=float)]


def _confirmation_reuse(data: pd.DataFrame) -> list[str]:
    """Confirmation rows whose seeds were already used to select the same configuration."""
    out = []
    reused = _reused_seeds(data)
    for key in sorted(reused):
        label = data[(data["task"] == key[0]) & (data["config_hash"] == key[1])]["config"].iloc[0]
        out.append(f"{label} ({key[0]}): confirmation reuses selection seed(s) "
                   f"{sorted(reused[key])}: not a fresh-seed confirmation")
    return out


@dataclass
class _Rows:
    """The records of a report split by use: ``data`` the paired seeds with the metric's delta
    (status ok), ``excluded`` the failed and no-op records, ``missing_metric`` the ok seeds
    without the metric."""
    data: pd.DataFrame
    excluded: pd.DataFrame
    missing_metric: int


def build(loaded: Loaded, options: ReportOptions | None = None) -> Report:
    """Statistics of every configuration in ``loaded``; raises AnalysisInputError if none usable.
    The steps, in order: the rows, the per-configuration statistics, the breakthrough split, the
    no-op flags, the family-borrowed variance and variance split, the verdicts, the order, the
    families (multiplicity, winner's curse, statement), the warnings."""
    options = options or ReportOptions()
    rows = _usable_rows(loaded.df, options)
    keys, shown = group_columns(options, rows.data)
    flags = _learned_flags(rows.data, options)
    rows.data["base_learned_eff"] = flags["bl"].where(flags["bt_known"], None).astype(object)
    rows.data["fs_learned_eff"] = flags["fl"].where(flags["bt_known"], None).astype(object)

    summary = _config_statistics(rows, keys, shown, options)
    summary = _with_breakthrough(summary, _breakthrough(rows.data, flags, keys, options), keys)
    summary = _with_noop_flags(summary)
    summary = _with_family_variance(summary, rows.data, keys, options)
    summary = pd.concat([summary, _verdicts(summary, rows.data, keys, options)], axis=1)
    summary = _sort(summary, options)
    summary["config_id"] = _config_ids(summary, keys)
    families = _family_adjust(summary, options)
    summary = summary.drop(columns=["_verdict", "_prior"])
    warnings = _warnings(summary, rows, shown, options)
    summary = summary.drop(columns=["_noop_recorded"])

    return Report(options=options, summary=summary.reset_index(drop=True), data=rows.data,
                  excluded=rows.excluded, families=families, problems=list(loaded.problems),
                  skipped=list(loaded.skipped), notes=list(loaded.notes), warnings=warnings,
                  importance=loaded.importance, keys=keys, shown=shown)


def _usable_rows(df: pd.DataFrame, options: ReportOptions) -> _Rows:
    """Step 1: the paired seeds the statistics use and the records left out; raises
    AnalysisInputError when no seed has the metric's delta."""
    dcol = f"d_{options.metric}"
    ok = df[df["status"] == "ok"]
    data = ok[ok[dcol].notna()].copy()
    if data.empty:
        what = (f"no paired seed has a {METRICS[options.metric]} delta ({dcol})" if len(ok)
                else "no usable paired seed in the input")
        raise AnalysisInputError(what)
    return _Rows(data=data, excluded=df[df["status"] != "ok"].copy(), missing_metric=len(ok) - len(data))


def _config_statistics(rows: _Rows, keys: list[str], shown: list[str], options: ReportOptions) -> pd.DataFrame:
    """Step 2: one row per configuration, ``analysis.stats.summarize`` of its deltas, with its
    label, seeds, sources and whether it was pruned or recorded as no-op. Configurations that
    print alike get their hash shown; for loss, P(improve) is the share of seeds that lowered it."""
    dcol = f"d_{options.metric}"
    # No-op records (never trained: FS provably changes nothing) join as rows of their own.
    noop = _noop_rows(rows.excluded, dcol, keys, options)
    stat_in = rows.data.assign(_noop=False)
    if noop is not None:
        have = set(map(tuple, rows.data[keys].astype(str).to_numpy()))
        noop = noop[[tuple(x) not in have for x in noop[keys].astype(str).to_numpy()]]
        stat_in = pd.concat([stat_in, noop.assign(_noop=True)], ignore_index=True)
    summary = stats.summarize(stat_in, dcol, keys, level=options.level, method=options.interval,
                              effect=options.effect, n_resamples=options.n_resamples)
    grouped = stat_in.groupby(keys, sort=False, dropna=False)
    labels = grouped.agg(**{c: (c, "first") for c in shown if c not in keys},
                         seeds=("seed", lambda s: sorted(int(x) for x in s)),
                         sources=("source", lambda s: sorted(set(s))),
                         pruned=("pruned", lambda s: bool(s.eq(True).any())),
                         noop_status=("_noop", "all")).reset_index()
    summary = summary.merge(labels, on=keys, how="left")
    if "config" in summary.columns and "config_hash" in summary.columns:
        # Two configurations that print alike (same label, different knobs) get their hash shown.
        same = summary.groupby(["stage", *[c for c in shown if c not in ("stage", "config")],
                                "config"], dropna=False)["config_hash"].transform("nunique") > 1
        summary.loc[same, "config"] = [f"{c} #{h[:6]}" for c, h in
                                       zip(summary.loc[same, "config"], summary.loc[same, "config_hash"])]
    if options.metric == "loss":
        # Lower loss is better: P(improve) is the share of seeds where FS lowered the loss.
        summary["p_improve"] = [None if v is None else 1.0 - v for v in summary["p_improve"]]
    return summary


def _with_breakthrough(summary: pd.DataFrame, bt: pd.DataFrame | None, keys: list[str]) -> pd.DataFrame:
    """Step 3: the breakthrough split's ``bt_*`` columns (None where a configuration has none)."""
    if bt is not None:
        summary = summary.merge(bt, on=keys, how="left")
    cols = [f"bt_{c}" for c in BT_COLUMNS]
    for c in cols:
        if c not in summary.columns:
            summary[c] = None
    summary = summary.astype({c: object for c in cols})
    summary[cols] = summary[cols].where(summary[cols].notna(), None)
    return summary


def _with_noop_flags(summary: pd.DataFrame) -> pd.DataFrame:
    """Step 4: ``noop`` (recorded as no-op, or two or more deltas all exactly 0) and
    ``_noop_recorded`` (recorded so: the grouped record warning says it, not a guess)."""
    # A zero interval needs two seeds: one delta of exactly 0 may be chance, not a no-op.
    summary["noop"] = summary["noop_status"].astype(bool) | ((summary["n"] >= 2)
                                                            & (summary["n_zero"] == summary["n"]))
    summary["_noop_recorded"] = summary["noop_status"].astype(bool)
    return summary.drop(columns=["noop_status"])


def _with_family_variance(summary: pd.DataFrame, data: pd.DataFrame, keys: list[str],
                          options: ReportOptions) -> pd.DataFrame:
    """Step 5: borrowed variance (the interval becomes the moderated one where it applies) and
    the variance split of each configuration."""
    borrowed = _borrowed(summary, data, keys, options)
    if "ci_lo" in borrowed.columns:
        summary["ci_lo"], summary["ci_hi"] = borrowed.pop("ci_lo"), borrowed.pop("ci_hi")
    return pd.concat([summary, borrowed, _splits(summary, data, keys, options)], axis=1)


def _warnings(summary: pd.DataFrame, rows: _Rows, shown: list[str], options: ReportOptions) -> list[str]:
    """Last step: the report's warnings, in order: single-seed configurations (one line per
    family), all-zero deltas and bimodal splits per configuration, confirmations reusing
    selection seeds, seeds without the metric, the records left out."""
    warnings = []
    # Single-seed configurations come in dozens from a one-seed search: one line per stage and task.
    single = summary[summary["n"] < 2]
    for key, fam in single.groupby(family_columns(summary), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        labels = ", ".join(str(c) for c in fam["config"]) if "config" in fam.columns else ""
        warnings.append(f"{' / '.join(map(str, key[1:])) or 'all'} [{key[0]}]: {len(fam)} "
                        f"configuration(s) with 1 seed (no spread, interval or test)"
                        + (f": {labels}" if labels else ""))
    for _, r in summary.iterrows():
        name = _config_name(r, shown)
        if r["n"] >= 2 and r["n_zero"] == r["n"] and not r["_noop_recorded"]:
            warnings.append(f"{name}: all {r['n']} deltas are exactly 0: FS changed nothing "
                            "(a no-op configuration?)")
        if _true(r.get("bt_bimodal")):
            warnings.append(f"{name}: {bimodal.BIMODAL_ADVICE}")
    warnings.extend(_confirmation_reuse(rows.data))
    if rows.missing_metric:
        warnings.append(f"{rows.missing_metric} paired seed(s) have no {METRICS[options.metric]}: "
                        f"left out of the --metric {options.metric} statistics")
    warnings.extend(_excluded_warnings(rows.excluded, shown))
    return warnings


def _config_ids(summary: pd.DataFrame, keys: list[str]) -> list[str]:
    """A short id per configuration ("C1", "C2", ... in report order): what the terminal table,
    the HTML table, its plots and the closing answer name a configuration by when its label is too
    long to print. One configuration keeps its id across stages (its selection and its fresh-seed
    rows say the same C<k>); configurations of other tasks get their own."""
    name_keys = [k for k in keys if k != "stage"]
    ids: dict[tuple, str] = {}
    out = []
    for _, r in summary.iterrows():
        key = tuple(str(r[k]) for k in name_keys)
        out.append(ids.setdefault(key, f"C{len(ids) + 1}"))
    return out


def _excluded_warnings(excluded: pd.DataFrame, shown: list[str]) -> list[str]:
    """One line per configuration and cause (no-op, or failed with its reason) for the records
    left out of the statistics, with the count, the seeds and where they are: a no-op
    configuration of five seeds is one line, not five."""
    if excluded.empty:
        return []
    ex = excluded.assign(_why=[str(w)[:100] if isinstance(w, str) and w else ""
                               for w in excluded.get("failure", pd.Series(None, index=excluded.index))])
    cols = [c for c in ("stage", *[c for c in shown if c != "stage"]) if c in ex.columns]
    out = []
    for _, g in ex.groupby([*cols, "status", "_why"], sort=False, dropna=False):
        r = g.iloc[0]
        name = _config_name(r, shown)
        seeds = _spans(sorted(int(x) for x in pd.to_numeric(g["seed"], errors="coerce").dropna()))
        where = _lines_text(g)
        k = len(g)
        what = f"{k} seed{'s' if k > 1 else ''} ({seeds})" if k > 1 else f"seed {seeds}"
        if r["status"] == "noop":
            out.append(f"{name}: {what} recorded as no-op (FS provably changes nothing, not "
                       f"trained): listed as A/A evidence ({where})")
        else:
            out.append(f"{name}: {what} {r['status']}{': ' + r['_why'] if r['_why'] else ''}; not in "
                       f"the statistics ({where})")
    return out


def _lines_text(g: pd.DataFrame) -> str:
    """Where a group of records is: "r.jsonl lines 15-19" (ranges of consecutive lines)."""
    parts = []
    for src, rows in g.groupby("source", sort=False):
        lines = sorted(int(x) for x in pd.to_numeric(rows["line"], errors="coerce").dropna())
        word = "line" if len(lines) == 1 else "lines"
        parts.append(f"{src} {word} {_spans(lines)}" if lines else str(src))
    return "; ".join(parts)


def _spans(xs: list[int]) -> str:
    """Sorted integers as ranges: [0, 1, 2, 4] -> "0-2, 4"."""
    spans, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            spans.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(spans)


def _sort(summary: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Best first by the interval's bound on the side that matters (lower bound; upper for loss);
    configurations without an interval follow, by mean; no-op configurations come last (an
    interval of [0, 0] must not outrank a noisy real configuration)."""
    sign = 1.0 if options.metric != "loss" else -1.0
    bound = summary["ci_lo"] if sign > 0 else summary["ci_hi"]
    has = bound.notna()
    key_bound = pd.to_numeric(bound, errors="coerce").fillna(0.0) * sign
    key_mean = (pd.to_numeric(summary["mean"], errors="coerce") * sign).fillna(-np.inf)
    stage_rank = summary["stage"].map(STAGE_ORDER).fillna(9)
    noop = summary["noop"].astype(bool).to_numpy()
    order = np.lexsort((-key_mean.to_numpy(), -key_bound.to_numpy(), ~has.to_numpy(), noop,
                        stage_rank.to_numpy()))
    return summary.iloc[order].reset_index(drop=True)


def _true(v: Any) -> bool:
    """A flag cell (None, bool or numpy bool) that is set."""
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v)


def _config_name(r: pd.Series, shown: list[str]) -> str:
    parts = [str(r[c]) for c in shown if c != "stage" and c in r]
    return f"{' / '.join(parts) or 'all'} [{r['stage']}]"


