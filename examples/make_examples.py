"""Write the small example results in the researchers' two formats (numbers made up here, seeded).

    .venv/bin/python examples/make_examples.py      # rewrites the two files next to this script

* ``_summary_kvretrieval_qafter_example_r1_s01234.txt``: a paired-block summary, the file the
  researchers' training script prints after a paired round (a settings line, then per prompt
  length a header with the block's figures and one ``seed=`` line per paired seed);
* ``_round1_example_search_records.jsonl``: staged search records, one JSON line per run, the file
  their hand-run search scripts append to (a ``quick`` stage: a baseline and three candidates per
  seed, 3 seeds).

``fsray report examples/`` reads both (tests/test_report.py checks it does).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SETTINGS = {"task": "kv_retrieval", "q_first": False, "n_train": 2048, "n_val": 256,
            "max_prompt_tokens": 64, "bsz": 64, "max_steps": 400, "eval_every": 50,
            "model_lr": 3e-05, "alpha_init": -2.0, "alpha_lr": 0.0, "fs_variant": "scalar",
            "fs_layer_start": 1, "fs_alpha_schedule": "none", "fs_norm": True, "fs_clip": 1.0,
            "fs_detach": True}


def summary_text(rng: np.random.Generator) -> str:
    lines = [f"filter: {SETTINGS!r}", "=" * 90]
    for length, effect, sd in ((64, 0.004, 0.012), (128, 0.012, 0.010)):
        base = rng.uniform(0.30, 0.40, 5)
        d_acc = np.round(effect + rng.normal(0.0, sd, 5), 4)
        fs = base + d_acc
        d_loss = np.round(-0.8 * d_acc + rng.normal(0.0, 0.01, 5), 4)
        signs = f"{(d_acc > 0).sum()}/{(d_acc == 0).sum()}/{(d_acc < 0).sum()}"
        lines.append(f"L={length} pairs=5 mean d_acc={d_acc.mean():+.4f} std={d_acc.std():.4f} | "
                     f"mean d_loss={d_loss.mean():+.4f} std={d_loss.std():.4f} | sign(+/0/-)={signs}")
        for s in range(5):
            lines.append(f"  seed={s} d_acc={d_acc[s]:+.4f} (no={base[s]:.4f} fs={fs[s]:.4f}) "
                         f"d_loss={d_loss[s]:+.4f}")
    return "\n".join(lines) + "\n"


def records(rng: np.random.Generator) -> list[dict]:
    out = []
    candidates = {"scalar_l1": 0.006, "head_l1": 0.010, "scalar_l2_sched_cos": -0.004}
    for seed in range(3):
        acc = float(rng.uniform(0.30, 0.40))
        loss = float(rng.uniform(2.0, 2.4))
        out.append({"task": "kv_retrieval", "seed": seed, "stage": "quick", "config": "baseline",
                    "status": "ok", "bsz": 64, "best_val_loss": loss, "best_val_tok_acc": acc,
                    "run_dir": f"runs/example/kv_retrieval/s{seed}/no_fs"})
        for name, effect in candidates.items():
            d = effect + float(rng.normal(0.0, 0.01))
            out.append({"task": "kv_retrieval", "seed": seed, "stage": "quick", "config": name,
                        "status": "ok", "bsz": 64, "best_val_loss": loss - 0.8 * d,
                        "best_val_tok_acc": acc + d,
                        "run_dir": f"runs/example/kv_retrieval/s{seed}/{name}/prompt_fs"})
    return out


def main() -> None:
    rng = np.random.default_rng(20261202)
    (HERE / "_summary_kvretrieval_qafter_example_r1_s01234.txt").write_text(summary_text(rng))
    with open(HERE / "_round1_example_search_records.jsonl", "w") as fh:
        for rec in records(rng):
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
