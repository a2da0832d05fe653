"""analysis.contrast and analysis.meta: contrasts of FS effects between two levels of a factor and
random-effects summaries across tasks, held against scipy / statsmodels / textbook formulas on data
with a known contrast and a known between-task spread; the pairing rule; `fsray report --contrast`
and `--across-tasks` in every format; bad input gets one line and exit 2; the researchers' files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from analysis import contrast, meta
from analysis.loaders import load
from analysis.report import ReportOptions, build
from test_loaders import fsray_record, write_store
from test_report import run_cli

ORDERS = ("options_first", "question_first")


def ordered_records(effects, *, seeds_a=range(8), seeds_b=range(8), init="same", sd=0.01,
                    configs=({"alpha_init": -2.0}, {"alpha_init": -3.0}), rng_seed=0):
    """fsray records of ``configs`` on task kv at both orderings: seed s of config c at ordering o
    has FS effect effects[o][c] + seed noise; the seed's own offset is shared by both orderings
    (same initial weights), so the paired contrast removes it."""
    rng = np.random.default_rng(rng_seed)
    offset = {s: rng.normal(0, 3 * sd) for s in range(1000)}
    recs = []
    for o, seeds in zip(ORDERS, (seeds_a, seeds_b)):
        for c, knobs in enumerate(configs):
            for s in seeds:
                d = effects[o][c] + offset[s] + rng.normal(0, sd)
                r = fsray_record(s, 0.5, 0.5 + d, task=f"kv/{o}", config_hash=f"{c:012d}",
                                 label=f"alpha={knobs['alpha_init']}")
                r["config"] = dict(knobs)
                r["task_options"] = {"order": o, "n_pairs": "2-3"}
                if init == "same":
                    h = f"init{s}"
                elif init == "differ":
                    h = f"init{s}-{o}"
                else:
                    h = None
                for side in ("baseline", "fs"):
                    r[side]["init_hash"] = h
                recs.append(r)
    return recs


def _report(tmp_path, recs, **opts):
    write_store(tmp_path / "results.jsonl", recs)
    return build(load(tmp_path), ReportOptions(n_resamples=500, **opts))


def _deltas(rep, order, chash):
    d = rep.data[(rep.data["task"] == f"kv/{order}") & (rep.data["config_hash"] == chash)]
    return d.sort_values("seed")["d_acc"].to_numpy(float)


EFFECTS = {"options_first": [0.05, 0.01], "question_first": [0.00, 0.01]}


def test_paired_contrast_is_scipys_ttest_rel_and_statsmodels_tost(tmp_path):
    rep = _report(tmp_path, ordered_records(EFFECTS))
    c = contrast.build(rep.data, contrast.ContrastSpec.parse("order"), delta=0.01)
    assert len(c.rows) == 2 and set(c.rows["pairing"]) == {contrast.PAIRED}
    for _, r in c.rows.iterrows():
        h = r["config_hash_a"]
        assert r["config_hash_b"] == h            # matched on the FS knobs, not on the label
        a, b = _deltas(rep, ORDERS[0], h), _deltas(rep, ORDERS[1], h)
        ref = sps.ttest_rel(a, b)
        ci = ref.confidence_interval(0.95)
        assert r["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (r["ci_lo"], r["ci_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert r["tost_p"] == pytest.approx(ttost_paired(a, b, -0.01, 0.01)[0], rel=1e-9)
        assert "8 shared seeds with the same initial weights" in r["pairing_why"]
    by = {r["config_hash_a"]: r for _, r in c.rows.iterrows()}
    # config 0: +0.05 vs 0.00 -> differs (A > B); config 1: 0.01 vs 0.01 -> undecided or same
    assert by["000000000000"]["verdict"] == "differs" and by["000000000000"]["diff"] > 0.03
    assert by["000000000001"]["verdict"] != "differs"


@pytest.mark.parametrize("init,seeds_b,why", [
    ("differ", range(8), "initial weights differ"),
    ("none", range(8), "initial weights are not recorded"),
    ("same", range(100, 108), "no shared seeds"),
])
def test_pairing_rule_unpaired_is_welch(tmp_path, init, seeds_b, why):
    rep = _report(tmp_path, ordered_records(EFFECTS, seeds_b=seeds_b, init=init))
    c = contrast.build(rep.data, contrast.ContrastSpec.parse("order=options_first,question_first"))
    for _, r in c.rows.iterrows():
        assert r["pairing"] == contrast.WELCH and why in r["pairing_why"]
        h = r["config_hash_a"]
        a, b = _deltas(rep, ORDERS[0], h), _deltas(rep, ORDERS[1], h)
        ref = sps.ttest_ind(a, b, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert r["dof"] == pytest.approx(ref.df, rel=1e-9)
        assert (r["ci_lo"], r["ci_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert r["tost_p"] == pytest.approx(
            ttost_ind(a, b, -0.01, 0.01, usevar="unequal")[0], rel=1e-9)


def test_pairing_uses_only_the_shared_seeds(tmp_path):
    rep = _report(tmp_path, ordered_records(EFFECTS, seeds_b=range(2, 10)))
    c = contrast.build(rep.data, contrast.ContrastSpec("order"))
    r = c.rows.iloc[0]
    assert r["pairing"] == contrast.PAIRED and r["n_pairs"] == 6
    assert "4 unshared seed(s) left out" in r["pairing_why"]
    a = _deltas(rep, ORDERS[0], r["config_hash_a"])[2:]
    b = _deltas(rep, ORDERS[1], r["config_hash_a"])[:6]
    assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-9)


def test_paired_removes_the_shared_seed_noise(tmp_path):
    """The seeds' shared offsets (3x the noise) hide a 0.02 contrast from Welch, not from pairing."""
    eff = {"options_first": [0.02, 0.0], "question_first": [0.0, 0.0]}
    paired = contrast.build(_report(tmp_path / "p", ordered_records(eff, sd=0.004)).data,
                            contrast.ContrastSpec("order"))
    welch = contrast.build(_report(tmp_path / "w", ordered_records(eff, sd=0.004, init="none")).data,
                           contrast.ContrastSpec("order"))
    p_paired = paired.rows.set_index("config_hash_a").loc["000000000000", "p"]
    p_welch = welch.rows.set_index("config_hash_a").loc["000000000000", "p"]
    assert p_paired < 1e-4 < p_welch


def test_equivalence_and_seeds_to_decide():
    rng = np.random.default_rng(3)
    same = contrast.compare(rng.normal(0.01, 0.002, 12), rng.normal(0.01, 0.002, 12),
                            paired=False, delta=0.01)
    assert same.verdict == "same within delta"
    und = contrast.compare(rng.normal(0.02, 0.01, 3), rng.normal(0.0, 0.01, 3), paired=True,
                           delta=0.01)
    assert und.verdict == "undecided" and und.seeds_to_decide >= 1 and und.would_decide
    # adding the projected seeds at the same mean and spread decides it
    a0, b0 = np.array([0.03, 0.01, 0.02]), np.array([0.0, 0.0, 0.0])
    v = contrast.compare(a0, b0, paired=True, delta=0.01)
    k = v.seeds_to_decide
    z = (a0 - b0) - (a0 - b0).mean()
    z = z / z.std(ddof=1) * (a0 - b0).std(ddof=1)
    more = np.resize(z, 3 + k)
    more = (more - more.mean()) / more.std(ddof=1) * (a0 - b0).std(ddof=1) + (a0 - b0).mean()
    done = contrast.compare(more, np.zeros(3 + k), paired=True, delta=0.01, looks=[3])
    assert done.verdict == v.would_decide


def test_false_differs_rate_is_controlled_when_levels_agree():
    """No true contrast: 'differs' is said at most ~alpha of the time over three looks."""
    rng = np.random.default_rng(7)
    wrong = 0
    reps = 300
    for _ in range(reps):
        a, b = rng.normal(0, 0.01, 12), rng.normal(0, 0.01, 12)
        v = contrast.compare(a, b, paired=True, delta=0.005, looks=[4, 8], horizon=12)
        wrong += v.verdict == "differs"
    assert wrong / reps < 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps)


# -------------------------------------------------------------------------------------------------
# across tasks


def _dl(eff, var):
    """DerSimonian-Laird by the textbook formulas (the independent reference)."""
    w = 1 / var
    fe = (w * eff).sum() / w.sum()
    q = (w * (eff - fe) ** 2).sum()
    k = eff.size
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()))
    wr = 1 / (var + tau2)
    mu = (wr * eff).sum() / wr.sum()
    return mu, math.sqrt(1 / wr.sum()), tau2, q


def test_meta_pool_matches_the_textbook_dl_and_recovers_tau():
    rng = np.random.default_rng(11)
    k, mu_true, tau = 400, 0.01, 0.02
    eff = mu_true + rng.normal(0, tau, k) + rng.normal(0, 0.01, k)
    var = np.full(k, 0.01 ** 2) * rng.uniform(0.5, 2, k)
    eff = mu_true + rng.normal(0, tau, k) + rng.normal(0, np.sqrt(var))
    r = meta.pool(eff, var, [f"t{i}" for i in range(k)], method="dl")
    mu, se, tau2, q = _dl(eff, var)
    assert (r.mu, r.se, r.tau2, r.q) == pytest.approx((mu, se, tau2, q), rel=1e-8)
    assert r.ci_lo == pytest.approx(mu - 1.959964 * se, rel=1e-5)
    assert math.sqrt(r.tau2) == pytest.approx(tau, rel=0.15)
    assert r.i2 == pytest.approx(max(0, (q - (k - 1)) / q), rel=1e-8)
    assert r.q_p == pytest.approx(sps.chi2.sf(q, k - 1))
    half = sps.t.ppf(0.975, k - 2) * math.sqrt(tau2 + se ** 2)
    assert (r.pi_lo, r.pi_hi) == pytest.approx((mu - half, mu + half), rel=1e-8)
    pm = meta.pool(eff, var, [f"t{i}" for i in range(k)], method="pm")
    assert math.sqrt(pm.tau2) == pytest.approx(tau, rel=0.15)


def test_meta_intervals_cover_by_simulation():
    """Pooled interval covers mu, the prediction interval covers a new task's effect (8 tasks of
    5 seeds, tau 0.02): near nominal (random-effects Wald intervals run a little short at few
    tasks)."""
    rng = np.random.default_rng(5)
    k, n, mu, tau, sd = 8, 5, 0.01, 0.02, 0.02
    cover_mu = cover_new = 0
    reps = 300
    for _ in range(reps):
        theta = mu + rng.normal(0, tau, k)
        d = theta[:, None] + rng.normal(0, sd, (k, n))
        r = meta.pool(d.mean(1), d.var(1, ddof=1) / n, range(k), method="pm")
        cover_mu += r.ci_lo <= mu <= r.ci_hi
        new = mu + rng.normal(0, tau)
        cover_new += r.pi_lo <= new <= r.pi_hi
    assert 0.85 <= cover_mu / reps <= 0.99
    assert 0.88 <= cover_new / reps <= 1.0


def test_meta_build_over_tasks_from_records(tmp_path):
    """One configuration on 4 tasks of known effects: the per-task estimates are the seeds' mean
    and s^2/n, pooled as statsmodels does."""
    rng = np.random.default_rng(2)
    recs, truth = [], [0.0, 0.02, 0.04, -0.01]
    for t, eff in enumerate(truth):
        for s in range(6):
            r = fsray_record(s, 0.5, 0.5 + eff + rng.normal(0, 0.005), task=f"task{t}")
            recs.append(r)
    rep = _report(tmp_path, recs)
    res = meta.build(rep.data, method="dl")
    assert [r.what for r in res][0] == meta.AS_CONFIGURED
    per = rep.data.groupby("task")["d_acc"]
    eff, var = per.mean().to_numpy(), (per.var(ddof=1) / per.size()).to_numpy()
    mu, se, tau2, q = _dl(eff, var)
    for r in res:   # as configured, and the one configuration: the same four estimates
        assert r.k == 4 and (r.mu, r.tau2, r.q) == pytest.approx((mu, tau2, q), rel=1e-8)
        assert r.tau2 > 0 and r.i2 > 0.9   # the tasks truly differ


# -------------------------------------------------------------------------------------------------
# the command


def test_every_format_carries_contrast_and_across_tasks(tmp_path, monkeypatch, capsys):
    recs = ordered_records(EFFECTS)
    write_store(tmp_path / "run" / "results.jsonl", recs)
    args = [tmp_path / "run", "--contrast", "order", "--across-tasks"]
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["contrasts"][0]["rows"]) == 2 and doc["across_tasks"][0]["k"] == 2
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--format", "csv")
    df = pd.read_csv(__import__("io").StringIO(out))
    assert (df["section"] == "contrast").sum() == 2 and (df["section"] == "across tasks").sum() >= 1
    row = df[df["section"] == "contrast"].iloc[0]
    assert row["p"] == pytest.approx(doc["contrasts"][0]["rows"][0]["p"], rel=1e-9)
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--format", "md")
    assert "## Contrast of order" in out and "## Across tasks" in out
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--format", "table")
    assert "differs (A > B)" in out and "FS as configured" in out
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--format", "html")
    assert "<h2>Contrast of order" in out and out.count("Across tasks: ") >= 2
    after = out.split("<h3>Across tasks: FS as configured")[1].split("</h3>", 1)[1]
    assert after.startswith("<img") and "data:image/png;base64," in after[:300]


@pytest.mark.parametrize("argv,says", [
    (["--contrast", "order"], "one level only"),
    (["--contrast", "colour"], "no such factor"),
    (["--contrast", "order=options_first,sideways"], "level 'sideways' not in the input"),
    (["--contrast", "alpha_init"], "no configuration is present at both levels"),
])
def test_bad_contrast_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, says):
    recs = ordered_records(EFFECTS)
    if "one level only" in says:
        recs = [r for r in recs if r["task"].endswith(ORDERS[0])]
    if "at both levels" in says:  # each alpha at one ordering only
        recs = [r for r in recs if (r["config"]["alpha_init"] == -2.0) == r["task"].endswith(ORDERS[0])]
    write_store(tmp_path / "results.jsonl", recs)
    code, out, err = run_cli(monkeypatch, capsys, tmp_path, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsray: error: --contrast") and says in lines[0]
    assert "Traceback" not in err


# -------------------------------------------------------------------------------------------------
# the researchers' files


def _seed_deltas(path: Path) -> np.ndarray:
    """d_acc of each seed line of a researchers' paired-block file, read here independently."""
    return np.array([float(m) for m in re.findall(r"^\s*seed=\d+ d_acc=([-+]\d\.\d+)",
                                                  path.read_text(), re.M)])


def test_upstream_contrasts_and_pooled_effect(upstream_dir, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, upstream_dir, "--contrast", "order",
                             "--across-tasks", "--format", "json")
    assert code in (0, 1), err
    doc = json.loads(out)
    rows = doc["contrasts"][0]["rows"]

    def row(config_a, config_b, task):
        got = [r for r in rows if r["config_a"] == config_a and r["config_b"] == config_b
               and r["configuration"].startswith(task)]
        assert len(got) == 1, (config_a, config_b, task)
        return got[0]

    f = lambda name: _seed_deltas(upstream_dir / f"_summary_{name}.txt")  # noqa: E731
    cases = [
        (row("stabilized_r2", "stabilized_r3", "arc"), f("arc_optionsfirst_stabilized_r2"),
         f("arc_qfirst_stabilized_r3")),
        (row("stabilized_r5", "stabilized_r5", "arc"), f("arc_optionsfirst_stabilized_r5_s01234"),
         f("arc_qfirst_stabilized_r5_s01234")),
        (row("stabilized_len4096_r12_lstart10_alpha-3", "stabilized_len4096_r12_lstart10_alpha-3",
             "hotpot L=4096"), f("hotpot_qafter_stabilized_len4096_r12_lstart10_alpha-3_s01234"),
         f("hotpot_qfirst_stabilized_len4096_r12_lstart10_alpha-3_s01234")),
        (row("r1", "r1", "sudoku4"), f("sudoku4_prefix_r1_s012"), f("sudoku4_suffix_r1_s012")),
        (row("r1", "r1", "sudoku9"), f("sudoku9_prefix_r1_s012"), f("sudoku9_suffix_r1_s012")),
    ]
    for r, a, b in cases:
        assert r["pairing"] == contrast.WELCH   # their files do not record initial weights
        ref = sps.ttest_ind(a, b, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert r["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-9)
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-6)
        assert (r["ci_lo"], r["ci_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-6)
        assert r["verdict"] in contrast.VERDICT_WORDS
    pooled = [m for m in doc["across_tasks"] if m["what"] == meta.AS_CONFIGURED and m["stage"] == "import"]
    assert len(pooled) == 1 and pooled[0]["k"] >= 20


def test_upstream_sudoku_pooled_by_hand(upstream_dir, monkeypatch, capsys, tmp_path):
    """The four Sudoku tasks pooled (DL): each task one configuration of 3 seeds."""
    names = ["sudoku4_prefix", "sudoku4_suffix", "sudoku9_prefix", "sudoku9_suffix"]
    paths = [upstream_dir / f"_summary_{n}_r1_s012.txt" for n in names]
    code, out, err = run_cli(monkeypatch, capsys, *paths, "--across-tasks", "--tau2", "dl",
                             "--format", "json")
    assert code == 0, err
    m = json.loads(out)["across_tasks"][0]
    d = [_seed_deltas(p) for p in paths]
    eff = np.array([x.mean() for x in d])
    var = np.array([x.var(ddof=1) / x.size for x in d])
    mu, se, tau2, q = _dl(eff, var)
    assert m["k"] == 4 and (m["mu"], m["se"], m["tau2"], m["q"]) == pytest.approx(
        (mu, se, tau2, q), rel=1e-6)


@pytest.mark.parametrize("init,pairing,paired", [
    ("none", "seed", True),      # asked: the caller knows the seeds started alike
    ("differ", "seed", False),   # recorded weights that differ still forbid pairing
    ("same", "welch", False),
])
def test_contrast_pairing_option(tmp_path, init, pairing, paired):
    rep = _report(tmp_path, ordered_records(EFFECTS, init=init))
    c = contrast.build(rep.data, contrast.ContrastSpec("order"), pairing=pairing)
    r = c.rows.iloc[0]
    a, b = _deltas(rep, ORDERS[0], r["config_hash_a"]), _deltas(rep, ORDERS[1], r["config_hash_a"])
    ref = sps.ttest_rel(a, b) if paired else sps.ttest_ind(a, b, equal_var=False)
    assert (r["pairing"] == contrast.PAIRED) == paired
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_across_tasks_needs_two_tasks_one_line_exit_2(tmp_path, monkeypatch, capsys):
    write_store(tmp_path / "results.jsonl", [fsray_record(s, 0.5, 0.51 + 0.001 * s) for s in range(4)])
    code, out, err = run_cli(monkeypatch, capsys, tmp_path, "--across-tasks")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("fsray: error: --across-tasks: no stage has two tasks")
