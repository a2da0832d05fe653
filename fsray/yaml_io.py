"""The one YAML reader of fsray: safe, and a mapping key given twice is an error.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, so a search file that sets
``objective:`` twice (an edit pasted below the old one) silently runs the second. Every YAML fsray
reads (search files, ``fsray train --config``, ``--task-option`` values) goes through ``load_yaml``,
whose loader refuses that, naming the key and both lines.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fsray.errors import UsageError


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # `<<:` merges are not duplicates
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:   # an unhashable key: SafeLoader says so itself below
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r} (first on line {first.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str = "YAML"):
    """Parse ``text``; any problem (syntax, a duplicate key) is one ``UsageError`` naming ``where``
    and the line."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise UsageError(f"{where}:{line}: {problem}") from None


def load_yaml_file(path: str | Path, what: str = "file"):
    """``load_yaml`` of a file; a missing or unreadable file is one ``UsageError`` too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    return load_yaml(text, str(path))
