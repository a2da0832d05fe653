"""analysis.evalsplit: the split of the paired-delta spread into eval-item sampling and training
trajectory, against simulated runs with known components; the per-item record form; the bound."""

import math

import numpy as np
import pytest

from analysis.errors import AnalysisInputError
from analysis.evalsplit import (decode_items, encode_items, split_bound, split_from_items,
                                split_from_matrix)


def test_items_round_trip_and_bad_input():
    t = np.array([1, 2, 2, 300])
    c = np.array([0, 2, 1, 299])
    doc = encode_items(t, c)
    assert doc["dtype"] == "u2" and doc["n"] == 4
    tt, cc = decode_items(doc)
    assert np.array_equal(tt, t) and np.array_equal(cc, c)
    assert encode_items([1, 1], [1, 0])["dtype"] == "u1"
    with pytest.raises(AnalysisInputError):
        encode_items([1, 1], [2, 0])
    with pytest.raises(AnalysisInputError, match="not readable"):
        decode_items({"tokens": "!!", "correct": 3})


def test_known_components_are_recovered():
    """a_si = tau_s + mu_i + e_si: trajectory sd, interaction and item floor come back (averaged
    over 200 simulated configurations of 8 seeds x 300 items)."""
    rng = np.random.default_rng(0)
    S, N, reps = 8, 300, 200
    sd_tau, sd_mu, sd_e = 0.02, 0.3, 0.5
    got = []
    for _ in range(reps):
        A = (rng.normal(0, sd_tau, (S, 1)) + rng.normal(0, sd_mu, (1, N)) + rng.normal(0, sd_e, (S, N)))
        s = split_from_matrix(A)
        got.append((s.eval_var, s.trajectory_var, s.item_floor ** 2))
    ev, tr, fl = np.mean(got, axis=0)
    assert ev == pytest.approx(sd_e ** 2 / N, rel=0.05)
    assert tr == pytest.approx(sd_tau ** 2, rel=0.2)
    assert fl == pytest.approx(sd_mu ** 2 / N, rel=0.1)


def test_binary_runs_with_a_known_eval_noise():
    """Item outcomes of both runs drawn per seed (fs shifted by the seed's trajectory effect):
    the eval part is sqrt(mean(p(1-p) + q(1-q)) / N); the split says how many more items and
    seeds it would take."""
    rng = np.random.default_rng(1)
    S, N, reps = 6, 384, 150
    p = rng.uniform(0.1, 0.5, N)              # per-item chance no_fs is right
    ev, tr, shares = [], [], []
    for _ in range(reps):
        tau = rng.normal(0.0, 0.03, S)
        pairs = []
        for s in range(S):
            q = np.clip(p + tau[s], 0, 1)
            base = (rng.random(N) < p).astype(int)
            fs = (rng.random(N) < q).astype(int)
            ones = np.ones(N, int)
            pairs.append(((ones, base), (ones, fs)))
        sp = split_from_items(pairs)
        ev.append(sp.eval_var)
        tr.append(sp.trajectory_var)
        shares.append(sp.eval_share)
    q = p  # on average over tau
    expect = np.mean(p * (1 - p) + q * (1 - q)) / N
    assert np.mean(ev) == pytest.approx(expect, rel=0.05)
    assert np.mean(tr) == pytest.approx(0.03 ** 2 * (1 - 0.0), rel=0.25)
    sp = split_from_items(pairs)
    assert "4x more eval items would cut the spread to" in sp.advice
    assert sp.spread_k < sp.spread and sp.se_k < sp.se_now
    if sp.seeds_for_same is not None:   # the same standard error from seeds alone
        m = sp.seeds_for_same
        assert math.sqrt(sp.spread ** 2 / (S + m) + sp.item_floor ** 2) == pytest.approx(sp.se_k, rel=1e-6)


def test_bound_from_the_eval_size():
    """The researchers' ARC options-first round: 384 answer tokens at accuracy ~0.31: eval
    sampling can account for up to ~0.033 of the spread."""
    sp = split_bound([-0.0026, 0.0052, -0.0573, 0.0234, -0.0703], 0.3255, 0.3052, 384)
    assert sp.bound and sp.eval_sd == pytest.approx(math.sqrt((0.3255 * 0.6745 + 0.3052 * 0.6948) / 384))
    assert sp.eval_sd == pytest.approx(0.0333, abs=0.001) and sp.spread == pytest.approx(0.0367 * math.sqrt(5 / 4), abs=1e-3)
    assert "could account for up to" in sp.advice and "384 items" in sp.advice
    with pytest.raises(AnalysisInputError):
        split_bound([0.1, 0.2], 0.3, 1.2, 384)
