"""Byte and RWKV World tokenizers: round trips, agreement with BlinkDL's own TRIE_TOKENIZER."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
import torch

from fsray.errors import UsageError
from fsray.tokenizer import ByteTokenizer, WorldTokenizer, get_tokenizer, read_world_vocab

TEXTS = [
    "",
    "Hello, world!",
    "key: q7 -> value 42\nquery: q7\n",
    "Ünïcödé Ελληνικά 中文字符 日本語 🙂🚀",
    "def f(x):\r\n\treturn x ** 2  # tabs, CRLF and    spaces",
    "--------------------------------------------------------------------------------" * 2,
    "\x00\x01 control bytes \x7f",
]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_byte_errors_and_partial_utf8():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("中")[:2]) == "\ufffd"
    assert tok.decode(np.array([104, 105])) == "hi" and tok.decode(torch.tensor([104, 105])) == "hi"
    with pytest.raises(UsageError, match="0..255"):
        tok.decode([300])
    with pytest.raises(UsageError, match="str"):
        tok.encode(b"bytes")


@pytest.fixture(scope="module")
def world():
    return WorldTokenizer()


@pytest.fixture(scope="module")
def blinkdl():
    """BlinkDL's pure-Python trie tokenizer over the ``rwkv`` package's own vocabulary file."""
    pytest.importorskip("rwkv")
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(importlib.resources.files("rwkv") / "rwkv_vocab_v20230424.txt"))


@pytest.mark.parametrize("text", TEXTS)
def test_world_round_trip_and_agreement_with_blinkdl(text, world, blinkdl):
    ids = world.encode(text)
    assert ids == blinkdl.encode(text)
    assert all(1 <= i < world.vocab_size for i in ids)
    assert world.decode(ids) == text


def test_world_uses_multi_byte_tokens(world):
    assert len(world.encode("Hello, world!")) < len("Hello, world!") / 2
    assert world.encode("中") == [10285]


def test_world_decode_table_matches_blinkdl(world, blinkdl):
    table = read_world_vocab(world.vocab_file)
    assert table == blinkdl.idx2token


def test_world_decode_partial_utf8_and_bad_ids(world):
    assert world.decode([229]) == "\ufffd"  # the lone byte 0xE4: a model can stop mid-character
    assert world.decode([0, 10285, 0]) == "中"  # pad/end-of-text id is skipped
    with pytest.raises(UsageError, match="70000"):
        world.decode([70000])
    with pytest.raises(UsageError, match="str"):
        world.encode(None)


def test_world_vocab_file_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        WorldTokenizer(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 'a' 1\n2 'bc' 5\n")
    with pytest.raises(UsageError, match="line 2"):
        read_world_vocab(bad)


def test_get_tokenizer():
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    assert get_tokenizer("world").vocab_size == 65536
    with pytest.raises(UsageError, match="unknown tokenizer"):
        get_tokenizer("gpt2")
