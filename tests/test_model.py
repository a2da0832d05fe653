"""RWKV7 model: shapes, padding invariance, causal continuation, input validation, init, training."""

from __future__ import annotations

import math

import pytest
import torch

from fsray.errors import UsageError
from fsray.model import LayerState, ModelConfig, RWKV7
from models import V, random_model


def left_pad(seqs: list[list[int]]):
    T = max(len(s) for s in seqs)
    idx = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        idx[b, T - len(s):] = torch.tensor(s)
        mask[b, T - len(s):] = True
    return idx, mask


def assert_states_close(a: list[LayerState], b: list[LayerState], atol=1e-5):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        for x, y in zip(la, lb):
            torch.testing.assert_close(x, y, atol=atol, rtol=1e-5)


def test_shapes_and_state_layout():
    model = random_model()
    idx = torch.randint(0, V, (2, 7))
    out = model(idx, return_hidden=True)
    assert out.logits.shape == (2, 7, V)
    assert out.hidden.shape == (2, 7, 32)
    assert len(out.state) == 3
    for s in out.state:
        assert s.att_x_prev.shape == (2, 32) and s.ffn_x_prev.shape == (2, 32)
        assert s.wkv.shape == (2, 4, 8, 8) and s.wkv.dtype == torch.float32
    assert model(idx).hidden is None
    # hidden is the head's input
    torch.testing.assert_close(model.head(out.hidden), out.logits)


def test_logits_last_and_none():
    model = random_model()
    idx = torch.randint(0, V, (2, 7))
    full = model(idx)
    last = model(idx, logits="last")
    assert last.logits.shape == (2, 1, V)
    torch.testing.assert_close(last.logits, full.logits[:, -1:])
    none = model(idx, logits="none", return_hidden=True)
    assert none.logits is None and none.hidden.shape == (2, 7, 32)
    assert_states_close(none.state, full.state, atol=0)
    with pytest.raises(UsageError, match="logits"):
        model(idx, logits="first")


def test_left_padding_leaves_state_and_real_logits_unchanged():
    model = random_model()
    seqs = [[3, 5, 7, 9, 11, 2], [4, 1], [8, 8, 6, 1, 0]]
    idx, mask = left_pad(seqs)
    padded = model(idx, mask=mask)
    for b, s in enumerate(seqs):
        alone = model(torch.tensor([s]))
        torch.testing.assert_close(padded.logits[b, -len(s):], alone.logits[0], atol=1e-5, rtol=1e-5)
        assert_states_close([LayerState(*(t[b:b + 1] for t in st)) for st in padded.state], alone.state)


def test_padding_ignores_the_pad_token_value():
    model = random_model()
    idx, mask = left_pad([[3, 5, 7], [1, 2, 3, 4, 5]])
    other = idx.clone()
    other[~mask] = 17  # a different pad id must not matter
    a, b = model(idx, mask=mask), model(other, mask=mask)
    torch.testing.assert_close(a.logits[mask], b.logits[mask], atol=0, rtol=0)
    assert_states_close(a.state, b.state, atol=0)


@pytest.mark.parametrize("layout", ["right", "interior"])
def test_other_padding_layouts_are_invisible_too(layout):
    """Right padding (answers) and holes: the state is that of the real tokens alone."""
    model = random_model()
    real = [3, 5, 7, 9, 11]
    if layout == "right":
        idx, keep = torch.tensor([real + [0, 0]]), torch.tensor([[True] * 5 + [False] * 2])
    else:
        idx, keep = torch.tensor([[3, 5, 0, 7, 0, 0, 9, 11]]), torch.tensor([[1, 1, 0, 1, 0, 0, 1, 1]]).bool()
    given = model(torch.tensor([[1, 2]])).state  # continuing from a state must use its x_prev as well
    padded = model(idx, mask=keep, state=given)
    alone = model(torch.tensor([real]), state=given)
    torch.testing.assert_close(padded.logits[keep], alone.logits[0], atol=1e-5, rtol=1e-5)
    assert_states_close(padded.state, alone.state)


def test_left_padded_continuation_from_a_state():
    model = random_model()
    given = model(torch.tensor([[1, 2], [4, 4]])).state
    idx, mask = left_pad([[3, 5, 7], [9]])
    padded = model(idx, mask=mask, state=given)
    for b, s in enumerate([[3, 5, 7], [9]]):
        alone = model(torch.tensor([s]), state=[type(st)(*(t[b:b + 1] for t in st)) for st in given])
        torch.testing.assert_close(padded.logits[b, -len(s):], alone.logits[0], atol=1e-5, rtol=1e-5)
        assert_states_close([type(st)(*(t[b:b + 1] for t in st)) for st in padded.state], alone.state)


def test_continuation_from_state_equals_one_pass():
    model = random_model()
    idx = torch.randint(0, V, (2, 12))
    full = model(idx)
    for cut in (1, 5, 11):
        head = model(idx[:, :cut])
        tail = model(idx[:, cut:], state=head.state)
        torch.testing.assert_close(tail.logits, full.logits[:, cut:], atol=1e-5, rtol=1e-5)
        assert_states_close(tail.state, full.state)


def test_token_by_token_equals_sequence():
    model = random_model(n_layer=2)
    idx = torch.randint(0, V, (1, 6))
    full = model(idx)
    state, logits = None, []
    for t in range(6):
        out = model(idx[:, t:t + 1], state=state)
        state, logits = out.state, logits + [out.logits]
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, atol=1e-5, rtol=1e-5)


def test_padded_continuation_after_padded_prompt():
    """Answer continuation from a left-padded prompt batch equals the unpadded run per sample."""
    model = random_model()
    prompts, answers = [[3, 5, 7, 9], [4, 1]], [[6, 2, 2], [9, 9, 0]]
    idx, mask = left_pad(prompts)
    p = model(idx, mask=mask)
    a = model(torch.tensor(answers), state=p.state)
    for b in range(2):
        alone = model(torch.tensor([prompts[b] + answers[b]]))
        torch.testing.assert_close(a.logits[b], alone.logits[0, -3:], atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = random_model()
    model(torch.randint(0, V, (2, 5))).logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n_layer=0, d_model=32, head_size=8, vocab_size=V), "n_layer"),
        (dict(n_layer=2, d_model=30, head_size=8, vocab_size=V), "d_model"),
        (dict(n_layer=2, d_model=32, head_size=8, vocab_size=V, d_gate_lora=0), "d_gate_lora"),
        (dict(n_layer=2, d_model=32, head_size=8, vocab_size=2.5), "vocab_size"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(UsageError, match=field):
        ModelConfig(**kwargs)


def test_bad_forward_inputs_raise_usage_error():
    model = random_model(n_layer=2)
    idx = torch.randint(0, V, (2, 4))
    with pytest.raises(UsageError, match="idx"):
        model(idx.float())
    with pytest.raises(UsageError, match="mask"):
        model(idx, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(UsageError, match="state"):
        model(idx, state=model(idx).state[:1])
    with pytest.raises(UsageError, match="wkv_backend"):
        model.wkv_backend = "cuda-magic"


def test_default_lora_ranks_fit_tiny_and_real_widths():
    tiny = ModelConfig(n_layer=2, d_model=64, head_size=16, vocab_size=V)
    assert all(1 <= r <= 16 for r in (tiny.d_decay_lora, tiny.d_aaa_lora, tiny.d_mv_lora, tiny.d_gate_lora))
    real = ModelConfig(n_layer=12, d_model=768, head_size=64, vocab_size=65536)
    assert real.d_decay_lora % 32 == 0 and real.d_gate_lora > real.d_mv_lora


def test_init_follows_rwkv7_scheme():
    model = RWKV7(ModelConfig(n_layer=3, d_model=64, head_size=16, vocab_size=V))
    for block in model.blocks:
        assert torch.count_nonzero(block.att.output.weight) == 0
        assert torch.count_nonzero(block.ffn.value.weight) == 0
        logw = -math.exp(-0.5) * torch.sigmoid(block.att.w0)
        w = logw.exp()
        assert 0 < w.min() < 0.7 and 0.99 < w.max() < 1  # fast and slow channels
    assert model.emb.weight.abs().max() <= 1e-4
    # zero output projections: at init the blocks add nothing, so logits are the head of ln_out(ln0(emb))
    idx = torch.randint(0, V, (1, 5))
    expect = model.head(model.ln_out(model.blocks[0].ln0(model.emb(idx))))
    torch.testing.assert_close(model(idx).logits, expect)


def test_tiny_model_learns_a_sequence_task():
    """From the default init, AdamW drives a shift-by-one copy task far below chance loss."""
    torch.manual_seed(0)
    model = RWKV7(ModelConfig(n_layer=2, d_model=32, head_size=8, vocab_size=12))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(25):  # loss ~2.6 at step 0, ~1.4 at step 10, ~0.2 at step 20 (seeds 0-2)
        x = torch.randint(0, 12, (16, 10))
        logits = model(x).logits[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 12), x[:, :-1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * math.log(12), loss.item()


def test_param_groups_without_fs_hold_every_weight_once():
    model = random_model(n_layer=2)
    groups = model.param_groups()
    assert set(groups) == {"model", "alpha", "head_gate", "input_gate"}
    assert groups["alpha"] == groups["head_gate"] == groups["input_gate"] == []
    assert len(groups["model"]) == len(list(model.parameters()))


def test_all_padding_row_keeps_the_incoming_state():
    model = random_model()
    given = model(torch.tensor([[1, 2], [4, 4]])).state
    idx = torch.tensor([[3, 5, 7], [0, 0, 0]])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    out = model(idx, mask=mask, state=given)
    for before, after in zip(given, out.state):
        for x, y in zip(before, after):
            torch.testing.assert_close(y[1], x[1], atol=0, rtol=0)


def test_zero_state_is_the_default_start():
    model = random_model()
    idx = torch.randint(0, V, (2, 4))
    assert torch.equal(model(idx, state=model.zero_state(2)).logits, model(idx).logits)
