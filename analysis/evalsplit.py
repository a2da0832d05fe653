"""The variance split: how much of a configuration's paired-delta spread is eval-item sampling and
how much is training trajectory, and which is cheaper to shrink.

A paired delta ``d_s`` (seed ``s``) is the mean over the eval items of ``a_si = fs_si - base_si``
(per item: the answer tokens FS got right minus those no_fs got right, over the mean tokens per
item, so that the mean over items is the token-accuracy delta). The eval items are the same for
every seed (fixed validation batches), so with ``S`` seeds x ``N`` items a two-way layout without
replication separates (Miller 2024, "Adding error bars to evals"; Jordan 2024, "Calibrated chaos"):

* the seed x item interaction ``sigma_e^2`` (the residual mean square): which items the two runs
  disagree on changes from seed to seed, and it reaches the seed spread as ``sigma_e^2 / N``;
* the training trajectory ``sigma_t^2 = var_s(d_s) - sigma_e^2 / N`` (at least 0);
* the item main effect ``sigma_i^2`` (items on which FS is better or worse on every seed): common
  to all seeds, it never shows in their spread, but it is an error of the mean as an estimate of
  the delta on the items' population, ``sigma_i^2 / N``, that no number of seeds shrinks.

With ``k`` times more eval items the spread becomes ``sqrt(sigma_t^2 + sigma_e^2 / (k N))`` and the
standard error of the mean over ``n`` seeds ``sqrt(spread_k^2 / n + sigma_i^2 / (k N))``; the seeds
that would give the same standard error at today's ``N`` solve ``var / (n + m) + sigma_i^2 / N =
se_k^2`` (none, when the item floor alone is above it). Evaluating costs inference, a seed costs
training, so where ``m`` is positive the items are the cheaper way.

Without per-item outcomes (the researchers' files) a bound from the eval size ``N`` (items per
run) and the accuracies: ``var(a) <= p_fs (1 - p_fs) + p_base (1 - p_base)`` (each item's score
lies in [0, 1]; the two runs' item outcomes are not negatively correlated), so the eval part of
the spread is at most ``sqrt((p_fs (1 - p_fs) + p_base (1 - p_base)) / N)``.

Per-item outcomes travel in a run's ``eval_items`` (``encode_items`` / ``decode_items``): per eval
example, its answer tokens and the tokens the run got right, as base64 of unsigned bytes (or 16-bit
words), at the evaluation the run reports.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .errors import AnalysisInputError

K_ITEMS = 4   # "k x more eval items" in the advice


def encode_items(tokens: Sequence[int], correct: Sequence[int]) -> dict:
    """A run's per-example outcomes in a record: ``{"unit": "example", "n": N, "dtype": "u1"|"u2",
    "tokens": b64, "correct": b64}``."""
    t, c = np.asarray(tokens, dtype=np.int64), np.asarray(correct, dtype=np.int64)
    if t.shape != c.shape or t.ndim != 1 or np.any(c < 0) or np.any(c > t):
        raise AnalysisInputError("per-item outcomes: tokens and correct counts must be equal-length, 0 <= correct <= tokens")
    dtype = "u1" if t.max(initial=0) < 256 else "u2"
    b = lambda x: base64.b64encode(x.astype("<" + dtype).tobytes()).decode("ascii")  # noqa: E731
    return {"unit": "example", "n": int(t.size), "dtype": dtype, "tokens": b(t), "correct": b(c)}


def decode_items(doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, correct) per example from ``encode_items``' form; AnalysisInputError if malformed."""
    try:
        dt = "<" + str(doc.get("dtype", "u1"))
        t = np.frombuffer(base64.b64decode(doc["tokens"]), dtype=dt).astype(np.int64)
        c = np.frombuffer(base64.b64decode(doc["correct"]), dtype=dt).astype(np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisInputError(f"eval_items is not readable: {exc}") from None
    if t.size != int(doc.get("n", t.size)) or c.size != t.size:
        raise AnalysisInputError("eval_items: the counts do not match its n")
    return t, c


@dataclass
class Split:
    n_seeds: int
    n_items: int
    spread: float                 # sd of the paired deltas across seeds
    eval_sd: float                # eval-item sampling's part of the spread, sqrt(sigma_e^2 / N)
    trajectory_sd: float          # training trajectory's part, sqrt(sigma_t^2)
    item_floor: float             # error of the mean no seed count shrinks, sqrt(sigma_i^2 / N)
    eval_share: float             # eval part of the seed variance, in [0, 1]
    k: int = K_ITEMS
    spread_k: float = math.nan    # the spread with k x more eval items
    se_now: float = math.nan      # standard error of the mean now
    se_k: float = math.nan        # ... with k x more eval items
    seeds_for_same: float | None = None   # more seeds that would give se_k (None: no number would)
    bound: bool = False           # True: an upper bound from the eval size (no per-item data)
    advice: str = ""
    eval_var: float = math.nan    # the unclipped estimates (unbiased; may exceed the seed variance,
    trajectory_var: float = math.nan   # or fall below 0, by sampling)

    def to_dict(self) -> dict:
        return asdict(self)


def split_from_items(pairs: Sequence[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]],
                     k: int = K_ITEMS) -> Split:
    """The split of one configuration from its seeds' per-item outcomes: ``pairs[s] = ((tokens,
    correct) of no_fs, (tokens, correct) of prompt_fs)``, the same items in the same order."""
    rows = []
    n_items = None
    for (tb, cb), (tf, cf) in pairs:
        tb, cb, tf, cf = (np.asarray(x, dtype=float) for x in (tb, cb, tf, cf))
        if tb.shape != tf.shape or np.any(tb != tf):
            raise AnalysisInputError("per-item outcomes of a pair do not cover the same items")
        if n_items is not None and tb.size != n_items:
            raise AnalysisInputError("per-item outcomes: seeds evaluated different numbers of items")
        n_items = tb.size
        rows.append((cf - cb) / tb.mean())   # mean over items = token-accuracy delta
    if not rows or n_items is None or n_items < 2:
        raise AnalysisInputError("the variance split needs per-item outcomes of at least 2 items")
    return split_from_matrix(np.vstack(rows), k)


def split_from_matrix(A: np.ndarray, k: int = K_ITEMS) -> Split:
    """The split from an ``[S, N]`` matrix of per-item deltas (row means are the seeds' deltas)."""
    A = np.asarray(A, dtype=float)
    S, N = A.shape
    d = A.mean(axis=1)
    if S >= 2:
        resid = A - d[:, None] - A.mean(axis=0)[None, :] + A.mean()
        ms_res = float((resid ** 2).sum() / ((S - 1) * (N - 1)))
        ms_item = float(S * ((A.mean(axis=0) - A.mean()) ** 2).sum() / (N - 1))
        total = float(d.var(ddof=1))
        sig_i = max((ms_item - ms_res) / S, 0.0)
    else:
        ms_res, total, sig_i = float(A[0].var(ddof=1)), math.nan, 0.0
    return _finish(S, N, total, ms_res / N, sig_i / N, k, bound=False)


def split_bound(deltas: Sequence[float], p_base: float, p_fs: float, n_items: int,
                k: int = K_ITEMS) -> Split:
    """An upper bound on the eval part from the eval size (no per-item data)."""
    d = np.asarray(list(deltas), dtype=float)
    if n_items < 1 or not (0 <= p_base <= 1 and 0 <= p_fs <= 1):
        raise AnalysisInputError("the eval-size bound needs a positive item count and accuracies in [0, 1]")
    total = float(d.var(ddof=1)) if d.size >= 2 else math.nan
    eval_var = (p_fs * (1 - p_fs) + p_base * (1 - p_base)) / n_items
    return _finish(int(d.size), int(n_items), total, eval_var, 0.0, k, bound=True)


def _finish(S: int, N: int, total: float, eval_var: float, floor_var: float, k: int, bound: bool) -> Split:
    known = math.isfinite(total)
    eval_part = min(eval_var, total) if known else eval_var
    traj = max(total - eval_part, 0.0) if known else math.nan
    out = Split(n_seeds=S, n_items=N, spread=math.sqrt(total) if known else math.nan,
                eval_sd=math.sqrt(eval_part), trajectory_sd=math.sqrt(traj) if known else math.nan,
                item_floor=math.sqrt(floor_var), eval_share=(eval_part / total) if known and total > 0 else math.nan,
                k=k, bound=bound, eval_var=eval_var,
                trajectory_var=(total - eval_var) if known else math.nan)
    if not known or S < 2:
        out.advice = "one seed: the trajectory part needs a second"
        return out
    spread_k2 = traj + eval_part / k
    out.spread_k = math.sqrt(spread_k2)
    out.se_now = math.sqrt(total / S + floor_var)
    out.se_k = math.sqrt(spread_k2 / S + floor_var / k)
    room = out.se_k ** 2 - floor_var
    out.seeds_for_same = None if room <= 0 else max(total / room - S, 0.0)
    out.advice = advice(out)
    return out


def advice(s: Split) -> str:
    """The plain-words line: which is cheaper to shrink."""
    if s.seeds_for_same is None:
        more = "no number of seeds would do the same (the fixed eval items are the floor)"
    else:
        m = math.ceil(s.seeds_for_same - 1e-9)
        more = f"it would take {m} more seed(s) to do the same" if m else "as one more seed would"
    cut = (f"{s.k}x more eval items would cut the spread to {s.spread_k:.3g} (standard error "
           f"{s.se_now:.3g} -> {s.se_k:.3g}); {more}")
    if s.bound:
        return (f"eval sampling ({s.n_items} items per run) could account for up to {s.eval_sd:.3g} "
                f"of the {s.spread:.3g} spread ({100 * s.eval_share:.0f}% of its variance); if it "
                f"does, {cut}")
    return (f"eval sampling is {s.eval_sd:.3g} of the {s.spread:.3g} spread "
            f"({100 * s.eval_share:.0f}% of its variance), training trajectory "
            f"{s.trajectory_sd:.3g}: {cut}")
