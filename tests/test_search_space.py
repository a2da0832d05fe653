"""The search YAML: every shipped file loads; each kind of mistake is one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fsray.errors import UsageError
from fsray.search.space import load_space, parse_space

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))

MINIMAL = {
    "name": "t",
    "trainable": "simulated",
    "task": {"name": "kv_retrieval"},
    "seeds": 3,
    "space": {"fs_layer_start": {"type": "int", "low": 1, "high": 4}},
    "simulated": {"n_layer": 4},
}


def _with(**changes):
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split("__")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def test_every_shipped_space_loads():
    names = {p.stem for p in SHIPPED}
    for required in ("demo_cpu", "simulated"):
        assert required in names
    assert len(SHIPPED) >= 10, names
    for path in SHIPPED:
        space = load_space(path)
        assert space.space, path
        for params in _corner_params(space):
            space.fs_config(params)  # every corner of the space is a valid FSConfig
        if space.trainable == "real":
            _check_real(space)


# The depth of each checkpoint a shipped space names: the project's embedded base (2 layers) and
# BlinkDL's RWKV-7 g1d 0.1b (L12-D768), which is not shipped (checked where the file is present).
CHECKPOINT_DEPTH = {"embedded:base": 2, "rwkv7-g1d-0.1b-20260129-ctx8192.pth": 12}


def _check_real(space):
    """The trainer and the task registry accept what a real space hands them, and the depth that
    decides no-op configurations is the checkpoint's."""
    from fsray.checkpoint import read_config
    from fsray.search.evaluate import RealRunner
    from fsray.tasks import get_task
    from fsray.spec import EMBEDDED_BASE, EMBEDDED_BASE_FILE

    checkpoint = {**({"checkpoint": EMBEDDED_BASE} if space.base == "embedded_default" else {}),
                  **space.model}["checkpoint"]
    expected = CHECKPOINT_DEPTH[Path(checkpoint).name]
    path = EMBEDDED_BASE_FILE if checkpoint == EMBEDDED_BASE else REPO / checkpoint
    if path.exists():
        assert read_config(path).n_layer == expected, checkpoint
        runner = RealRunner(space)   # builds the trainer's TrainSpec and reads the depth from the file
    else:
        # not shipped: the depth the search file declares must be the checkpoint's
        assert space.n_layer == expected, space.name
        runner = RealRunner(space, n_layer=space.n_layer)
    assert space.n_layer in (None, expected), space.name
    assert runner.n_layer == expected and runner.spec.model.checkpoint == checkpoint, space.name
    get_task(runner.spec.task.name, **runner.spec.task.options)


def _corner_params(space):
    lows, highs = {}, {}
    for knob, dist in space.space.items():
        if dist.type == "categorical":
            lows[knob], highs[knob] = dist.choices[0], dist.choices[-1]
        else:
            lows[knob], highs[knob] = dist.low, dist.high
    return [lows, highs]


def test_minimal_defaults_and_shorthands():
    space = parse_space(MINIMAL)
    assert space.seeds.selection() == [0, 1, 2]
    assert space.objective.kind == "lower_bound" and space.search.sampler == "tpe"
    assert parse_space(_with(seeds=[4, 7])).seeds.selection() == [4, 7]
    # confirmation seeds are fresh: above every selection seed
    assert parse_space(_with(seeds={"ids": [3, 9], "confirm": 2})).seeds.confirmation() == [10, 11]


@pytest.mark.parametrize("changes, field", [
    ({"space__fs_layer_startx": {"type": "int", "low": 1, "high": 2}}, "fs_layer_startx"),
    ({"space__alpha_lr": {"type": "log_float", "low": 0.0, "high": 1e-3}}, "low > 0"),
    ({"space__alpha_lr": {"type": "float", "low": -1.0, "high": 1e-3}}, "alpha_lr"),
    ({"space__fs_layer_start": {"type": "int", "low": 5, "high": 2}}, "low (5) must be <= high"),
    ({"space__fs_variant": {"type": "categorical", "choices": ["scalar", "bogus"]}}, "fs_variant"),
    ({"space__fs_norm": {"type": "gaussian"}}, "space.fs_norm"),
    ({"fixed": {"fs_clip": -1}}, "fs_clip"),
    ({"fixed": {"fs_layer_start": 2}}, "both searched and fixed"),
    ({"seeds": 1}, "seeds.count"),
    ({"seeds": {"count": 3, "ids": [1, 2]}}, "exactly one of seeds.count or seeds.ids"),
    ({"objective__kind": "median"}, "objective.kind"),
    ({"objective__level": 1.5}, "objective.level"),
    ({"search__sampler": "grid"}, "search.sampler"),
    ({"search__concurrency": 0}, "search.concurrency"),
    ({"racing__min_seeds": 1}, "racing.min_seeds"),
    ({"resources__workers": 0}, "resources.workers"),
    ({"simulated__effects": {"nonsense": {"values": {"a": 1}}}}, "'nonsense' is not an FS knob"),
    ({"trainable": "simulated", "simulated": None}, "simulated"),
    ({"typo_section": 1}, "typo_section"),
])
def test_validation_error_names_the_field(changes, field):
    with pytest.raises(UsageError) as err:
        parse_space(_with(**changes))
    msg = str(err.value)
    assert field in msg, msg
    assert "\n" not in msg


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace: {fs_layer_start: [unclosed\n")
    with pytest.raises(UsageError) as err:
        load_space(bad)
    assert "bad.yaml" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="no such search file"):
        load_space(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="mapping"):
        load_space(top)


def test_cli_bad_space_exits_2_with_one_line(tmp_path, capsys):
    from fsray.cli import main

    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump(_with(objective={"kind": "nope"})))
    assert main(["tune", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fsray: error:") and "objective.kind" in err and "\n" not in err
