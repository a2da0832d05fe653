"""A simulated trainable: a known FS effect surface plus seed noise, no training.

The no_fs metric of seed s is ``baseline_mean + baseline_sd * z_s`` (shared by every configuration,
as a real paired baseline is); the FS run adds the configuration's true effect plus paired noise
``noise_sd * scale(config) * e_{config, s}``. Both noises are drawn from generators keyed by a hash
of (config, seed), so any (config, seed) pair gives the same numbers in any process, in any order:
what makes resume and caching testable. ``true_effect`` is the ground truth the benches check
the search against.

A task option named in ``simulated.level_effects`` (a search's contrast) makes its levels tasks of
their own: the level's value enters every noise key (each level has its own baselines and its own
paired noise) and adds its effect to the FS run. Runs record an ``init_hash`` naming the seed: the
initial weights of seed s are the same at every level, as the real trainer's are.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from fsray.fsconfig import FSConfig, config_hash
from fsray.search.space import SimulatedSection


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _knob_term(effect, value) -> float:
    if effect.values is not None:
        return float(effect.values.get(str(value).lower() if isinstance(value, bool) else str(value), 0.0))
    x = float(value)
    if effect.log:
        x = math.log10(max(x, 1e-12))
    return effect.height * math.exp(-0.5 * ((x - effect.peak) / effect.width) ** 2)


def level_of(sim: SimulatedSection, options: dict | None) -> tuple:
    """The values of the task options that have level effects (empty: no levels)."""
    return tuple(f"{k}={(options or {}).get(k)}" for k in sorted(sim.level_effects))


def true_effect(sim: SimulatedSection, cfg: FSConfig, options: dict | None = None) -> float:
    """Expected paired delta of ``cfg`` on a task with ``options``: the sum of its knobs' terms and
    of its levels' effects; exactly 0 for a no-op."""
    if cfg.is_noop(sim.n_layer):
        return 0.0
    values = cfg.model_dump()
    knobs = sum(_knob_term(effect, values[knob]) for knob, effect in sim.effects.items())
    levels = sum(table.get(str((options or {}).get(k)), 0.0) for k, table in sim.level_effects.items())
    return float(knobs + levels)


def noise_sd(sim: SimulatedSection, cfg: FSConfig) -> float:
    values = cfg.model_dump()
    scale = 1.0
    for knob, table in sim.noise_scale.items():
        v = values[knob]
        scale *= float(table.get(str(v).lower() if isinstance(v, bool) else str(v), 1.0))
    return sim.noise_sd * scale


def _run(mode: str, acc: float, seconds: float, seed: int | None = None) -> dict:
    acc = float(min(1.0, max(0.0, acc)))
    seq = acc * acc  # exact match is rarer than token accuracy, and moves with it
    loss = float(-math.log(max(acc, 1e-3)))
    return {
        "mode": mode, "status": "ok", "failure": None,
        "token_acc": acc, "loss": loss, "seq_acc": seq,
        "best_step": 1, "steps": 1, "tokens": 0, "seconds": seconds,
        "curve": [[1, acc, loss, seq]], "learned": None, "cached": False,
        **({} if seed is None else {"init_hash": f"sim-init-{int(seed)}"}),
    }


def baseline_run(sim: SimulatedSection, seed: int, options: dict | None = None) -> dict:
    """The simulated no_fs run of ``seed`` (on the task level of ``options``)."""
    if sim.seconds_per_run:
        time.sleep(sim.seconds_per_run)
    z = _rng("baseline", seed, *level_of(sim, options)).standard_normal()
    return _run("no_fs", sim.baseline_mean + sim.baseline_sd * z, sim.seconds_per_run, seed)


def fs_run(sim: SimulatedSection, cfg: FSConfig, seed: int, baseline: dict,
           options: dict | None = None) -> dict:
    """The simulated prompt_fs run of ``cfg`` on ``seed``, paired with ``baseline``.

    It never fails: tests that need a crashing, diverging or out-of-memory run wrap this function
    themselves (``tests/sim_faults.py``).
    """
    if sim.seconds_per_run:
        time.sleep(sim.seconds_per_run)
    if cfg.is_noop(sim.n_layer):
        return {**baseline, "mode": "prompt_fs", "cached": False}
    e = _rng("pair", config_hash(cfg), seed, *level_of(sim, options)).standard_normal()
    delta = true_effect(sim, cfg, options) + noise_sd(sim, cfg) * e
    return _run("prompt_fs", baseline["token_acc"] + delta, sim.seconds_per_run, seed)


def baseline_key(sim: SimulatedSection, seed: int, options: dict | None = None) -> str:
    """Content hash of what determines a simulated baseline (the cache key)."""
    blob = "/".join(["sim", str(sim.baseline_mean), str(sim.baseline_sd), str(seed),
                     *level_of(sim, options)])
    return "sim-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
