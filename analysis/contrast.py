"""Contrasts: does FS's effect differ between two levels of one factor (ordering, task option, task,
FS knob)?

"Significant in one condition, not in the other" is no test of a difference. The question is the
interaction: for one configuration measured at level A and at level B of a factor KEY, is
``effect_A - effect_B`` (each effect a mean paired delta ``fs - no_fs``) away from 0, or within
``+-delta`` of it, or not yet known?

Factors. Every paired row is described by factors, split in two sides:

* the FS side: the FS knobs (an fsray record's ``config``; the FS settings of a researchers' filter
  line; a candidate's name in their staged searches; the label of a plain table);
* the task side: ``task`` (the task's name without its ordering), ``order`` (the ordering: an fsray
  record's ``order`` option; the ``optionsfirst`` / ``qfirst`` / ``qafter`` / ``prefix`` /
  ``suffix`` of a researchers' file name, which their ``q_first`` / ``mask_region`` settings only
  repeat), every other task option, and the researchers' other settings (``bsz``, ``L`` of a
  block, ...).

A configuration at a level is everything but KEY (for KEY ``task``: the FS side and the ordering
only, as the task's own options come with the task), and the stage. A contrast is made for every configuration present
at both levels.

Pairing. Where the two levels share seeds and the records say both started from the same initial
weights (``init_hash`` of fsray records: same model and seed), seed s at A and seed s at B share
their initial weights and data order, so their FS effects are compared seed by seed
(``scipy.stats.ttest_rel``, TOST ``statsmodels ttost_paired``) on the shared seeds. Otherwise
(no shared seed, different initial weights, or weights not recorded, as in the researchers' files)
the two effects are independent samples: Welch's test (``ttest_ind(equal_var=False)``, TOST
``ttost_ind(usevar="unequal")``). Each row says which, and why.

Verdict, in the words of ``analysis.verdict``: ``differs`` (the effect at A is larger / smaller),
``same within delta`` (equivalence by two one-sided tests: no difference of ``delta`` or more), or
``undecided`` with the seeds per level that would decide it at the current estimates. As for a
configuration's verdict, the error is spent over the looks of a design of ``horizon`` seeds
(``analysis.sequential``): at look k the test's p-value must be below the nominal level the
spending allows there, so repeated looks (a settling search) keep the error rates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from . import sequential, verdict as verdict_mod
from .errors import AnalysisInputError
from .sequential import MIN_SEEDS, RHO

# Researchers' settings that only restate the ordering of the file name (the "order" factor).
ORDER_ALIASES = ("q_first", "mask_region", "ordering")
# FS settings of the researchers' filter lines (the rest are task and budget settings).
_LEGACY_FS_PREFIXES = ("fs_", "alpha_")
_LEGACY_FS_KEYS = {"seed_scale", "train_gate_only"}
VERDICT_WORDS = ("differs", "same within delta", "undecided")
PAIRED, WELCH = "paired by seed", "Welch (unpaired)"


# --------------------------------------------------------------------------------------------------
# factors


def _text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _loads(v) -> dict:
    if not isinstance(v, str) or not v:
        return {}
    try:
        obj = json.loads(v)
    except json.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _split_task(label: str) -> dict[str, str]:
    """``arc/optionsfirst L=512`` -> task arc, order optionsfirst, L 512."""
    head, *rest = str(label).split(" ")
    out: dict[str, str] = {}
    name, _, order = head.partition("/")
    out["task"] = name
    if order:
        out["order"] = order
    for word in rest:
        k, eq, v = word.partition("=")
        if eq:
            out[k] = v
    return out


def factors(row) -> tuple[dict[str, str], dict[str, str]]:
    """(FS side, task side) of one paired row, every value as text."""
    task_side = _split_task(row.get("task", ""))
    fs_side: dict[str, str] = {}
    legacy = _loads(row.get("legacy_config"))
    if legacy:
        if isinstance(legacy.get("filter"), dict):
            for k, v in legacy["filter"].items():
                if k in ORDER_ALIASES:
                    continue
                fs = k.startswith(_LEGACY_FS_PREFIXES) or k in _LEGACY_FS_KEYS
                (fs_side if fs else task_side)[k] = _text(v)
        elif "legacy_search" in legacy:
            fs_side["config"] = _text(legacy.get("config"))
            task_side["bsz"] = _text(legacy.get("bsz"))
        elif isinstance(legacy.get("legacy_sweep"), dict):
            for k, v in legacy["legacy_sweep"].items():
                (fs_side if k.startswith(_LEGACY_FS_PREFIXES) else task_side)[k] = _text(v)
        else:  # a paired block without a readable filter: only its experiment names it
            fs_side["config"] = _text(legacy.get("legacy"))
        return fs_side, task_side
    opts = _loads(row.get("task_options_json"))
    for k, v in opts.items():
        task_side["order" if k in ("order", "ordering") else k] = _text(v)
    knobs = _loads(row.get("config_json"))
    if knobs or row.get("format") == "fsray":
        fs_side.update({k: _text(v) for k, v in knobs.items()})
    else:  # a plain table: its configuration label is all it says
        fs_side["config"] = str(row.get("config", ""))
    return fs_side, task_side


# --------------------------------------------------------------------------------------------------
# the contrast of two samples of FS effects


@dataclass
class ContrastVerdict:
    verdict: str                          # one of VERDICT_WORDS
    pairing: str                          # PAIRED or WELCH
    n_a: int
    n_b: int
    n_pairs: int | None = None            # paired: seeds in the comparison
    diff: float | None = None             # mean effect at A - mean effect at B
    lo: float | None = None               # level interval of the difference (fixed sample)
    hi: float | None = None
    p: float | None = None                # two-sided p of no difference
    tost_p: float | None = None           # p of "a difference of delta or more" (TOST)
    dof: float | None = None
    decided_at: int | None = None         # seeds (per level) at the look that decided
    looks: list[int] = field(default_factory=list)
    seeds_to_decide: int | None = None    # undecided: seeds to add at each level
    would_decide: str | None = None
    within_horizon: bool = True
    note: str = ""

    def label(self, delta: float) -> str:
        if self.verdict == "differs":
            return f"differs ({'A > B' if (self.diff or 0) > 0 else 'A < B'})"
        if self.verdict == "same within delta":
            return f"same within {delta:g}"
        if self.seeds_to_decide is None:
            return "undecided"
        return f"undecided (+{self.seeds_to_decide}{'' if self.within_horizon else '!'})"


def _tests(a: np.ndarray, b: np.ndarray, paired: bool, delta: float, level: float):
    """(diff, lo, hi, p, tost_p, dof) of mean(a) - mean(b) by scipy and statsmodels."""
    if paired:
        res = sps.ttest_rel(a, b)
        tost = ttost_paired(a, b, -delta, delta)
        dof = float(len(a) - 1)
    else:
        res = sps.ttest_ind(a, b, equal_var=False)
        tost = ttost_ind(a, b, -delta, delta, usevar="unequal")
        dof = float(res.df)
    diff = float(np.mean(a) - np.mean(b))
    p, tp = float(res.pvalue), float(tost[0])
    if not math.isfinite(p):  # no spread at all: the difference is what it is
        exact = abs(diff) < 1e-15
        return diff, diff, diff, 1.0 if exact else 0.0, 0.0 if abs(diff) < delta else 1.0, dof
    ci = res.confidence_interval(confidence_level=level)
    return diff, float(ci.low), float(ci.high), p, tp, dof


def _nominal(looks: tuple[int, ...], horizon: int, a: float) -> list[float]:
    """Nominal one-sided p each look may reach (the t boundary of the design as a p-value)."""
    c = sequential.t_boundaries(looks, horizon, a, RHO)
    return [0.0 if not math.isfinite(ck) else float(sps.t.sf(ck, n - 1)) for ck, n in zip(c, looks)]


def compare(a, b, *, paired: bool, delta: float, alpha: float = 0.05,
            horizon: int = verdict_mod.DEFAULT_HORIZON, looks=None,
            level: float = 0.95) -> ContrastVerdict:
    """The contrast of FS effects ``a`` (level A) and ``b`` (level B), in the order run. Paired:
    ``a[i]`` and ``b[i]`` are one seed (equal lengths). ``looks``: earlier looks (settling rounds),
    as seeds per level (paired) or as (seeds at A, seeds at B) pairs (Welch); the current counts
    are always a look. A look's information is its seeds per level (the smaller level's, Welch)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired and a.shape != b.shape:
        raise AnalysisInputError("a paired contrast needs the same seeds at both levels")
    n = int(min(a.size, b.size))
    out = ContrastVerdict("undecided", PAIRED if paired else WELCH, int(a.size), int(b.size),
                          n_pairs=n if paired else None)
    if a.size >= 2 and b.size >= 2:
        out.diff, out.lo, out.hi, out.p, out.tost_p, out.dof = _tests(a, b, paired, delta, level)
    elif a.size and b.size:
        out.diff = float(a.mean() - b.mean())
    horizon = max(int(horizon), MIN_SEEDS)
    sizes = {}
    for x in looks or ():
        na, nb = (x, x) if paired or not isinstance(x, (tuple, list)) else x
        na, nb = min(int(na), a.size), min(int(nb), b.size)
        if MIN_SEEDS <= min(na, nb) < n:
            sizes[min(na, nb)] = (na, nb)      # one look per information count
    if n >= MIN_SEEDS:
        sizes[n] = (a.size, b.size)
    look_list = tuple(sorted(sizes))
    out.looks = list(look_list)
    if not look_list:
        out.seeds_to_decide = MIN_SEEDS - n
        out.note = f"a look needs {MIN_SEEDS} seeds at each level"
        return out
    p_eff = _nominal(look_list, horizon, alpha / 2.0)
    p_eq = _nominal(look_list, horizon, alpha)
    for k, nk in enumerate(look_list):
        na, nb = sizes[nk]
        _, _, _, p, tp, _ = _tests(a[:na], b[:nb], paired, delta, level)
        if p / 2.0 < p_eff[k]:
            out.verdict, out.decided_at = "differs", nk
        elif tp < p_eq[k]:
            out.verdict, out.decided_at = "same within delta", nk
        if out.decided_at is not None:
            if nk < n:
                out.note = f"decided at {nk} seeds per level; later seeds do not change it"
            return out
    _project(out, a, b, paired, delta, alpha, horizon)
    return out


def _project(out: ContrastVerdict, a, b, paired: bool, delta: float, alpha: float,
             horizon: int) -> None:
    """Seeds to add at each level that would decide at the current means and spreads: the next
    look within the horizon whose projected boundary the estimate would cross; beyond it, the
    fixed-sample count at the whole alpha."""
    m = float(a.mean() - b.mean())
    if paired:
        s = float(np.std(a - b, ddof=1))
        se_at = lambda k: s / math.sqrt(a.size + k)  # noqa: E731
    else:
        va, vb = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
        s = math.sqrt(va + vb)
        se_at = lambda k: math.sqrt(va / (a.size + k) + vb / (b.size + k))  # noqa: E731
    if not s > 0:
        out.note = "no spread: cannot project"
        return
    n = int(min(a.size, b.size))
    looks = tuple(out.looks)
    for k in range(1, horizon - n + 1):
        ls = looks + (n + k,)
        c_eff = sequential.t_boundaries_approx(ls, horizon, alpha / 2.0, RHO)[-1]
        c_eq = sequential.t_boundaries_approx(ls, horizon, alpha, RHO)[-1]
        dec = verdict_mod._would(m, se_at(k), c_eff, c_eq, delta)
        if dec:
            out.seeds_to_decide, out.would_decide = k, _word(dec)
            return

    def decides(k: int) -> str | None:
        dfk = n + k - 1
        return verdict_mod._would(m, se_at(k), float(sps.t.isf(alpha / 2.0, dfk)),
                                  float(sps.t.isf(alpha, dfk)), delta)

    out.within_horizon = False
    lo = max(horizon - n, 0)
    hi = lo + 1
    while hi <= verdict_mod.MAX_PROJECTED and decides(hi) is None:   # both tests are monotone in k
        lo, hi = hi, 2 * hi + 1
    if hi > verdict_mod.MAX_PROJECTED:
        out.note = f"more than {verdict_mod.MAX_PROJECTED} seeds at the current estimates: not practical"
        return
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if decides(mid) is None else (lo, mid)
    out.seeds_to_decide, out.would_decide = int(hi), _word(decides(hi))
    out.note = f"beyond the {horizon}-seed horizon: at least {n + hi} seeds per level"


def _word(dec: str) -> str:
    return "same within delta" if dec == "no effect" else "differs"


# --------------------------------------------------------------------------------------------------
# contrasts in a report


@dataclass
class ContrastSpec:
    key: str
    levels: tuple[str, ...] | None = None   # None: every level present

    @classmethod
    def parse(cls, text: str) -> "ContrastSpec":
        """``KEY`` or ``KEY=A,B`` (the difference is A - B)."""
        key, eq, rest = str(text).partition("=")
        key = key.strip()
        if not key:
            raise AnalysisInputError(f"--contrast {text!r}: give a factor, e.g. --contrast order")
        if not eq:
            return cls(key)
        levels = tuple(x.strip() for x in rest.split(",") if x.strip())
        if len(levels) != 2 or levels[0] == levels[1]:
            raise AnalysisInputError(f"--contrast {text!r}: name two different levels, "
                                     f"e.g. {key}=A,B")
        return cls(key, levels)


@dataclass
class Contrasts:
    key: str
    metric: str
    delta: float
    level: float
    rows: pd.DataFrame                     # one row per configuration x pair of levels
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per contrast, the verdict first."""
        out = []
        for _, r in self.rows.iterrows():
            iv = ("—" if r["ci_lo"] is None else f"[{r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}]")
            p = "—" if r["p"] is None else f"{r['p']:.3g}"
            tp = "—" if r["tost_p"] is None else f"{r['tost_p']:.3g}"
            diff = "—" if r["diff"] is None else f"{r['diff']:+.4f}"
            out.append(f"{r['verdict_label']}: {r['configuration']} [{r['stage']}]: "
                       f"{self.key} {r['level_a']} - {r['level_b']}: d_{self.metric} "
                       f"{_m(r['mean_a'])} - {_m(r['mean_b'])} = {diff} {iv}, p={p}, "
                       f"TOST p={tp} (n {r['n_a']}/{r['n_b']}; {r['pairing']}: {r['pairing_why']})"
                       + (f"; {r['plan']}" if r["plan"] else ""))
        return out


def _m(v) -> str:
    return "—" if v is None else f"{v:+.4f}"


def _identity(fs_side: dict, task_side: dict, key: str) -> tuple:
    if key == "task":  # a task's own options come with it; its ordering is held fixed
        return (tuple(sorted(fs_side.items())), task_side.get("order"))
    return (tuple(sorted((k, v) for k, v in fs_side.items() if k != key)),
            tuple(sorted((k, v) for k, v in task_side.items() if k != key)))


def _describe(task_side: dict, key: str, config_label: str) -> str:
    """A configuration as printed: its task (name, ordering, prompt length; KEY left out) and its
    label."""
    if key == "task":
        return " · ".join(p for p in (task_side.get("order", ""), config_label) if p)
    words = [task_side[k] if k == "task" else f"{k}={task_side[k]}"
             for k in ("task", "order", "L", "max_prompt_len") if k in task_side and k != key]
    return " · ".join(p for p in (" ".join(words), config_label) if p)


PAIRINGS = ("auto", "seed", "welch")


def build(data: pd.DataFrame, spec: ContrastSpec, *, metric: str = "acc",
          delta: float = verdict_mod.DEFAULT_DELTA, level: float = 0.95,
          horizon: int = verdict_mod.DEFAULT_HORIZON, pairing: str = "auto") -> Contrasts:
    """Every contrast of ``spec`` in ``data`` (the paired seeds of a report, status ok). Raises
    AnalysisInputError for an unknown KEY, a KEY with fewer than two levels, and levels without a
    configuration in common. ``pairing``: "auto" (the rule of the module doc), "seed" (pair on the
    shared seeds even where the initial weights are not recorded: the caller knows seed s started
    alike at both levels; recorded weights that differ still forbid it), "welch" (never pair)."""
    if pairing not in PAIRINGS:
        raise AnalysisInputError(f"--contrast-pairing must be one of {PAIRINGS}, got {pairing!r}")
    dcol = f"d_{metric}"
    if data.empty:
        raise AnalysisInputError("--contrast: no paired seed to contrast")
    sides = [factors(r) for r in data.to_dict(orient="records")]
    key = spec.key
    names = sorted({k for f, t in sides for k in (*f, *t)} | {"task"})
    if key not in names:
        raise AnalysisInputError(f"--contrast {key!r}: no such factor in the input; factors: "
                                 f"{', '.join(names)}")
    value = [t["task"] if key == "task" else f.get(key, t.get(key)) for f, t in sides]
    present = sorted({v for v in value if v is not None})
    if spec.levels:
        missing = [x for x in spec.levels if x not in present]
        if missing:
            raise AnalysisInputError(f"--contrast {key}: level {missing[0]!r} not in the input; "
                                     f"{key} has {', '.join(present) or 'no value'}")
        present = list(spec.levels)
    if len(present) < 2:
        raise AnalysisInputError(f"--contrast {key}: one level only ({present[0]}) in the input; "
                                 "a contrast needs two")
    d = data.assign(_level=value, _fs=[f for f, _ in sides], _task=[t for _, t in sides])
    d = d[d["_level"].isin(present)]
    d["_id"] = [repr(_identity(f, t, key)) + "|" + str(s)
                for f, t, s in zip(d["_fs"], d["_task"], d["stage"])]
    horizon_of = pd.to_numeric(d["settle_horizon"], errors="coerce")
    rows, pairs_seen = [], 0
    rank = {v: i for i, v in enumerate(present)}
    for _, g in d.groupby("_id", sort=False):
        cells = {lv: dict(tuple(c.groupby("config_hash", sort=False)))
                 for lv, c in g.groupby("_level", sort=False)}
        for la, lb in combinations(sorted(cells, key=rank.get), 2):
            for ha, ca in cells[la].items():
                for hb, cb in cells[lb].items():
                    pairs_seen += 1
                    hz = horizon_of.loc[[*ca.index, *cb.index]].dropna()
                    rows.append(_one(ca, cb, la, lb, key, dcol, delta, level,
                                     int(hz.max()) if len(hz) else horizon, pairing))
    if not pairs_seen:
        raise AnalysisInputError(f"--contrast {key}: no configuration is present at both levels "
                                 f"({' and '.join(present)}); each level's configurations differ "
                                 "in more than " + key)
    df = pd.DataFrame(rows)
    df = df.astype(object).where(df.notna(), None)   # a missing number is None, never NaN
    notes = [f"contrast of {key}: difference of mean FS effects (d_{metric}, fs - no_fs) at level A "
             f"minus level B, per configuration present at both; interval {int(round(level * 100))}% "
             "(fixed sample); p: scipy ttest_rel (paired by seed) or ttest_ind(equal_var=False) "
             f"(Welch); TOST p: statsmodels ttost_paired / ttost_ind against ±{delta:g}; verdicts "
             "spend the error over the looks of the design (as the configurations' verdicts), "
             "each contrast at its own alpha (no adjustment across configurations, none for a "
             "search's selection: settle contrasts on fresh seeds)"]
    return Contrasts(key=key, metric=metric, delta=delta, level=level, rows=df, notes=notes)


def pairing_of(ca: pd.DataFrame, cb: pd.DataFrame, pairing: str = "auto") -> tuple[bool, str, list[int]]:
    """(paired, why, shared seeds) of two cells: paired by seed where they share seeds and every
    shared seed started from the same recorded initial weights at both levels (``pairing``: see
    ``build``)."""
    sa, sb = set(ca["seed"].astype(int)), set(cb["seed"].astype(int))
    shared = sorted(sa & sb)
    if pairing == "welch":
        return False, "asked (--contrast-pairing welch)", shared
    if len(shared) < 2:
        return False, ("no shared seeds" if not shared else "one shared seed"), shared
    ia = dict(zip(ca["seed"].astype(int), ca["init_hash"]))
    ib = dict(zip(cb["seed"].astype(int), cb["init_hash"]))
    known = all(isinstance(ia.get(s), str) and isinstance(ib.get(s), str) for s in shared)
    if known and any(ia[s] != ib[s] for s in shared):
        return False, f"{len(shared)} shared seeds, but the initial weights differ", shared
    if not known and pairing != "seed":
        return False, (f"{len(shared)} shared seeds, but the initial weights are not recorded: "
                       "cannot tell that seed s started alike at both levels"), shared
    dropped = len(sa | sb) - len(shared)
    why = (f"{len(shared)} shared seeds with the same initial weights" if known else
           f"{len(shared)} shared seeds, initial weights not recorded (asked: --contrast-pairing seed)")
    if dropped:
        why += f" ({dropped} unshared seed(s) left out)"
    return True, why, shared


def _ordered(c: pd.DataFrame, dcol: str) -> pd.DataFrame:
    rounds = pd.to_numeric(c["settle_round"], errors="coerce").fillna(-1)
    return c.assign(_r=rounds.to_numpy()).sort_values(["_r", "seed"], kind="stable")


def _one(ca, cb, la, lb, key, dcol, delta, level, horizon, pairing="auto") -> dict:
    paired, why, shared = pairing_of(ca, cb, pairing)
    ca, cb = _ordered(ca, dcol), _ordered(cb, dcol)
    if paired:
        ca = ca[ca["seed"].astype(int).isin(shared)]
        cb = cb.set_index(cb["seed"].astype(int)).loc[ca["seed"].astype(int)]
        rounds = np.maximum(ca["_r"].to_numpy(), cb["_r"].to_numpy())
    else:
        ra, rb = ca["_r"].to_numpy(), cb["_r"].to_numpy()
        rounds = None
    a, b = ca[dcol].to_numpy(float), cb[dcol].to_numpy(float)
    if paired:
        looks = verdict_mod.looks_from_rounds([None if x < 0 else int(x) for x in rounds])
    else:  # seeds per level at the end of each round
        looks = [(int((ra <= e).sum()), int((rb <= e).sum())) for e in sorted(set(ra) | set(rb))]
    v = compare(a, b, paired=paired, delta=delta, alpha=round(1 - level, 12), horizon=horizon,
                looks=looks, level=level)
    _, t = factors(ca.iloc[0])
    la_label, lb_label = str(ca["config"].iloc[0]), str(cb["config"].iloc[0])
    label = la_label if la_label == lb_label else f"{la_label} | {lb_label}"
    plan = ""
    if v.verdict == "undecided" and v.seeds_to_decide is not None:
        plan = (f"add {v.seeds_to_decide} seed(s) at each level"
                + (f" (would say {v.would_decide})" if v.would_decide else " for a first look")
                + ("" if v.within_horizon else f" (beyond the {horizon}-seed horizon)"))
    return {
        "key": key, "level_a": la, "level_b": lb, "stage": str(ca["stage"].iloc[0]),
        "configuration": _describe(t, key, label),
        "config_a": la_label, "config_b": lb_label,
        "config_hash_a": str(ca["config_hash"].iloc[0]), "config_hash_b": str(cb["config_hash"].iloc[0]),
        "n_a": v.n_a, "n_b": v.n_b, "n_pairs": v.n_pairs,
        "mean_a": float(a.mean()) if a.size else None, "mean_b": float(b.mean()) if b.size else None,
        "diff": v.diff, "ci_lo": v.lo, "ci_hi": v.hi, "p": v.p, "tost_p": v.tost_p, "dof": v.dof,
        "pairing": v.pairing, "pairing_why": why,
        "verdict": v.verdict, "verdict_label": v.label(delta), "decided_at": v.decided_at,
        "looks": list(v.looks), "seeds_to_decide": v.seeds_to_decide,
        "would_decide": v.would_decide, "plan": plan, "note": v.note,
        "seeds_a": [int(s) for s in ca["seed"]], "seeds_b": [int(s) for s in cb["seed"]],
    }
