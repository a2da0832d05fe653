"""analysis.verdict: the verdict rules, the settling plan round by round (and resumed), family
statements, and agreement with the vectorised replay used by the simulations."""

import math

import numpy as np
import pytest

from analysis import settle_sim as ss
from analysis.errors import AnalysisInputError
from analysis.verdict import (DEFAULT_DELTA, FRESH, Design, check_delta, check_settle_budget,
                              family_statement, looks_from_rounds, settle_plan, verdict)


def test_helps_hurts_and_no_effect():
    d = Design(delta=0.01)
    big = [0.05, 0.052, 0.049, 0.051, 0.05, 0.048]
    v = verdict(big, d)
    assert v.verdict == "helps" and v.ge_delta and v.decided_at == 6 and v.lo > 0.01
    assert v.basis == FRESH and v.label(0.01) == "helps (≥0.01)"
    v = verdict([-x for x in big], d)
    assert v.verdict == "hurts" and v.ge_delta and v.hi < -0.01
    small = list(np.random.default_rng(0).normal(0.0, 0.002, 12))
    v = verdict(small, d)
    assert v.verdict == "no effect" and -0.01 < v.eq_lo < v.eq_hi < 0.01
    assert v.label(0.01) == "no effect ≥0.01"


def test_helps_but_not_by_delta():
    v = verdict(list(np.random.default_rng(1).normal(0.006, 0.002, 15)), Design(delta=0.01))
    assert v.verdict == "helps" and not v.ge_delta and v.label() == "helps"


def test_loss_is_oriented():
    # Lower loss is better: a negative loss delta "helps"; the interval stays in loss units.
    v = verdict([-0.05, -0.052, -0.049, -0.051, -0.05], Design(delta=0.01, higher_is_better=False))
    assert v.verdict == "helps" and v.hi < 0 and v.lo < v.hi


def test_undecided_says_what_would_decide():
    v = verdict([0.02, -0.01, 0.03], Design(delta=0.01))
    assert v.verdict == "undecided" and v.seeds_to_decide >= 1 and v.would_decide in ("helps", "no effect")
    assert verdict([0.01], Design()).seeds_to_decide == 2  # a first look needs 3 seeds
    # A tiny mean with a large spread cannot be decided within the horizon: flagged as beyond it.
    v = verdict([0.05, -0.05, 0.04, -0.03], Design(delta=0.01))
    assert v.verdict == "undecided" and not v.within_horizon and v.label().endswith("!)")


def test_projection_is_reached_when_the_estimate_holds():
    """Seeds to decide, then that many more seeds with the same mean and spread: decided."""
    base = np.array([0.012, 0.003, 0.019, 0.008, 0.013])
    d = Design(delta=0.01)
    v = verdict(base, d)
    assert v.verdict == "undecided" and v.within_horizon
    n2 = v.n + v.seeds_to_decide
    z = (base - base.mean()) / base.std(ddof=1)
    grown = base.mean() + base.std(ddof=1) * np.resize(z, n2) / np.resize(z, n2).std(ddof=1)
    assert verdict(grown, d, looks=v.looks).verdict == v.would_decide


def test_no_op_is_a_verdict_of_its_own():
    v = verdict([0.0, 0.0, 0.0], Design())
    assert v.verdict == "no-op" and v.lo == v.hi == 0.0
    assert verdict([0.01, 0.02], Design(), noop=True).verdict == "no-op"


def test_earlier_looks_make_the_boundary_stricter_than_one_look():
    d = [0.011, 0.004, 0.016, 0.009, 0.012, 0.007, 0.013, 0.008]
    one = verdict(d, Design(delta=0.01))
    many = verdict(d, Design(delta=0.01), looks=[3, 4, 5, 6, 7])
    assert one.looks == [8] and many.looks == [3, 4, 5, 6, 7, 8]
    assert many.lo <= one.lo


def test_looks_from_rounds():
    assert looks_from_rounds([None, None, None, 1, 1, 2, 2]) == [3, 5, 7]
    assert looks_from_rounds([0, 0, 0, 1, 1]) == [3, 5]
    assert looks_from_rounds([]) == []


@pytest.mark.parametrize("bad", [0, -0.01, "abc", float("nan"), float("inf"), None, True])
def test_bad_delta(bad):
    with pytest.raises(AnalysisInputError, match="delta must be a positive number"):
        check_delta(bad)
    with pytest.raises(AnalysisInputError):
        settle_plan({"a": [0.1, 0.2, 0.3]}, delta=bad)


def test_settle_plan_round_by_round_and_resumed():
    """A settling loop on three simulated configurations: each round's plan says what to run; the
    records carry their round; a plan rebuilt from the records alone (a resumed search) is the
    same plan."""
    rng = np.random.default_rng(3)
    truth = {"good": (0.03, 0.01), "null": (0.0, 0.004), "noisy": (0.0, 0.08)}
    records = {k: [] for k in truth}  # (delta, round)
    plan = settle_plan({k: [] for k in truth}, delta=0.01, max_seeds_per_config=12, round_size=2)
    assert plan.round() == {"good": 3, "null": 3, "noisy": 3}
    r = 0
    while not plan.done:
        for k, add in plan.round().items():
            records[k] += [(float(rng.normal(*truth[k])), r) for _ in range(add)]
        r += 1
        deltas = {k: [d for d, _ in v] for k, v in records.items()}
        looks = {k: looks_from_rounds([rr for _, rr in v])[:-1] for k, v in records.items()}
        plan = settle_plan(deltas, delta=0.01, looks_by_config=looks, max_seeds_per_config=12)
        # resumed: the same plan from the records' rounds alone
        again = settle_plan(deltas, delta=0.01, looks_by_config=looks, max_seeds_per_config=12)
        assert again.to_dict() == plan.to_dict()
    v = plan.configs
    assert v["good"].verdict == "helps" and v["null"].verdict == "no effect"
    # sd 0.08 against delta 0.01: the 12-seed horizon cannot decide it, and settling stops it early
    assert v["noisy"].verdict == "undecided" and v["noisy"].curtailed and v["noisy"].seeds_to_add == 0
    assert v["noisy"].n < 12 and v["noisy"].note.startswith(f"stopped at {v['noisy'].n} seeds")
    assert "1 of 3 configuration(s) help" in plan.family
    doc = plan.to_dict()
    assert doc["done"] and doc["design"]["horizon"] == 12 and doc["configs"]["good"]["looks"]


def test_settle_plan_total_budget_serves_the_closest_first():
    deltas = {"near": [0.012, 0.003, 0.019, 0.008, 0.013], "far": [0.05, -0.05, 0.02]}
    plan = settle_plan(deltas, delta=0.01, round_size=4, total_budget=4)
    assert plan.round() == {"near": 4}
    assert "total seed budget spent" in plan.configs["far"].note
    with pytest.raises(AnalysisInputError):
        settle_plan(deltas, round_size=0)


def test_no_op_never_the_best_of_a_family():
    vs = {"lstart=12 (no-op)": verdict([0.0] * 5, Design()),
          "real": verdict([0.01, -0.02, 0.005], Design())}
    s = family_statement(vs, 0.01, "kv")
    assert "best real configuration: real" in s and "1 no-op configuration(s) listed as A/A evidence" in s
    assert "only no-op configurations" in family_statement({"a": vs["lstart=12 (no-op)"]}, 0.01)
    rng = np.random.default_rng(5)
    decided = {f"c{i}": verdict(rng.normal(0.0, 0.002, 12), Design()) for i in range(3)}
    assert all(v.verdict == "no effect" for v in decided.values())
    assert "no configuration helps by 0.01 or more" in family_statement(decided, 0.01, "kv")
    plan = settle_plan({"noop": [0.0, 0.0, 0.0], "x": [0.01, 0.02, 0.0]}, noop=["noop"])
    assert plan.configs["noop"].verdict == "no-op" and plan.configs["noop"].seeds_to_add == 0


def test_selection_correction_is_bonferroni_over_k():
    d = Design(delta=0.01, selected_from=10)
    assert d.basis == "Bonferroni over 10" and d.a_effect == pytest.approx(0.05 / 2 / 10)
    x = [0.012, 0.01, 0.015, 0.011, 0.013, 0.009]
    assert verdict(x, d).lo > verdict(x, Design(delta=0.01)).lo - 1.0
    assert verdict(x, d).lo < verdict(x, Design(delta=0.01)).lo


def test_scalar_and_vectorised_replays_agree():
    rng = np.random.default_rng(11)
    design = Design(delta=0.01, horizon=12)
    looks = ss.schedule(12, 3)
    D = np.concatenate([ss.normal_deltas(rng, 60, 12, mu, 0.01) for mu in (0.0, 0.01, 0.02)])
    vec = ss.sequential_verdicts(D, design, looks)
    names = {c: n for n, c in ss.CODES.items()}
    for i in range(D.shape[0]):
        k = int(np.searchsorted(looks, vec["n"][i])) + 1
        v = verdict(D[i, :vec["n"][i]], design, looks=looks[:k])
        assert v.verdict == names[vec["code"][i]], i
        if v.verdict != "undecided":
            assert v.decided_at == vec["n"][i] and v.ge_delta == bool(vec["ge_delta"][i])
    assert DEFAULT_DELTA == 0.01 and math.isfinite(design.delta)


def test_a_budget_smaller_than_one_round_is_refused():
    assert check_settle_budget(4, round_size=2, total_budget=12) == 12
    with pytest.raises(AnalysisInputError, match="smaller than one settling round needs"):
        check_settle_budget(4, round_size=2, total_budget=11)
    with pytest.raises(AnalysisInputError, match="smaller than one look needs"):
        check_settle_budget(4, max_seeds_per_config=2)


def test_settle_state_from_records_gives_the_same_plan():
    """The state a resumed search reads from its records: ordered deltas, looks per round, the
    horizon, no-ops; failed seeds and records of other stages are left out."""
    from test_loaders import fsray_record

    recs = []
    rng = np.random.default_rng(2)
    for s in range(7):
        rec = fsray_record(100 + s, 0.5, 0.5 + float(rng.normal(0.02, 0.005)), stage="confirmation")
        rec["settle"] = {"round": 0 if s < 3 else 1 + (s - 3) // 2, "horizon": 12}
        recs.append(rec)
    failed = fsray_record(107, 0, 0, stage="confirmation", status="failed")
    failed["settle"] = {"round": 2, "horizon": 12}
    noop = fsray_record(0, 0.5, 0.5, stage="confirmation", status="noop", config_hash="b" * 12)
    noop["settle"] = {"round": 0, "horizon": 12}
    recs += [failed, noop, fsray_record(0, 0.5, 0.9)]  # the last: a selection seed, not fresh
    from analysis.verdict import settle_state

    st = settle_state(recs)
    key = "a" * 12
    assert st.looks[key] == [3, 5, 7] and st.horizon[key] == 12 and st.noop == {"b" * 12}
    assert st.last_round == 2 and len(st.deltas[key]) == 7
    assert st.deltas[key][0] == pytest.approx(recs[0]["fs"]["token_acc"] - 0.5)
    plan = settle_plan({**st.deltas, "b" * 12: []}, delta=0.01, looks_by_config=st.looks,
                       max_seeds_per_config=12, noop=st.noop)
    assert plan.configs[key].looks == [3, 5, 7] and plan.configs["b" * 12].verdict == "no-op"
