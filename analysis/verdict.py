"""A verdict per configuration from its paired deltas, and the seeds that would settle the rest.

Verdicts, with a smallest effect of interest ``delta`` (in the metric's units; FS "helps" means a
higher accuracy or a lower loss):

* ``helps``: the repeated 1 - alpha interval of the mean delta lies above 0 (``ge_delta``: its
  lower end is also above +delta: FS helps by delta or more);
* ``hurts``: the interval lies below 0 (``ge_delta``: by delta or more);
* ``no effect``: equivalence by two one-sided tests: the repeated 1 - 2 alpha interval lies inside
  (-delta, +delta), i.e. no effect of delta or more either way;
* ``undecided``: none of these yet; ``seeds_to_decide`` is the number of further paired seeds that
  would decide it if the mean and spread stayed as they are (``would_decide`` says which way;
  ``within_horizon`` False when that is beyond the design's horizon);
* ``no-op``: every delta (at least two) is exactly 0 -- an interval of exactly [0, 0], as a provably
  no-op configuration gives -- or the configuration is known to be one (status "noop" records):
  A/A evidence, never a winner.

Error rates hold over all looks, by either of two sequential designs (``Design.kind``):

* ``"sprt"`` (the default since issue 20): a truncated sequential probability ratio test
  (``analysis.sprt``): "helps" when the seeds favour a mean of +delta over 0 by the calibrated
  threshold, "hurts" likewise for -delta, "no effect" when they favour 0 over both; wrong "helps" or
  "hurts" at most alpha / 2 each when FS does nothing, wrong "no effect" at most alpha when the
  effect is exactly +-delta, for looks at any seed counts up to the horizon. ``lo``/``hi`` are the
  (moderated) t interval at the deciding look; the stopping-aware estimate is ``estimate`` /
  ``est_lo`` / ``est_hi`` (``analysis.stopped``, with ``estimate=True``);
* ``"spending"`` (fsray before issue 20): a group-sequential design (``analysis.sequential``): a look
  at ``n_k`` seeds may spend ``alpha * (n_k / horizon) ** rho`` of the error of each one-sided test,
  and the verdicts read the repeated intervals (``lo``/``hi``: 1 - alpha, ``eq_lo``/``eq_hi``:
  1 - 2 alpha).

A look is a verdict computed at a seed count fixed without seeing the deltas (after each settling
round). Borrowed variance: with a ``prior`` (``analysis.shrinkage.family_priors``: the family's
variance prior, fitted from the other configurations of one task, model, budget, metric and stage)
the variance at every look is moderated and gains the prior's degrees of freedom (``prior_df``,
``variance = "borrowed"``); without one (or a family too small) each configuration is judged on its
own variance, as before. The prior applies to every look a verdict replays (it is the family's
prior now, not the one of each earlier round).

Selection. A configuration picked by a search as the best of K is measured too high on the seeds
that picked it. Its "helps" must rest on fresh seeds (records of stage "confirmation", the settling
rounds' stage) -- ``basis = "fresh seeds"`` -- or be corrected for the selection: with
``selected_from = K`` the helps/hurts tests run at alpha / K (Bonferroni over the K candidates),
``basis = "Bonferroni over K"``. The report uses fresh seeds for confirmation rows and Bonferroni over
the family for selection rows; the settling loop settles on fresh seeds only.

API for a settling loop (``fsray tune --settle``)::

    r = 0
    plan = settle_plan({name: [] for name in shortlist}, delta=0.01, max_seeds_per_config=20,
                       round_size=2, total_budget=None, noop=known_noops, higher_is_better=True)
    while not plan.done:
        for name, k in plan.round().items():   # k fresh seeds of `name` in round r, in parallel
            write each record with "stage": "confirmation", "settle": {"round": r, "horizon": 20}
        r += 1
        state = settle_state(records)    # from results.jsonl: deltas, looks, horizon, noop
        plan = settle_plan(state.deltas, delta=0.01, looks_by_config=state.looks,
                           max_seeds_per_config=20, noop=state.noop, ...)
    plan.configs[name]   # Verdict: verdict, n, ge_delta, decided_at, looks, lo/hi, seeds_to_add
                         # (next round), seeds_to_decide / would_decide (projection), basis, note
    plan.family          # the family statement; plan.undecided(); plan.to_dict() for a summary

(``settle_state`` keys configurations by ``config_hash`` and resumes at ``state.last_round + 1``;
a configuration of the shortlist with no settle record yet starts from ``[]``.)
``deltas_by_config[name]`` holds the configuration's fresh paired deltas *in the order they were
run* (oriented as recorded: fs - no_fs; ``higher_is_better=False`` for loss). The state of earlier
looks is ``looks_by_config[name]``: the cumulative seed counts at which earlier rounds were looked
at (e.g. ``[3, 5, 7]``; it may include the current count). It lives in the results themselves: each
settling record carries its round, and ``looks_from_rounds(rounds)`` turns the rounds of a
configuration's records into its looks, so a resumed search (even after a crash mid-round)
recomputes the looks it took; ``fsray report`` replays the same looks from the same records. The
current seed count is always a look. ``max_seeds_per_config`` is the design's horizon: it fixes the
spending, so keep it fixed across the rounds of one configuration (records carry it). A settling
loop settles on fresh seeds (``basis`` "fresh seeds"); pass ``selected_from=K`` only to judge seeds
that also chose the configuration among K (Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from . import sequential, shrinkage, sprt
from .errors import AnalysisInputError
from .schema import paired_delta
from .sequential import MIN_SEEDS, RHO
from .shrinkage import Prior

VERDICTS = ("helps", "hurts", "no effect", "undecided", "no-op")
# Settling designs: the truncated generalized SPRT (analysis.sprt, the default) and the alpha
# spending on t statistics it replaced (analysis.sequential).
DESIGNS = ("sprt", "spending")
DEFAULT_DESIGN = "sprt"
# Default smallest effect of interest, in the metric's units (README "Verdicts" gives the reason).
DEFAULT_DELTA = 0.01
DEFAULT_HORIZON = 20
DEFAULT_ROUND = 2
FRESH = "fresh seeds"
AS_MEASURED = "as measured (not selected by a search)"
# Projections stop here ("not practical").
MAX_PROJECTED = 100_000


def check_delta(delta) -> float:
    """delta as a positive finite float, or AnalysisInputError."""
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"delta must be a positive number, got {delta!r}") from None
    if isinstance(delta, bool) or not math.isfinite(d) or d <= 0:
        raise AnalysisInputError(f"delta must be a positive number, got {delta!r}")
    return d


@dataclass(frozen=True)
class Design:
    """What fixes the boundaries (``horizon``, ``alpha``, ``rho``) and how a verdict reads them."""

    delta: float = DEFAULT_DELTA
    alpha: float = 0.05
    horizon: int = DEFAULT_HORIZON
    rho: float = RHO
    higher_is_better: bool = True     # False for loss: FS helps when the delta is negative
    selected_from: int = 1            # K > 1: Bonferroni over K candidates for helps / hurts
    kind: str = DEFAULT_DESIGN        # "sprt" | "spending"
    # sprt: stop an undecided configuration when the horizon would decide it with a predictive
    # probability below this (analysis.sprt.p_decide; 0: never, for seeds not run by a settling
    # loop; settle_plan's default is sprt.CURTAIL). Verdicts do not depend on it.
    curtail: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", check_delta(self.delta))
        if self.kind not in DESIGNS:
            raise AnalysisInputError(f"the settling design must be one of {DESIGNS}, got {self.kind!r}")
        if not (0.0 < float(self.alpha) < 0.5):
            raise AnalysisInputError(f"alpha must lie in (0, 0.5), got {self.alpha}")
        if isinstance(self.horizon, bool) or int(self.horizon) != self.horizon or self.horizon < MIN_SEEDS:
            raise AnalysisInputError(f"the seed horizon must be an integer >= {MIN_SEEDS}, "
                                     f"got {self.horizon!r}")
        object.__setattr__(self, "horizon", int(self.horizon))
        if int(self.selected_from) < 1:
            raise AnalysisInputError(f"selected_from must be >= 1, got {self.selected_from}")
        c = self.curtail
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (0.0 <= float(c) < 1.0):
            raise AnalysisInputError(f"curtail must be a probability in [0, 1), got {c!r}")
        object.__setattr__(self, "curtail", float(c))

    @property
    def a_effect(self) -> float:
        """One-sided error of the helps and of the hurts test (alpha / 2, Bonferroni over K)."""
        return self.alpha / 2.0 / int(self.selected_from)

    @property
    def a_equiv(self) -> float:
        """One-sided error of each of the two equivalence tests (a 1 - 2 alpha interval)."""
        return self.alpha

    @property
    def basis(self) -> str:
        return FRESH if self.selected_from == 1 else f"Bonferroni over {int(self.selected_from)}"

    @property
    def beta(self) -> float:
        """The SPRT's error of "no effect" when the effect is exactly +-delta (the spending
        design's equivalence error, alpha)."""
        return self.a_equiv


@dataclass
class Verdict:
    verdict: str                      # one of VERDICTS
    n: int                            # seeds available
    ge_delta: bool = False            # helps / hurts by delta or more
    decided_at: int | None = None     # seeds at the look that decided
    looks: list[int] = field(default_factory=list)   # looks taken (the current one included)
    mean: float | None = None         # at the deciding (else the last) look, metric's units
    lo: float | None = None           # repeated 1 - alpha interval at that look
    hi: float | None = None
    eq_lo: float | None = None        # repeated 1 - 2 alpha interval at that look
    eq_hi: float | None = None
    seeds_to_decide: int | None = None   # undecided: seeds that would decide at the current estimate
    would_decide: str | None = None   # ... and the verdict they would give
    within_horizon: bool = True       # the projection fits within the design's horizon
    basis: str = FRESH
    note: str = ""
    seeds_to_add: int = 0             # in a settle plan: seeds to run in the next round
    design: str = DEFAULT_DESIGN      # the design that judged it
    prior_df: float | None = None     # borrowed variance: prior degrees of freedom (None: own)
    variance: str = "own"             # "borrowed" (a family prior) or "own"
    df: float | None = None           # degrees of freedom of the variance at that look
    estimate: float | None = None     # stopping-aware (median-unbiased) estimate of the mean
    est_lo: float | None = None       # ... and its 1 - alpha interval (analysis.stopped)
    est_hi: float | None = None
    p_decide: float | None = None     # sprt, undecided: predictive chance the horizon look decides
    curtailed: bool = False           # ... below the design's curtail: settling stops it here

    def label(self, delta: float | None = None) -> str:
        """Short printed form: helps (>= d), no effect (< d), undecided (+4), no-op (A/A)."""
        d = "δ" if delta is None else f"{delta:g}"
        if self.verdict in ("helps", "hurts"):
            return f"{self.verdict} (≥{d})" if self.ge_delta else self.verdict
        if self.verdict == "no effect":
            return f"no effect ≥{d}"
        if self.verdict == "no-op":
            return "no-op (A/A)"
        if self.seeds_to_decide is None:
            return "undecided (stopped)" if self.curtailed else "undecided"
        return (f"undecided ({'stopped, ' if self.curtailed else ''}+{self.seeds_to_decide}"
                f"{'' if self.within_horizon else '!'})")

    def to_dict(self) -> dict:
        return asdict(self)


def looks_from_rounds(rounds: Sequence[int | None]) -> list[int]:
    """Cumulative seed counts at the end of each settling round, from the rounds of a
    configuration's records in the order of its deltas (None: before settling, round 0)."""
    r = np.array([-1 if x is None else int(x) for x in rounds], dtype=int)
    if r.size and np.any(np.diff(r) < 0):
        order = np.argsort(r, kind="stable")
        r = r[order]
    return [int(np.searchsorted(r, v, side="right")) for v in np.unique(r)]


@dataclass
class SettleState:
    """What earlier rounds left in the results, per configuration hash (``settle_state``)."""

    deltas: dict[str, list[float]]           # fresh deltas ordered by (round, record order)
    looks: dict[str, list[int]]              # looks taken (cumulative seed counts per round)
    horizon: dict[str, int]                  # the horizon the records carry
    noop: set[str]                           # configurations recorded as status "noop"
    last_round: int = -1                     # the highest round recorded (-1: none)


def settle_state(records: Iterable[dict], metric: str = "token_acc") -> SettleState:
    """The settling state from ``fsray.paired/1`` records of stage "confirmation" (fresh seeds),
    status ok (deltas ``fs - baseline`` of ``metric``) or noop. Records carrying ``settle: {round,
    horizon}`` belong to that round; fresh seeds without one (``--confirm-seeds``) count as round
    -1, a look before settling -- as ``fsray report`` replays them. Failed seeds are not seeds:
    they leave no delta and move no look."""
    per: dict[str, list[tuple[int, int, float]]] = {}
    horizon: dict[str, int] = {}
    noop: set[str] = set()
    last = -1
    for i, rec in enumerate(records):
        if rec.get("stage") != "confirmation":
            continue
        st = rec.get("settle") if isinstance(rec.get("settle"), dict) else {}
        rnd = int(st["round"]) if isinstance(st.get("round"), int) else -1
        key = str(rec["config_hash"])
        last = max(last, rnd)
        if isinstance(st.get("horizon"), int):
            horizon[key] = int(st["horizon"])
        if rec.get("status") == "noop":
            noop.add(key)
            continue
        if rec.get("status") != "ok":
            continue
        d = paired_delta(rec, metric)
        if d is None:
            continue
        per.setdefault(key, []).append((rnd, i, d))
    deltas, looks = {}, {}
    for key, rows in per.items():
        rows.sort()
        deltas[key] = [d for _, _, d in rows]
        looks[key] = looks_from_rounds([r for r, _, _ in rows])
    return SettleState(deltas=deltas, looks=looks, horizon=horizon, noop=noop, last_round=last)


def _eval_looks(n: int, looks: Iterable[int] | None) -> list[int]:
    earlier = sorted({int(x) for x in (looks or ()) if MIN_SEEDS <= int(x) <= n})
    if n >= MIN_SEEDS and (not earlier or earlier[-1] != n):
        earlier.append(n)
    return earlier


def verdict(deltas: Sequence[float], design: Design | None = None,
            looks: Iterable[int] | None = None, noop: bool = False,
            prior: Prior | None = None, estimate: bool = False) -> Verdict:
    """The verdict of one configuration: its deltas in the order run, the seed counts of earlier
    looks (the current count is added as a look), ``noop`` for a configuration known to change
    nothing, ``prior`` its family's variance prior (``analysis.shrinkage.family_priors``; None or
    ``Prior.none()``: its own variance). ``estimate``: add the stopping-aware estimate and
    interval (``analysis.stopped``) once settled (decided, or undecided at the horizon)."""
    out = _verdict(deltas, design or Design(), looks, noop, prior)
    if estimate and out.n >= MIN_SEEDS and out.verdict != "no-op" and (
            out.verdict != "undecided" or out.curtailed or out.n >= (design or Design()).horizon):
        _add_estimate(out, np.asarray(list(deltas), dtype=float), design or Design(), prior)
    return out


def _add_estimate(out: Verdict, d: np.ndarray, design: Design, prior: Prior | None) -> None:
    from . import stopped

    sign = 1.0 if design.higher_is_better else -1.0
    n_stop = out.decided_at or out.n
    looks = [x for x in out.looks if x <= n_stop] or [n_stop]
    d0, s0sq = prior_for(prior, n_stop)
    m, var, _ = moderated_moments(sign * d, n_stop, d0, s0sq)
    est = stopped.stopped_estimate(m, math.sqrt(var), looks, design, d0, s0sq)
    if est is None or not all(math.isfinite(x) for x in est):
        return
    e, lo, hi = (sign * x for x in est)
    lo, hi = sorted((lo, hi))
    if d0 == 0 and design.kind == "sprt" and out.lo is not None and out.hi is not None:
        # On its own variance the spread is uncertain, and an early stop goes with a small one:
        # the simulated interval alone covers ~0.92; its hull with the plain t interval at the stop
        # ~0.95 (measured in tests/test_stopped.py).
        lo, hi = min(lo, out.lo), max(hi, out.hi)
    out.estimate, out.est_lo, out.est_hi = e, lo, hi


def _verdict(deltas, design: Design, looks, noop: bool, prior: Prior | None) -> Verdict:
    d = np.asarray(list(deltas), dtype=float)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise AnalysisInputError("deltas must be finite numbers")
    n = int(d.size)
    sign = 1.0 if design.higher_is_better else -1.0
    g = sign * d  # oriented: > 0 means FS helps
    look_list = _eval_looks(n, looks)
    out = Verdict(verdict="undecided", n=n, looks=look_list, basis=design.basis, design=design.kind)
    if noop or (n >= 2 and np.all(d == 0.0)):  # an interval of exactly [0, 0]
        out.verdict = "no-op"
        out.mean, out.lo, out.hi, out.eq_lo, out.eq_hi = 0.0, 0.0, 0.0, 0.0, 0.0
        out.note = "every delta is exactly 0: FS changed nothing (A/A evidence, never a winner)"
        return out
    if n < MIN_SEEDS:
        out.mean = float(d.mean()) if n else None
        out.seeds_to_decide = MIN_SEEDS - n
        out.note = f"a look needs {MIN_SEEDS} seeds (a spread to judge the mean by)"
        return out
    d0, s0sq = prior_for(prior, n)
    if d0 > 0:
        out.prior_df, out.variance = float(d0), "borrowed"
    if design.kind == "sprt":
        _verdict_sprt(out, g, design, d0, s0sq, sign)
        return out
    lk = tuple(look_list)
    c_eff = sequential.t_boundaries(lk, design.horizon, design.a_effect, design.rho, prior_df=d0)
    c_eq = sequential.t_boundaries(lk, design.horizon, design.a_equiv, design.rho, prior_df=d0)
    delta = design.delta
    for k, nk in enumerate(lk):
        m, var, df = moderated_moments(g, nk, d0, s0sq)
        se = math.sqrt(var / nk)
        lo, hi = _interval(m, se, c_eff[k])
        elo, ehi = _interval(m, se, c_eq[k])
        dec = None
        if lo > 0:
            dec, ge = "helps", lo > delta
        elif hi < 0:
            dec, ge = "hurts", hi < -delta
        elif elo > -delta and ehi < delta:
            dec, ge = "no effect", False
        _fill(out, sign, m, lo, hi, elo, ehi)
        out.df = df
        if dec is not None:
            out.verdict, out.ge_delta, out.decided_at = dec, bool(ge), nk
            if nk < n:
                out.note = f"decided at {nk} seeds; the {n - nk} seed(s) after that look do not change it"
            return out
    _project(out, g, design, d0, s0sq)
    return out


def prior_for(prior: Prior | None, n: int) -> tuple[float, float]:
    """(prior degrees of freedom, s0^2) a configuration of ``n`` seeds is judged with: the
    family's ``d0`` capped by its total degrees of freedom and rounded down to the grid the
    boundaries are calibrated on (``sequential.PRIOR_DF_GRID``); (0, nan) without a prior."""
    if prior is None or not prior.applies or n < 2:
        return 0.0, math.nan
    return float(sequential.prior_df_step(float(prior.prior_df(n - 1)))), float(prior.s0sq)


def moderated_moments(g: np.ndarray, k: int, d0: float = 0.0, s0sq: float = math.nan):
    """(mean, variance, df) of the first ``k`` deltas, the variance moderated by the prior."""
    x = g[:k]
    s2 = float(x.var(ddof=1)) if k > 1 else math.nan
    if d0 > 0:
        post, df = shrinkage.moderate_rows(s2, k - 1, d0, s0sq, math.inf)
        return float(x.mean()), float(post), float(df)
    return float(x.mean()), s2, float(k - 1)


def _sprt_looks(out: Verdict, design: Design) -> list[int]:
    return [x for x in out.looks if x <= design.horizon]


def _verdict_sprt(out: Verdict, g: np.ndarray, design: Design, d0: float, s0sq: float,
                  sign: float) -> None:
    """The truncated SPRT (``analysis.sprt``) over the looks taken, up to the horizon. ``lo``/``hi``
    are the (moderated) t interval at the deciding look, ``eq_lo``/``eq_hi`` its 1 - 2 alpha
    version: the verdict rests on the likelihood ratio, the interval shows the spread. The
    stopping-aware estimate is added by ``analysis.stopped`` once the configuration is settled."""
    looks = _sprt_looks(out, design)
    if not looks:
        m, var, df = moderated_moments(g, g.size, d0, s0sq)
        _fill_plain(out, sign, m, var, df, g.size, design)
        out.note = f"beyond the {design.horizon}-seed horizon of the design: no look left"
        return
    A, B = sprt.thresholds(design.horizon, design.a_effect, design.beta, d0)
    lk = np.asarray(looks)
    sx, sxx = np.cumsum(g)[lk - 1], np.cumsum(g * g)[lk - 1]
    # The verdict is the SPRT's over every look taken (curtailment only stops settling, so seeds
    # past a curtailed look, if any were run, still count); the chance the horizon decides is
    # judged at the last look.
    r = sprt.replay(lk, sx[None], sxx[None], design.delta, A, B, d0, s0sq, horizon=design.horizon)
    code, k = int(r["code"][0]), int(r["k"][0])
    nk = looks[k]
    m, var, df = moderated_moments(g, nk, d0, s0sq)
    _fill_plain(out, sign, m, var, df, nk, design)
    if code != sprt.CODES["undecided"]:
        out.verdict = [v for v, c in sprt.CODES.items() if c == code][0]
        out.ge_delta, out.decided_at = bool(r["ge_delta"][0]), nk
        if nk < g.size:
            out.note = f"decided at {nk} seeds; the {g.size - nk} seed(s) after that look do not change it"
        return
    if looks[-1] < design.horizon:
        out.p_decide = float(r["p_decide_last"][0])
        if out.p_decide < design.curtail:
            out.curtailed = True
    _project_sprt(out, g, design, looks, sx, sxx, A, B, d0, s0sq)
    if out.curtailed:
        chance = f"{out.p_decide:.0%}" if out.p_decide >= 0.01 else "under 1%"
        stop = (f"stopped at {looks[-1]} seeds: the {design.horizon}-seed horizon would decide it "
                f"with probability {chance} (< {design.curtail:.0%})")
        out.note = stop + ("; " + out.note if out.note else "")


def _fill_plain(out: Verdict, sign: float, m: float, var: float, df: float, n: int,
                design: Design) -> None:
    se = math.sqrt(var / n)
    c = float(sps.t.isf(design.a_effect, df))
    ce = float(sps.t.isf(design.a_equiv, df))
    _fill(out, sign, m, m - c * se, m + c * se, m - ce * se, m + ce * se)
    out.df = df


def _project_sprt(out: Verdict, g, design: Design, looks, sx, sxx, A, B, d0, s0sq) -> None:
    """Seeds to add that would decide if the mean and spread stayed as they are: the first seed
    count within the horizon at which the SPRT would cross, its history kept; beyond it, the
    fixed-sample count (as the spending design projects)."""
    n = g.size
    m, s2 = float(g.mean()), float(g.var(ddof=1))
    if not (s2 > 0):
        out.note = "no spread: cannot project"
        return
    lk = list(looks)
    for n2 in range(n + 1, design.horizon + 1):
        r = sprt.replay(np.asarray(lk + [n2]), np.append(sx, n2 * m)[None],
                        np.append(sxx, (n2 - 1) * s2 + n2 * m * m)[None], design.delta, A, B, d0, s0sq)
        code = int(r["code"][0])
        if code != sprt.CODES["undecided"] and int(r["k"][0]) == len(lk):
            out.seeds_to_decide = n2 - n
            out.would_decide = [v for v, c in sprt.CODES.items() if c == code][0]
            return
    _, var, _ = moderated_moments(g, n, d0, s0sq)
    _beyond_horizon(out, m, math.sqrt(var), d0, design)


def _interval(m: float, se: float, c: float) -> tuple[float, float]:
    if not math.isfinite(c):
        return -math.inf, math.inf
    if se == 0.0:
        return m, m
    return m - c * se, m + c * se


def _fill(out: Verdict, sign: float, m, lo, hi, elo, ehi) -> None:
    """Store the oriented interval back in the metric's own units."""
    f = lambda v: None if not math.isfinite(v) else float(sign * v)  # noqa: E731
    out.mean = f(m)
    a, b = f(lo), f(hi)
    out.lo, out.hi = (a, b) if sign > 0 else (b, a)
    a, b = f(elo), f(ehi)
    out.eq_lo, out.eq_hi = (a, b) if sign > 0 else (b, a)


def _project(out: Verdict, g: np.ndarray, design: Design, d0: float = 0.0,
             s0sq: float = math.nan) -> None:
    """Seeds to add that would decide at the current mean and spread: the next look within the
    horizon whose (projected) boundary the estimate would cross; beyond the horizon, the fixed-
    sample count at full alpha (a lower bound on what a larger design would need)."""
    n = g.size
    m, var, _ = moderated_moments(g, n, d0, s0sq)
    s = math.sqrt(var) if var >= 0 else math.nan
    delta = design.delta
    if not (s > 0):
        out.note = "no spread: cannot project"
        return
    looks = tuple(out.looks)
    for n2 in range(n + 1, design.horizon + 1):
        c_eff = sequential.t_boundaries_approx(looks + (n2,), design.horizon, design.a_effect,
                                               design.rho, prior_df=d0)[-1]
        c_eq = sequential.t_boundaries_approx(looks + (n2,), design.horizon, design.a_equiv,
                                              design.rho, prior_df=d0)[-1]
        se = s / math.sqrt(n2)
        dec = _would(m, se, c_eff, c_eq, delta)
        if dec:
            out.seeds_to_decide, out.would_decide = n2 - n, dec
            return
    _beyond_horizon(out, m, s, d0, design)


def _beyond_horizon(out: Verdict, m: float, s: float, d0: float, design: Design) -> None:
    """Beyond the horizon: the fixed-sample test at the whole alpha (both conditions are monotone
    in n: double, then bisect)."""
    n = out.n
    delta = design.delta

    def decides(n2: int) -> str | None:
        return _would(m, s / math.sqrt(n2), float(sps.t.isf(design.a_effect, n2 - 1 + d0)),
                      float(sps.t.isf(design.a_equiv, n2 - 1 + d0)), delta)

    out.within_horizon = False
    lo = max(n, design.horizon)
    hi = lo + 1
    while hi <= MAX_PROJECTED and decides(hi) is None:
        lo, hi = hi, lo + 2 * (hi - lo) + 1
    if hi > MAX_PROJECTED:
        out.note = f"more than {MAX_PROJECTED} seeds at the current estimate: not practical"
        return
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decides(mid) is None:
            lo = mid
        else:
            hi = mid
    out.seeds_to_decide, out.would_decide = int(hi - n), decides(hi)
    out.note = (f"beyond the {design.horizon}-seed horizon: at least {hi} seeds in all at the "
                "current estimate")


def _would(m: float, se: float, c_eff: float, c_eq: float, delta: float) -> str | None:
    if math.isfinite(c_eff) and abs(m) - c_eff * se > 0:
        return "helps" if m > 0 else "hurts"
    if math.isfinite(c_eq) and abs(m) + c_eq * se < delta:
        return "no effect"
    return None


# --------------------------------------------------------------------------------------------------
# families


def family_statement(verdicts: Mapping[str, Verdict], delta: float, what: str = "this task",
                     means: Mapping[str, float] | None = None) -> str:
    """One sentence about a family of configurations (one task, one stage).

    "no configuration of T helps by delta or more" needs every real configuration's upper end (of
    its 1 - 2 alpha repeated interval) below +delta: an intersection-union statement, valid at alpha
    without a multiplicity correction. No-op configurations count as A/A evidence, never as the
    best."""
    real = {k: v for k, v in verdicts.items() if v.verdict != "no-op"}
    noops = len(verdicts) - len(real)
    aa = f" ({noops} no-op configuration(s) listed as A/A evidence)" if noops else ""
    if not real:
        return f"{what}: only no-op configurations: FS changed nothing{aa}"
    helps = [k for k, v in real.items() if v.verdict == "helps"]
    if helps:
        big = [k for k in helps if real[k].ge_delta]
        best = max(helps, key=lambda k: (real[k].ge_delta, (means or {}).get(k, real[k].mean or 0)))
        return (f"{what}: {len(helps)} of {len(real)} configuration(s) help"
                + (f" ({len(big)} by {delta:g} or more)" if big
                   else f" (none shown to help by {delta:g} or more)")
                + f"; best: {best} [{real[best].basis}]{aa}")

    def mean_of(k: str) -> float:
        m = (means or {}).get(k, real[k].mean)
        return -math.inf if m is None else float(m)

    best = max(real, key=mean_of)
    # "no effect" or "hurts": the upper end of the repeated interval is below +delta.
    if all(v.verdict in ("no effect", "hurts") for v in real.values()):
        return (f"{what}: no configuration helps by {delta:g} or more ({len(real)} decided); "
                f"best real configuration: {best} ({real[best].label(delta)}){aa}")
    und = sum(v.verdict == "undecided" for v in real.values())
    return (f"{what}: no configuration is shown to beat no_fs ({und} of {len(real)} undecided); "
            f"best real configuration: {best} ({real[best].label(delta)}){aa}")


# --------------------------------------------------------------------------------------------------
# the settling loop's plan


@dataclass
class SettlePlan:
    design: Design
    configs: dict[str, Verdict]
    family: str

    @property
    def done(self) -> bool:
        """No configuration gets seeds in the next round (each decided or out of budget)."""
        return self.total_to_add == 0

    @property
    def total_to_add(self) -> int:
        return int(sum(v.seeds_to_add for v in self.configs.values()))

    def round(self) -> dict[str, int]:
        """Seeds to run per configuration in the next round (only those with > 0)."""
        return {k: v.seeds_to_add for k, v in self.configs.items() if v.seeds_to_add}

    def undecided(self) -> dict[str, Verdict]:
        return {k: v for k, v in self.configs.items() if v.verdict == "undecided"}

    def to_dict(self) -> dict:
        return {"design": asdict(self.design), "family": self.family, "done": self.done,
                "round": self.round(),
                "configs": {k: v.to_dict() for k, v in self.configs.items()}}


def check_settle_budget(n_configs: int, *, round_size: int = DEFAULT_ROUND,
                        max_seeds_per_config: int = DEFAULT_HORIZON,
                        total_budget: int | None = None) -> int:
    """Seeds the first settling round needs (every shortlisted configuration up to a first look);
    AnalysisInputError when the per-configuration or total budget cannot pay for it."""
    if isinstance(round_size, bool) or int(round_size) != round_size or round_size < 1:
        raise AnalysisInputError(f"round_size must be a positive integer, got {round_size!r}")
    first = max(int(round_size), MIN_SEEDS)
    if max_seeds_per_config < MIN_SEEDS:
        raise AnalysisInputError(f"the per-configuration seed budget ({max_seeds_per_config}) is "
                                 f"smaller than one look needs ({MIN_SEEDS} seeds)")
    need = int(n_configs) * min(first, int(max_seeds_per_config))
    if total_budget is not None and total_budget < need:
        raise AnalysisInputError(f"the total seed budget ({total_budget}) is smaller than one "
                                 f"settling round needs ({n_configs} configuration(s) x "
                                 f"{min(first, int(max_seeds_per_config))} seeds = {need})")
    return need


def settle_plan(deltas_by_config: Mapping[str, Sequence[float]], delta: float = DEFAULT_DELTA, *,
                looks_by_config: Mapping[str, Sequence[int]] | None = None, alpha: float = 0.05,
                max_seeds_per_config: int = DEFAULT_HORIZON, round_size: int = DEFAULT_ROUND,
                total_budget: int | None = None, noop: Iterable[str] = (),
                selected_from: int = 1, higher_is_better: bool = True,
                what: str = "this task", design: str = DEFAULT_DESIGN,
                priors: Mapping[str, Prior] | None = None, borrow: bool = True,
                estimate: bool = True, curtail: float = sprt.CURTAIL) -> SettlePlan:
    """Verdicts now and the next round: ``plan.round()`` maps each undecided configuration with
    budget left to the seeds to run next (``round_size``, at least enough for a first look of
    ``MIN_SEEDS``, capped by ``max_seeds_per_config``). With ``total_budget`` (seeds left in all),
    the configurations closest to a verdict (fewest projected seeds) are served first.
    ``max_seeds_per_config`` is also the design's horizon: keep it fixed across rounds.

    ``design``: "sprt" (default) or "spending". Borrowed variance: the configurations of one plan
    are one family (one task, model, budget, metric, stage); with ``borrow`` each gets the prior
    ``analysis.shrinkage.family_priors`` fits from the others (no-ops left out), unless
    ``priors`` gives them; a family too small to fit one judges each on its own variance.
    ``estimate``: each settled configuration's stopping-aware estimate (``analysis.stopped``).
    ``curtail`` (sprt): an undecided configuration the horizon would decide with a predictive
    probability below it gets no more seeds (``Verdict.curtailed``; 0: run every one to the horizon)."""
    if isinstance(round_size, bool) or int(round_size) != round_size or round_size < 1:
        raise AnalysisInputError(f"round_size must be a positive integer, got {round_size!r}")
    if total_budget is not None and (int(total_budget) != total_budget or total_budget < 0):
        raise AnalysisInputError(f"total_budget must be a non-negative integer, got {total_budget!r}")
    design = Design(delta=delta, alpha=alpha, horizon=max_seeds_per_config,
                    higher_is_better=higher_is_better, selected_from=selected_from, kind=design,
                    curtail=curtail)
    noop = set(noop)
    looks_by_config = looks_by_config or {}
    if priors is None and borrow:
        priors = shrinkage.family_priors({k: v for k, v in deltas_by_config.items() if k not in noop})
    priors = priors or {}
    out: dict[str, Verdict] = {}
    for name, deltas in deltas_by_config.items():
        v = verdict(deltas, design, looks_by_config.get(name), noop=name in noop, prior=priors.get(name),
                    estimate=estimate)
        if v.verdict == "undecided":
            left = design.horizon - v.n
            if v.curtailed:
                pass      # the horizon would not decide it: no more seeds (v.note says so)
            elif left > 0:
                v.seeds_to_add = min(left, max(int(round_size), MIN_SEEDS - v.n))
            elif not v.note:
                v.note = f"seed budget of {design.horizon} per configuration spent"
        out[name] = v
    if total_budget is not None:
        left = int(total_budget)
        want = sorted((k for k in out if out[k].seeds_to_add),
                      key=lambda k: (out[k].seeds_to_decide if out[k].seeds_to_decide is not None
                                     else MAX_PROJECTED, k))
        for k in want:
            give = min(out[k].seeds_to_add, left)
            out[k].seeds_to_add = give
            left -= give
            if give == 0:
                out[k].note = (out[k].note + "; " if out[k].note else "") + "total seed budget spent"
    sign = 1.0 if higher_is_better else -1.0
    fam = family_statement(out, design.delta, what,
                           {k: sign * v.mean for k, v in out.items() if v.mean is not None})
    return SettlePlan(design=design, configs=out, family=fam)
