"""The search YAML: one validated description of an FS hyperparameter search.

A search file names the task, model and budget of every paired seed run (handed to the trainer as a
``TrainSpec``), the FS knobs to search (distributions) or to fix, the seeds, the objective, the
sampler, racing, concurrency, resources and where results go. ``load_space(path)`` validates it with
pydantic (``extra="forbid"`` everywhere) and raises ``UsageError`` with one line naming the bad field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from fsray.errors import UsageError, first_line
from fsray.fsconfig import FSConfig
from fsray.paths import NAME_PATTERN
from fsray.spec import StrictModel
from fsray.yaml_io import load_yaml_file

FS_KNOBS = tuple(FSConfig.model_fields)
# Upper bounds of counts: each seed and trial is a training run, so these are far beyond any real
# search, and keep a typo (`seeds.count: 1e12`) from becoming a MemoryError instead of an error line.
MAX_SEEDS = 100_000
MAX_TRIALS = 100_000


_Strict = StrictModel   # the one strict base (fsray.spec): unknown keys are errors


# --- FS knob distributions -------------------------------------------------------------------


class Categorical(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _order(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.step < 1:
            raise ValueError("step must be >= 1")
        return self


class FloatRange(_Strict):
    type: Literal["float", "log_float"]
    low: float
    high: float
    step: float | None = None

    @model_validator(mode="after")
    def _order(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.type == "log_float":
            if self.low <= 0:
                raise ValueError(f"log_float needs low > 0, got {self.low}")
            if self.step is not None:
                raise ValueError("log_float takes no step")
        return self


Distribution = Annotated[Union[Categorical, IntRange, FloatRange], Field(discriminator="type")]


# --- sections ----------------------------------------------------------------------------------


class TaskSection(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class SeedsSection(_Strict):
    """Selection seeds (a count starting at ``start`` or an explicit list) and confirmation seeds."""

    count: int | None = Field(default=None, ge=2, le=MAX_SEEDS)
    start: int = Field(default=0, ge=0, le=2**31 - 1 - 2 * MAX_SEEDS)
    ids: list[int] | None = Field(default=None, max_length=MAX_SEEDS)
    confirm: int = Field(default=0, ge=0, le=MAX_SEEDS)  # fresh seeds for the best config (--confirm-seeds)

    @model_validator(mode="after")
    def _one_of(self):
        if (self.count is None) == (self.ids is None):
            raise ValueError("give exactly one of seeds.count or seeds.ids")
        if self.ids is not None:
            if len(self.ids) < 2:
                raise ValueError("seeds.ids needs at least 2 seeds (an interval needs 2)")
            if len(set(self.ids)) != len(self.ids) or min(self.ids) < 0 or max(self.ids) > 2**31 - 1 - MAX_SEEDS:
                raise ValueError(f"seeds.ids must be distinct integers in [0, {2**31 - 1 - MAX_SEEDS}]")
        return self

    def selection(self) -> list[int]:
        if self.ids is not None:
            return list(self.ids)
        return list(range(self.start, self.start + self.count))

    def confirmation(self, n: int | None = None) -> list[int]:
        """``n`` fresh seeds never used for selection (above the largest selection seed)."""
        n = self.confirm if n is None else n
        first = max(self.selection()) + 1
        return list(range(first, first + n))


class ObjectiveSection(_Strict):
    """What a trial maximises, from the paired deltas of its seeds (analysis statistics)."""

    kind: Literal["lower_bound", "mean_minus_k_std", "multi", "breakthrough_lower_bound"] = (
        "lower_bound"
    )
    metric: Literal["acc", "seq"] = "acc"
    level: float = Field(default=0.95, gt=0.5, lt=1.0)
    interval: Literal["t", "bca", "percentile"] = "t"  # analysis.stats.METHODS
    k: float = Field(default=1.0, ge=0.0)  # mean_minus_k_std
    learned_margin: float = Field(default=0.1, ge=0.0)  # breakthrough: above chance by this
    # smallest effect of interest for verdicts (helps / hurts / no effect >= it), metric's units
    # (the verdicts' delta; YAML key `delta` before; both metrics are accuracies in [0, 1], so
    # an effect of 1 or more could never be reached)
    min_effect: float = Field(default=0.01, gt=0.0, lt=1.0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        return _renamed_keys(data, OBJECTIVE_RENAMED)

    @property
    def metric_key(self) -> str:
        """The RunResult metric the objective reads (``token_acc`` for ``acc``)."""
        from analysis.schema import METRIC_OF_SHORT

        return METRIC_OF_SHORT[self.metric]


class SettleSection(_Strict):
    """After the selection, the top ``top_k`` configurations get fresh seeds in rounds (run in
    parallel, sharing baselines) until each has a verdict (analysis.verdict) or its budget is spent."""

    enabled: bool = False
    top_k: int = Field(default=2, ge=1)
    round_size: int = Field(default=2, ge=1)            # fresh seeds per configuration per round
    max_seeds_per_config: int = Field(default=20, ge=3, le=MAX_SEEDS)  # also the sequential design's horizon
    total_budget: int | None = Field(default=None, ge=1, le=MAX_SEEDS * MAX_TRIALS)  # fresh seeds for all configurations
    design: Literal["sprt", "spending"] = "sprt"          # analysis.verdict.DESIGNS
    borrow: bool = True                                   # a variance prior over the shortlist
    # sprt: stop a configuration, undecided, once the horizon would decide it with a predictive
    # probability below this (analysis.sprt.p_decide); 0 runs every undecided one to the horizon
    curtail: float = Field(default=0.05, ge=0.0, lt=1.0)


class RacingSection(_Strict):
    """Seeds run one at a time; stop a config once its interval cannot beat the incumbent."""

    enabled: bool = True
    min_seeds: int = Field(default=2, ge=2)
    level: float = Field(default=0.9, gt=0.5, lt=1.0)  # two-sided level of the candidate interval


class ResourcesSection(_Strict):
    """Resources of one seed run (real trainable): Ray Train workers and what each holds."""

    workers: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    # A seed run lost with its node (or its worker group) is run again on another group at most
    # max_retries times; when no worker group is alive for capacity_timeout_s while runs wait, the
    # search stops with a message (--resume continues it).
    max_retries: int = Field(default=2, ge=0)
    capacity_timeout_s: float = Field(default=600.0, gt=0)


class KnobEffect(_Strict):
    """Simulated effect of one knob on the mean delta: a Gaussian bump over numbers
    (``height * exp(-((x - peak) / width)^2 / 2)``) or a value table for categories."""

    peak: float | None = None
    width: float | None = Field(default=None, gt=0)
    height: float | None = None
    log: bool = False  # bump over log10(x) (for learning rates)
    values: dict[str, float] | None = None

    @model_validator(mode="after")
    def _shape(self):
        bump = (self.peak, self.width, self.height)
        if self.values is None and None in bump:
            raise ValueError("give peak, width and height, or values")
        if self.values is not None and any(v is not None for v in bump):
            raise ValueError("give either peak/width/height or values, not both")
        return self


class SimulatedSection(_Strict):
    """Known FS effect surface + seed noise: the search machinery tested in seconds.

    ``level_effects`` (task option -> its value -> added effect) gives a task option's levels
    effects of their own (``{order: {options_first: 0.03}}``: FS helps 0.03 more options-first),
    and each level its own baselines: what a search's ``contrast`` is tested on."""

    n_layer: int = Field(default=12, ge=1)
    baseline_mean: float = Field(default=0.4, ge=0, le=1)
    baseline_sd: float = Field(default=0.05, ge=0)  # seed-to-seed spread of the no_fs metric
    noise_sd: float = Field(default=0.02, ge=0)  # seed noise of the paired delta
    effects: dict[str, KnobEffect] = Field(default_factory=dict)
    noise_scale: dict[str, dict[str, float]] = Field(default_factory=dict)  # knob -> value -> x sd
    level_effects: dict[str, dict[str, float]] = Field(default_factory=dict)  # option -> value -> +d
    seconds_per_run: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _knobs(self):
        for where, keys in (("effects", self.effects), ("noise_scale", self.noise_scale)):
            for knob in keys:
                if knob not in FS_KNOBS:
                    raise ValueError(f"simulated.{where}: {knob!r} is not an FS knob")
        return self


class ContrastSection(_Strict):
    """``contrast: {OPTION: [A, B]}``: the settled configurations run at both levels of a task
    option on shared seeds, each level with its own baselines, until the contrast (FS's effect at A
    minus at B, ``analysis.contrast``) has a verdict."""

    key: str
    levels: tuple[str, str]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        if isinstance(v, dict) and set(v) != {"key", "levels"}:
            if len(v) != 1:
                raise ValueError(f"name one task option and its two levels, e.g. "
                                 f"{{order: [options_first, question_first]}}; got {len(v)} keys")
            (key, levels), = v.items()
            if not isinstance(levels, (list, tuple)) or len(levels) != 2:
                raise ValueError(f"{key}: give exactly two levels, e.g. [A, B]")
            return {"key": str(key), "levels": [str(x) for x in levels]}
        return v

    @model_validator(mode="after")
    def _levels(self):
        if self.key in FS_KNOBS:
            raise ValueError(f"{self.key!r} is an FS knob: a search contrast varies a task option "
                             "(compare FS knobs with `fsray report --contrast KNOB`)")
        if self.levels[0] == self.levels[1]:
            raise ValueError(f"{self.key}: the two levels are the same ({self.levels[0]!r})")
        return self


class TunerSection(_Strict):
    """How Tune and Optuna run the selection (YAML key `search` before)."""

    sampler: Literal["tpe", "random", "qmc", "gp", "cmaes"] = "tpe"
    sampler_seed: int | None = 0
    trials: int = Field(default=12, ge=1, le=MAX_TRIALS)
    concurrency: int = Field(default=1, ge=1, le=MAX_TRIALS)


class SearchSpace(_Strict):
    """A whole search file."""

    name: str
    description: str = ""
    trainable: Literal["real", "simulated"] = "real"
    # "embedded_default": task/model/budget/data start from fsray.trainer.embedded_default_spec()
    # (the YAML's sections override single fields), so the demo follows the trainer's default.
    base: Literal["none", "embedded_default"] = "none"
    task: TaskSection
    model: dict[str, Any] = Field(default_factory=dict)  # trainer's model section (tiny or .pth)
    budget: dict[str, Any] = Field(default_factory=dict)  # trainer's budget section
    data: dict[str, Any] = Field(default_factory=dict)  # trainer's data sizes
    # optional check: the model's depth is read from the model or its checkpoint (once, by the
    # runner); a value here that disagrees is an error
    n_layer: int | None = Field(default=None, ge=1)
    # the seed runs' precision (fsray.precision): auto = bf16 autocast on GPU workers, fp32 on CPU ones
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seeds: SeedsSection
    knobs: dict[str, Distribution] = Field(min_length=1)   # the searched FS knobs (YAML `space` before)
    fixed: dict[str, Any] = Field(default_factory=dict)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    racing: RacingSection = Field(default_factory=RacingSection)
    settle: SettleSection = Field(default_factory=SettleSection)
    tuner: TunerSection = Field(default_factory=TunerSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    simulated: SimulatedSection | None = None
    contrast: ContrastSection | None = None
    results_dir: str = "runs"
    baseline_cache: str = "~/.cache/fsray/baselines"
    # SQLAlchemy URL of the Optuna study (YAML `storage` before); default SQLite in the run dir
    optuna_storage: str | None = None
    # Where Ray Tune/Train state and checkpoints go (fsray.storage): a local path (default: the run
    # directory; one node), a path every node mounts, or an object-store URI (s3://, gs://, ...).
    # With a URI, the run's results are also copied there when the search ends (`fsray report URI`).
    storage_path: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        return _renamed_keys(data, RENAMED)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        import re

        if not re.fullmatch(NAME_PATTERN, v):
            shown = v if len(v) <= 40 else v[:37] + "..."
            raise ValueError(f"{shown!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a "
                             f"letter or digit (it names the run directory under results_dir)")
        return v

    @field_validator("storage_path")
    @classmethod
    def _storage_path(cls, v: str | None) -> str | None:
        # syntax only here; fsray.storage.check_storage probes it before any training
        if v is not None:
            v = v.strip()
            if not v:
                raise ValueError("empty (leave it out for the run directory)")
            if "://" in v and not v.split("://", 1)[0].replace("+", "").isalnum():
                raise ValueError(f"{v!r} is not a URI (SCHEME://BUCKET/PREFIX) or a path")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_shorthand(cls, v):
        # `seeds: 5` and `seeds: [0, 1, 2]` are shorthands for {count: 5} and {ids: [...]}.
        if isinstance(v, int) and not isinstance(v, bool):
            return {"count": v}
        if isinstance(v, list):
            return {"ids": v}
        return v

    @field_validator("knobs")
    @classmethod
    def _space_knobs(cls, space: dict) -> dict:
        for knob, dist in space.items():
            if knob not in FS_KNOBS:
                raise ValueError(f"{knob!r} is not an FS knob (known: {', '.join(FS_KNOBS)})")
            _check_knob_values(knob, dist)
        return space

    @field_validator("fixed")
    @classmethod
    def _fixed_knobs(cls, fixed: dict) -> dict:
        for knob in fixed:
            if knob not in FS_KNOBS:
                raise ValueError(f"{knob!r} is not an FS knob (known: {', '.join(FS_KNOBS)})")
        try:
            FSConfig(**fixed)
        except ValidationError as exc:
            raise ValueError(_first_error(exc)) from None
        return fixed

    @model_validator(mode="after")
    def _whole(self):
        both = set(self.knobs) & set(self.fixed)
        if both:
            raise ValueError(f"knob(s) {sorted(both)} are both searched and fixed")
        if self.trainable == "simulated" and self.simulated is None:
            raise ValueError("trainable is 'simulated' but the 'simulated' section is missing")
        if self.objective.kind == "multi" and self.tuner.sampler not in ("tpe", "random"):
            raise ValueError("objective.kind 'multi' needs tuner.sampler tpe or random")
        if self.contrast is not None:
            for level in self.contrast.levels:   # every level must be a task the trainer can build
                _check_task_level(self.task, self.contrast.key, level)
        return self

    def at_level(self, level: str) -> "SearchSpace":
        """This search at one level of its contrast: the task option set to ``level``, no contrast."""
        if self.contrast is None or level not in self.contrast.levels:
            raise UsageError(f"contrast: {level!r} is not a level of this search's contrast")
        task = self.task.model_copy(update={"options": {**self.task.options,
                                                        self.contrast.key: level}})
        return self.model_copy(update={"task": task, "contrast": None})

    # --- derived ---------------------------------------------------------------------------

    def fs_config(self, params: dict) -> FSConfig:
        """The full FS configuration of a trial: fixed values + sampled knobs."""
        return FSConfig(**{**self.fixed, **params})


def _check_task_level(task: TaskSection, key: str, level: str) -> None:
    """The task built with ``key`` = ``level`` (its adapter names an impossible setting)."""
    from fsray.tasks import TASKS, get_task

    if task.name not in TASKS:
        return   # an unknown task is the trainer's error to report, with the task list
    try:
        get_task(task.name, **{**task.options, key: level})
    except UsageError as exc:
        raise ValueError(f"contrast: {key}={level!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"contrast: {key}={level!r}: {first_line(exc, with_type=False)}") from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ()))
    msg = e.get("msg", "").removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _check_knob_values(knob: str, dist) -> None:
    """Every value a distribution can produce must be legal for the knob: check the ends."""
    if isinstance(dist, Categorical):
        samples = dist.choices
    else:
        samples = [dist.low, dist.high]
    for value in samples:
        try:
            FSConfig(**{knob: value})
        except ValidationError as exc:
            raise ValueError(f"{knob}: value {value!r} is not allowed ({_first_error(exc)})") from None


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search YAML; any problem is one ``UsageError`` line naming the field."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such search file")
    raw = load_yaml_file(path, "search file")   # a key given twice is an error, not the last one
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    # the notes go to stdout with the run's other lines: stderr stays one line for an error
    return parse_space(raw, where=str(path), say=lambda line: print(line, flush=True))


# Keys of a search file that were renamed (old -> new): the old ones are still read (search files
# and the space.json of older run directories); ``parse_space`` names the new key once.
RENAMED = {"space": "knobs", "search": "tuner", "storage": "optuna_storage"}
OBJECTIVE_RENAMED = {"delta": "min_effect"}


def _renamed_keys(data, renamed: dict[str, str]):
    if not isinstance(data, dict) or not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old in data:
            if new in data:
                raise ValueError(f"both {old!r} and {new!r} given: {old!r} is the old name of {new!r}, keep one")
            data[new] = data.pop(old)
    return data


def old_keys(raw: dict) -> list[tuple[str, str]]:
    """The renamed keys a search file still uses, as (old, new) dotted paths."""
    used = [(old, new) for old, new in RENAMED.items() if old in raw]
    objective = raw.get("objective")
    if isinstance(objective, dict):
        used += [(f"objective.{old}", f"objective.{new}") for old, new in OBJECTIVE_RENAMED.items()
                 if old in objective]
    return used


def parse_space(raw: dict, where: str = "search", say=None) -> SearchSpace:
    """Validate a search file's mapping; any problem is one ``UsageError`` line naming the key as
    written. ``say(line)`` gets one line per renamed key the file still uses."""
    renamed = old_keys(raw) if isinstance(raw, dict) else []
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        msg = _first_error(exc)
        for old, new in renamed:   # name the key the file has
            if msg.startswith((f"{new}.", f"{new}:")):
                msg = old + msg[len(new):]
        raise UsageError(f"{where}: {msg}") from None
    if say is not None:
        for old, new in renamed:
            say(f"fsray: note: {where}: {old!r} is now called {new!r} (the old key is still read)")
    return space


def optuna_distributions(space: SearchSpace) -> dict:
    """The searched knobs as Optuna distributions (``{knob: optuna.distributions.BaseDistribution}``):
    what the driver's OptunaSearch samples and what the importance study is filled with."""
    import optuna

    out = {}
    for knob, dist in space.knobs.items():
        if isinstance(dist, Categorical):
            out[knob] = optuna.distributions.CategoricalDistribution(dist.choices)
        elif isinstance(dist, IntRange):
            out[knob] = optuna.distributions.IntDistribution(dist.low, dist.high, step=dist.step)
        elif isinstance(dist, FloatRange):
            out[knob] = optuna.distributions.FloatDistribution(
                dist.low, dist.high, log=dist.type == "log_float", step=dist.step)
    return out
