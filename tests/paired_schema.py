"""A strict JSON Schema of an ``fsray.paired/1`` record, for the tests.

``analysis.schema.validate_record`` checks what a reader needs (schema tag, task, config hash, seed,
status, finite accuracies on ok records); this states the whole documented shape (the
``analysis/schema.py`` docstring): every field's type, the RunResult of each side, and the rules that
tie status, failure and the runs together. ``check(rec)`` applies both.
"""

from __future__ import annotations

import jsonschema

from analysis.schema import FS_SEMANTICS, SCHEMA, STAGES, STATUSES, validate_record

_NUM = {"type": "number"}
_OPT_STR = {"type": ["string", "null"]}

RUN_RESULT = {
    "type": "object",
    "required": ["mode", "status", "token_acc", "loss", "seq_acc", "steps", "curve", "learned", "cached"],
    "properties": {
        "mode": {"enum": ["no_fs", "prompt_fs"]},
        "status": {"enum": ["ok", "failed"]},
        "failure": _OPT_STR,
        "token_acc": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "loss": {"type": ["number", "null"], "minimum": 0},
        "seq_acc": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "best_step": {"type": ["integer", "null"], "minimum": 0},
        "steps": {"type": "integer", "minimum": 0},
        "tokens": {"type": "integer", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
        "curve": {"type": "array", "items": {
            "type": "array", "minItems": 4, "maxItems": 4,
            "prefixItems": [{"type": "integer", "minimum": 0}, _NUM, _NUM, _NUM]}},
        "learned": {"type": ["boolean", "null"]},
        "cached": {"type": "boolean"},
    },
    # an ok run has its metrics
    "if": {"properties": {"status": {"const": "ok"}}},
    "then": {"properties": {"token_acc": _NUM, "loss": _NUM, "seq_acc": _NUM}},
}

FAILED_RUN = {   # a run that crashed before returning a RunResult
    "type": "object",
    "required": ["mode", "status", "failure"],
    "properties": {"mode": {"enum": ["no_fs", "prompt_fs"]}, "status": {"const": "failed"},
                   "failure": {"type": "string", "minLength": 1}},
}

PAIRED_RECORD = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "task", "config", "config_hash", "seed", "stage", "status", "failure",
                 "baseline", "fs", "fs_semantics", "code_version", "time"],
    "properties": {
        "schema": {"const": SCHEMA},
        "task": {"type": "string", "minLength": 1},
        "config": {"type": "object"},
        "config_hash": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
        "config_label": {"type": "string"},
        "seed": {"type": "integer", "minimum": 0},
        "stage": {"enum": list(STAGES)},
        "trial_id": _OPT_STR,
        "status": {"enum": list(STATUSES)},
        "failure": _OPT_STR,
        "noop_reason": _OPT_STR,
        "chance": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["token_acc", "seq_acc"],
            "properties": {"token_acc": {**_NUM, "minimum": 0, "maximum": 1},
                           "seq_acc": {**_NUM, "minimum": 0, "maximum": 1}}}]},
        "learned_margin": {"type": ["number", "null"], "minimum": 0},
        "baseline": {"anyOf": [{"type": "null"}, RUN_RESULT, FAILED_RUN]},
        "fs": {"anyOf": [{"type": "null"}, RUN_RESULT, FAILED_RUN]},
        "fs_semantics": {"const": FS_SEMANTICS},
        "code_version": {"type": "string", "minLength": 1},
        "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$"},
    },
    "allOf": [
        {   # ok: both runs, the baseline a no_fs run and the FS side a prompt_fs one, no failure
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {"properties": {
                "failure": {"type": "null"},
                "baseline": {**RUN_RESULT, "properties": {**RUN_RESULT["properties"],
                                                          "mode": {"const": "no_fs"}, "status": {"const": "ok"}}},
                "fs": {**RUN_RESULT, "properties": {**RUN_RESULT["properties"],
                                                    "mode": {"const": "prompt_fs"}, "status": {"const": "ok"}}}}},
        },
        {   # failed: says why
            "if": {"properties": {"status": {"const": "failed"}}},
            "then": {"properties": {"failure": {"type": "string", "minLength": 1}}},
        },
        {   # noop: says why, nothing failed
            "if": {"properties": {"status": {"const": "noop"}}},
            "then": {"required": ["noop_reason"],
                     "properties": {"noop_reason": {"type": "string", "minLength": 1},
                                    "failure": {"type": "null"}}},
        },
    ],
}

jsonschema.Draft202012Validator.check_schema(PAIRED_RECORD)
_VALIDATOR = jsonschema.Draft202012Validator(PAIRED_RECORD)


def check(rec: dict, where: str = "record") -> dict:
    """``rec`` passes ``analysis.schema.validate_record`` and the strict schema (raises otherwise)."""
    validate_record(rec, where)
    _VALIDATOR.validate(rec)
    return rec
