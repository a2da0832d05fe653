"""Curtailment of the SPRT settling design (analysis.sprt.p_decide; issue 20 item 2): an undecided
configuration the horizon would decide with a predictive probability below ``curtail`` stops.

Checked here: ``p_decide`` against simulated futures drawn from the predictive distribution it
states (known variance, so the reference is exact); that a curtailed design never gives a verdict
the uncurtailed one does not give on the same seeds (so its error rates are the SPRT's); what it
saves on all-or-nothing seeds and costs on normal ones; the verdict's flag, label and note, the
settle plan's stop, the records' ``settle.curtail`` replayed by the report, and bad values."""

import math

import numpy as np
import pytest

from analysis import settle_sim as ss
from analysis import sprt
from analysis.errors import AnalysisInputError
from analysis.loaders import load
from analysis.report import ReportOptions, build
from analysis.verdict import Design, settle_plan, verdict
from test_loaders import fsray_record, write_store

HORIZON = 20
LOOKS = ss.schedule(HORIZON, 2)
DELTA = 0.01


@pytest.mark.parametrize("n,mean,closed", [(5, 0.004, (False, False)), (7, 0.012, (False, False)),
                                           (9, 0.001, (True, False)), (3, -0.006, (False, False))])
def test_p_decide_matches_simulated_futures_at_known_variance(n, mean, closed):
    """With the variance known (infinite prior degrees of freedom, s0^2 = sigma^2) the stated
    predictive is exact: the unknown mean ~ N(mean, sigma^2 / n) (flat prior), the seeds still to
    come ~ N(mu, sigma^2). Simulate them, take the horizon look's rule written out here (LLR =
    H delta (m_H - delta / 2) / sigma^2 for +delta, mirrored for -delta), and compare."""
    sigma, H = 0.01, HORIZON
    A, B = sprt.thresholds(H, 0.025, 0.05, math.inf)
    got = float(sprt.p_decide(n, n * mean, 0.0, DELTA, A, B, math.inf, sigma ** 2,
                              closed[0], closed[1], H))
    rng = np.random.default_rng(n)
    reps = 200_000
    mu = rng.normal(mean, sigma / math.sqrt(n), reps)
    future = rng.normal(mu * (H - n), sigma * math.sqrt(H - n))     # sum of the H - n seeds to come
    m_h = (n * mean + future) / H
    up = H * DELTA * (m_h - DELTA / 2) / sigma ** 2
    dn = H * DELTA * (-m_h - DELTA / 2) / sigma ** 2
    helps = ~closed[0] & (up >= A)
    hurts = ~closed[1] & (dn >= A)
    none = (closed[0] | (up <= -B)) & (closed[1] | (dn <= -B))
    want = float((helps | hurts | none).mean())
    assert got == pytest.approx(want, abs=0.005)


def test_p_decide_falls_as_the_spread_grows():
    A, B = sprt.thresholds(HORIZON, 0.025, 0.05, 0.0)
    n, m = 5, 0.005
    ps = [float(sprt.p_decide(n, n * m, (n - 1) * s * s + n * m * m, DELTA, A, B, 0.0, math.nan,
                              False, False, HORIZON)) for s in (0.002, 0.01, 0.03, 0.1, 0.3)]
    assert all(a >= b for a, b in zip(ps, ps[1:]))
    assert ps[0] > 0.9 and ps[-1] < 0.01


def _compare(D, design):
    plain = ss.sequential_verdicts(D, design, LOOKS)
    cut = ss.sequential_verdicts(D, Design(**{**design.__dict__, "curtail": sprt.CURTAIL}), LOOKS)
    return plain, cut


@pytest.mark.parametrize("scenario", ["normal", "all-or-nothing"])
def test_curtailment_only_removes_verdicts(scenario):
    """On the same seeds, every verdict of the curtailed design is the uncurtailed one's, reached
    at the same look; so every error rate can only fall."""
    rng = np.random.default_rng(11)
    reps = 4000
    for mu in (0.0, DELTA, -DELTA):
        if scenario == "normal":
            D = ss.normal_deltas(rng, reps, HORIZON, mu, DELTA / 0.6)
        else:
            D = ss.bimodal_deltas(rng, reps, HORIZON, mu, quality_sd=0.01)
        plain, cut = _compare(D, Design(delta=DELTA, horizon=HORIZON))
        decided = cut["code"] != ss.CODES["undecided"]
        assert np.array_equal(cut["code"][decided], plain["code"][decided])
        assert np.array_equal(cut["n"][decided], plain["n"][decided])
        assert np.all(cut["n"] <= plain["n"])
        assert cut["curtailed"].any()


def test_family_curtailment_saves_seeds_on_all_or_nothing_and_little_is_lost(capsys):
    """Families of 10 (borrowed variance, the settling default): on all-or-nothing seeds the
    curtailed design runs far fewer seeds for the same correct verdicts; on normal deltas at
    delta / sd = 0.6 (the horizon too short for many) it loses few correct verdicts."""
    rng = np.random.default_rng(12)
    reps = 150
    rows = []
    for name, make in (("all-or-nothing", lambda m: np.stack(
            [ss.bimodal_deltas(rng, reps, HORIZON, m, quality_sd=0.01) for _ in range(10)], axis=1)),
                       ("normal 0.6", lambda m: rng.normal(m, DELTA / 0.6, (reps, 10, HORIZON)))):
        for mu in (0.0, DELTA):
            D = make(mu)
            d = Design(delta=DELTA, horizon=HORIZON)
            plain = ss.family_verdicts(D, d, LOOKS)
            cut = ss.family_verdicts(D, Design(**{**d.__dict__, "curtail": sprt.CURTAIL}), LOOKS)
            dec = cut["code"] != ss.CODES["undecided"]
            assert np.array_equal(cut["code"][dec], plain["code"][dec])
            ok = [ss.correct(r["code"], mu, DELTA).mean() for r in (plain, cut)]
            seeds = [r["n"].mean() for r in (plain, cut)]
            rows.append((name, mu, seeds, ok))
    with capsys.disabled():
        for name, mu, seeds, ok in rows:
            print(f"\n{name} at mean {mu}: seeds {seeds[0]:.2f} -> {seeds[1]:.2f} curtailed; correct "
                  f"{ok[0]:.3f} -> {ok[1]:.3f}")
    for name, mu, seeds, ok in rows:
        if name == "all-or-nothing":
            assert seeds[1] < 0.75 * seeds[0]            # measured 0.59-0.64
            assert ok[1] >= ok[0] - 0.005
        else:
            assert seeds[1] <= seeds[0]
            assert ok[1] >= ok[0] - 0.05                 # measured 0.00-0.03 lost


def test_verdict_flags_a_configuration_the_horizon_cannot_decide():
    d = [0.3, -0.25, 0.01, 0.02, -0.01]        # one seed that learned where its baseline did not
    v = verdict(d, Design(delta=DELTA, curtail=0.05), looks=[3, 5])
    assert v.verdict == "undecided" and v.curtailed and v.p_decide < 0.05
    assert "stopped" in v.label(DELTA) and v.note.startswith("stopped at 5 seeds")
    # without curtailment: the same verdict, its chance stated, no stop
    v0 = verdict(d, Design(delta=DELTA), looks=[3, 5])
    assert v0.verdict == "undecided" and not v0.curtailed and v0.p_decide == pytest.approx(v.p_decide)
    # a close call is not stopped, nor is any configuration at its horizon (nothing is left to save)
    close = verdict([0.012, -0.006, 0.02, -0.004, 0.006], Design(delta=DELTA, curtail=0.05), looks=[3, 5])
    assert not close.curtailed and close.p_decide > 0.05
    at_h = verdict(d * 4, Design(delta=DELTA, horizon=20, curtail=0.05), looks=range(3, 21, 2))
    assert not at_h.curtailed and at_h.p_decide is None
    # the settling plan gives a stopped configuration no seeds and settles it (estimate included)
    plan = settle_plan({"a": d, "b": [0.012, 0.004, 0.015]}, DELTA, looks_by_config={"a": [3, 5], "b": [3]})
    assert plan.configs["a"].curtailed and plan.configs["a"].seeds_to_add == 0
    assert plan.configs["a"].estimate is not None
    assert plan.configs["b"].seeds_to_add == 2
    plan0 = settle_plan({"a": d}, DELTA, looks_by_config={"a": [3, 5]}, curtail=0.0)
    assert plan0.configs["a"].seeds_to_add == 2 and not plan0.configs["a"].curtailed


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.05", math.nan])
def test_bad_curtail_is_refused(bad):
    with pytest.raises(AnalysisInputError, match="curtail must be a probability"):
        Design(curtail=bad)


def _settled_store(tmp_path, curtail):
    """Fresh-seed records of one configuration as a settling loop writes them (rounds 0 and 1)."""
    recs = []
    deltas = [0.3, -0.25, 0.01, 0.02, -0.01]
    for i, dlt in enumerate(deltas):
        r = fsray_record(100 + i, 0.5, 0.5 + dlt, stage="confirmation")
        r["settle"] = {"round": 0 if i < 3 else 1, "horizon": 20, "design": "sprt"}
        if curtail is not None:
            r["settle"]["curtail"] = curtail
        recs.append(r)
    path = tmp_path / f"results_{type(curtail).__name__}_{curtail}.jsonl"
    write_store(path, recs)
    return path


def test_report_replays_the_recorded_curtailment_and_older_records_are_unchanged(tmp_path):
    opts = ReportOptions(delta=DELTA, metric="acc")
    new = build(load([_settled_store(tmp_path, 0.05)]), opts).summary
    old = build(load([_settled_store(tmp_path, None)]), opts).summary
    row_new = new[new["stage"] == "confirmation"].iloc[0]
    row_old = old[old["stage"] == "confirmation"].iloc[0]
    assert row_new["verdict"] == row_old["verdict"] == "undecided"
    assert "stopped" in row_new["verdict_label"] and "stopped at 5 seeds" in row_new["verdict_note"]
    assert "stopped" not in row_old["verdict_label"]
    # a record whose curtail is not a probability is read as absent: nothing is flagged
    for bad in (1.5, "0.05", True):
        odd = build(load([_settled_store(tmp_path, bad)]), opts).summary
        assert "stopped" not in odd[odd["stage"] == "confirmation"].iloc[0]["verdict_label"]
