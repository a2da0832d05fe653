"""Tokenizers: bytes for synthetic tasks, the RWKV World vocabulary for pretrained checkpoints.

Both have ``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size`` and ``pad_id``.
Padding never needs a special token: prompts are left-padded and the model masks pad positions, so
``pad_id`` is only the conventional filler id (0).

``WorldTokenizer`` encodes with the maintained Rust implementation ``pyrwkv-tokenizer`` (wheels for
CPython 3.10-3.13, no dependencies) and falls back to BlinkDL's pure-Python ``TRIE_TOKENIZER`` from the
``rwkv`` package (5 s and ~300 MB to build its trie) when the former is not installed. Decoding uses our
own id -> bytes table (greedy longest match is only needed one way), so that ids whose bytes are not
valid UTF-8 on their own (a model's prediction can stop mid-character) decode with U+FFFD instead of
failing (``pyrwkv-tokenizer`` panics on them).
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import importlib.util
import operator
from pathlib import Path

from .errors import UsageError

WORLD_VOCAB_NAME = "rwkv_vocab_v20230424.txt"


class ByteTokenizer:
    """UTF-8 bytes: ids 0..255, no special tokens (vocab_size 256)."""

    vocab_size = 256
    pad_id = 0
    name = "byte"

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise UsageError(f"ByteTokenizer.encode needs a str, got {type(text).__name__}")
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        ids = [_as_id(i) for i in ids]
        bad = [i for i in ids if i is None or not 0 <= i < 256]
        if bad:
            raise UsageError(f"ByteTokenizer.decode: ids must be integers in 0..255, got {bad[:5]}")
        return bytes(ids).decode("utf-8", errors="replace")


def _as_id(i) -> int | None:
    """An int from an int-like id (Python, numpy or 0-d torch integer); None if it is not one."""
    if isinstance(i, bool):
        return None
    try:
        return operator.index(i)
    except TypeError:
        return None


def world_vocab_path() -> Path:
    """The World vocabulary file: the copy bundled with pyrwkv-tokenizer, else the ``rwkv`` package's."""
    for package in ("pyrwkv_tokenizer", "rwkv"):
        if importlib.util.find_spec(package) is None:
            continue
        path = importlib.resources.files(package) / WORLD_VOCAB_NAME
        if path.is_file():
            return Path(str(path))
    raise UsageError(
        f"the RWKV World vocabulary {WORLD_VOCAB_NAME} was not found: "
        "pip install pyrwkv-tokenizer (or the rwkv package)"
    )


def read_world_vocab(path: str | Path) -> dict[int, bytes]:
    """id -> token bytes. Lines are ``<id> <python str or bytes literal> <byte length>``."""
    table: dict[int, bytes] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            try:
                first, last = line.index(" "), line.rindex(" ")
                literal = line[first + 1:last]
                if literal[:1] in ("'", '"') and "\\" not in literal:  # the common case, 50x faster
                    token = literal[1:-1].encode("utf-8")
                else:
                    value = ast.literal_eval(literal)
                    token = value.encode("utf-8") if isinstance(value, str) else value
                if not isinstance(token, bytes) or len(token) != int(line[last + 1:]):
                    raise ValueError("length mismatch")
                table[int(line[:first])] = token
            except (ValueError, SyntaxError) as e:
                raise UsageError(f"vocabulary {path}: line {lineno} is malformed ({e})") from None
    return table


@functools.lru_cache(maxsize=2)
def _encoder(path: str):
    """The encoding engine for a vocabulary file (cached: building one costs 1-5 s)."""
    if importlib.util.find_spec("pyrwkv_tokenizer") is not None:
        import pyrwkv_tokenizer

        return pyrwkv_tokenizer.WorldTokenizer(path).encode
    if importlib.util.find_spec("rwkv") is not None:
        from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

        return TRIE_TOKENIZER(path).encode
    raise UsageError("WorldTokenizer needs pyrwkv-tokenizer (pip install pyrwkv-tokenizer) or the rwkv package")


@functools.lru_cache(maxsize=2)
def _decoder_table(path: str) -> dict[int, bytes]:
    return read_world_vocab(path)


class WorldTokenizer:
    """The RWKV World tokenizer (greedy longest match over ``rwkv_vocab_v20230424.txt``).

    Ids 1..65529 are tokens; 0 is end-of-text / padding (not in the file). ``vocab_size`` is 65536,
    the embedding size of RWKV World checkpoints.
    """

    vocab_size = 65536
    pad_id = 0
    name = "world"

    def __init__(self, vocab_file: str | Path | None = None):
        path = Path(vocab_file) if vocab_file is not None else world_vocab_path()
        if not path.is_file():
            raise UsageError(f"vocabulary file {path}: no such file")
        self.vocab_file = str(path)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise UsageError(f"WorldTokenizer.encode needs a str, got {type(text).__name__}")
        return list(_encoder(self.vocab_file)(text))

    def decode(self, ids) -> str:
        table = _decoder_table(self.vocab_file)
        pieces = []
        for raw in ids:
            i = _as_id(raw)
            if i == self.pad_id:
                continue
            token = table.get(i) if i is not None else None
            if token is None:
                raise UsageError(f"WorldTokenizer.decode: id {raw!r} is not in the vocabulary (1..{max(table)})")
            pieces.append(token)
        return b"".join(pieces).decode("utf-8", errors="replace")


TOKENIZERS = {"byte": ByteTokenizer, "world": WorldTokenizer}


def get_tokenizer(name: str):
    """A tokenizer by name: ``byte`` or ``world``."""
    if name not in TOKENIZERS:
        raise UsageError(f"unknown tokenizer {name!r}; choose from {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]()
