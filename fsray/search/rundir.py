"""A search's run directory: where it lies, what it holds, and the checks before a run (re)uses it.

Layout of a run directory::

    <run>/space.json         the validated search (what --resume continues)
    <run>/results.jsonl      one fsray.paired/1 record per finished paired seed (the cache)
    <run>/baselines.jsonl    baselines this search trained (the rest came from the shared cache)
    <run>/optuna.db          the Optuna study (SQLite; any SQLAlchemy URL via `optuna_storage:`)
    <run>/tune/              Tune's experiment state of the latest run (a resumed search plans from
                             the records, not from it: fsray.search.resume; the killed run's is kept
                             as tune.previous/)
    <run>/.fsray.lock        held (flock) by the one search running here (fsray.paths.RunLock)
    <run>/results.jsonl.damaged  lines of the store a crash left unreadable, set aside with why
    <run>/train/             Ray Train's state and the seed runs' resumable state (unless
                             `storage_path:` names a shared location)
    <run>/ray.log            Ray's own output during a search (the terminal gets it with --debug)
    <run>/summary.json, <run>/importance.json

Every path comes from ``fsray.paths`` (the one guard of where fsray writes): the run directory is
fsray's own or new, never a file, the search file or a folder outside results_dir, and a second
search on it is refused while one runs. ``check_run_dir`` does every check that needs no write, so
that bad input touches nothing; ``prepare_run_dir`` then creates it.
"""

from __future__ import annotations

from pathlib import Path

from fsray.errors import UsageError
from fsray.search.space import SearchSpace

TUNE_DIR = "tune"
RAY_LOG = "ray.log"   # Ray's own output during a search (the terminal gets it with --debug)


def run_dir_of(space: SearchSpace, out: str | None, inputs=()) -> Path:
    """The run directory: ``--out``, else ``<results_dir>/<name>`` (guarded: fsray.paths)."""
    from fsray.paths import resolve_run_dir

    return resolve_run_dir(out, space.results_dir, space.name, inputs=inputs)


def check_run_dir(space: SearchSpace, out: str | None, resume: bool, inputs=()) -> Path:
    """Every check of the run directory that writes nothing (UsageError, one line, otherwise)."""
    from fsray.paths import check_run_dir as check_ours

    run_dir = run_dir_of(space, out, inputs)
    check_ours(run_dir)
    has_run = (run_dir / "results.jsonl").exists() or (run_dir / TUNE_DIR).exists()
    if has_run and not resume:
        raise UsageError(f"{run_dir} already holds a search: pass --resume to continue it, or --out DIR")
    if resume and not run_dir.exists():
        raise UsageError(f"--resume: {run_dir} does not exist (nothing to resume)")
    if resume and (run_dir / "results.jsonl").exists():
        _refuse_other_semantics(run_dir / "results.jsonl")
    return run_dir


def prepare_run_dir(space: SearchSpace, out: str | None, resume: bool, inputs=()) -> Path:
    """``check_run_dir``, then the directory created and probed (an OS error is one line)."""
    from fsray.paths import probe_writable

    run_dir = check_run_dir(space, out, resume, inputs)
    probe_writable(run_dir, "run directory")
    return run_dir


def _refuse_other_semantics(path: Path) -> None:
    """A resumed search must not pool its new records with records whose FS knobs meant another
    transform (``analysis.schema.semantics_mismatch``): it would skip their seeds as done."""
    from analysis.schema import read_records, semantics_mismatch

    stale = [(r, why) for r in read_records(path).records if (why := semantics_mismatch(r))]
    if stale:
        rec, why = stale[0]
        raise UsageError(f"--resume: {path} holds {len(stale)} record(s) whose FS configuration meant "
                         f"something else when recorded (seed {rec['seed']}: {why}); start a new run "
                         f"with --out DIR (fsray report still shows the old records apart)")


def check_same_search(run_dir: Path, space: SearchSpace) -> None:
    """A resumed run directory was made by this search file: what only steers the search or the
    settling may change between runs; what decides a seed run's result may not."""
    if not (run_dir / "space.json").exists():
        return
    saved = SearchSpace.model_validate_json((run_dir / "space.json").read_text())
    same = {"tuner": True, "settle": True, "objective": {"min_effect"}}
    if saved.model_dump(exclude=same) != space.model_dump(exclude=same):
        raise UsageError(f"{run_dir} was made by a different search file (what decides a seed run's "
                         f"result changed): keep the search file, or give a new --out")


def write_space(run_dir: Path, space: SearchSpace) -> None:
    (run_dir / "space.json").write_text(space.model_dump_json(indent=2) + "\n")


def train_storage(space: SearchSpace, run_dir: Path) -> str:
    """Where Ray Train keeps the worker groups' state and the seed runs their resumable state: the
    search's storage location when it names one (every node sees it: a run lost with its node
    resumes elsewhere), else the run directory (one node). Tune's own experiment state stays in the
    run directory on the driver's node, which --resume reads."""
    if not space.storage_path:
        return str(run_dir / "train")
    from fsray.storage import check_storage

    st = check_storage(space.storage_path)   # cached: the CLI checked it before anything was written
    return st.child(run_dir.name, "train")
