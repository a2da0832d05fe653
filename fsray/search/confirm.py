"""The confirmation: the selected configuration re-run on fresh seeds (without settling)."""

from __future__ import annotations

from fsray.search.evaluate import StoreClient, ensure_baselines, evaluate_config
from fsray.search.space import SearchSpace
from fsray.search.summary import best_row, config_rows


def confirm(space: SearchSpace, runner, store: StoreClient, n: int, say) -> None:
    """Re-run the selected configuration on fresh seeds; its records carry stage 'confirmation'."""
    from fsray.errors import RunFailed

    best = best_row(config_rows(store.all_records(), space))
    if best is None:
        say("[tune] no configuration finished on every seed: nothing to confirm")
        return
    seeds = space.seeds.confirmation(n)
    params = {k: best["config"][k] for k in space.space}
    say(f"[tune] confirming {best['label']} on fresh seeds {seeds}")
    ensure_baselines(runner, store, seeds)
    try:
        evaluate_config(space, runner, store, params, seeds, stage="confirmation",
                        trial_id="confirmation", race=False)
    except RunFailed as exc:
        say(f"[tune] confirmation failed: {exc}")
