"""Future-Seed semantics: no-op configs, the transform against an independent reference, detach,
schedules, per-head and input gates, padding invariance, parameter groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fsray.errors import UsageError
from fsray.fs import FutureSeed
from fsray.fsconfig import FSConfig
from fsray.model import LayerState, RWKV7
import models

V, L, C, N = 40, 4, 32, 8
H = C // N


def random_model(seed=0) -> RWKV7:
    return models.random_model(n_layer=L, d_model=C, head_size=N, seed=seed, vocab_size=V)


def prompt(B=2, T=9, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def fs_forward(model, idx, cfg: FSConfig, **kw):
    """A prompt pass with ``cfg``: attached once (kept when it is already the attached one)."""
    if model.future_seed is None or model.future_seed.cfg != cfg:
        model.attach_fs(cfg)
    return model(idx, use_fs=True, **kw)


def states_equal(a, b) -> bool:
    return all(torch.equal(x, y) for la, lb in zip(a, b) for x, y in zip(la, lb))


# ---------------------------------------------------------------- no-op configurations


@pytest.mark.parametrize(
    "cfg",
    [
        FSConfig(fs_layer_start=L),
        FSConfig(fs_layer_start=L + 3),
        FSConfig(seed_scale=0.0, alpha_init=3.0),
        FSConfig(fs_alpha_schedule="linear", fs_alpha_min=0.0, fs_alpha_max=0.0),
    ],
)
def test_noop_config_equals_baseline_exactly(cfg):
    assert cfg.is_noop(L)
    model, idx = random_model(), prompt()
    base = model(idx)
    out = fs_forward(model, idx, cfg)
    assert torch.equal(out.logits, base.logits)
    assert states_equal(out.state, base.state)


def test_fs_off_equals_baseline_even_with_gates_attached():
    model, idx = random_model(), prompt()
    base = model(idx)
    model.attach_fs(FSConfig(alpha_init=2.0, alpha_lr=1e-3, fs_variant="head", fs_input_gate=True))
    out = model(idx)
    assert torch.equal(out.logits, base.logits)
    assert states_equal(out.state, base.state)


def test_fs_changes_exactly_the_seeded_layers():
    model, idx = random_model(), prompt()
    base = model(idx)
    out = fs_forward(model, idx, FSConfig(fs_layer_start=2, alpha_init=0.0))
    for i in range(L):
        same = torch.equal(out.state[i].wkv, base.state[i].wkv)
        assert same == (i < 2), i
    assert not torch.allclose(out.logits, base.logits)


# ---------------------------------------------------------------- the transform itself


def reference_seed(prev, cfg: FSConfig, layer, n_layer, alpha, alpha_head=None, x_last=None, w=None, b=None):
    """docs/DESIGN.md §3 written out with numpy, one sample and head at a time."""
    prev = prev.detach().double().numpy()
    out = np.zeros_like(prev)
    sched = cfg.schedule(layer, n_layer)
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    for bi in range(prev.shape[0]):
        for h in range(prev.shape[1]):
            base = prev[bi, h]
            if cfg.fs_norm:
                base = base / max(math.sqrt((base**2).mean()), 1e-6)
            # one sigmoid over the sum (the researchers' input gate), then the per-head factor
            logit = float(alpha[layer].detach())
            if x_last is not None:
                logit += float(x_last[bi].double() @ w[layer].detach().double()) / math.sqrt(x_last.shape[1]) + float(b[layer].detach())
            g = cfg.seed_scale * sched * sig(logit)
            if alpha_head is not None:
                g *= sig(float(alpha_head[layer, h].detach()))
            fs = base * g
            if cfg.fs_clip > 0:
                fs = np.clip(fs, -cfg.fs_clip, cfg.fs_clip)
            out[bi, h] = fs
    return torch.from_numpy(out)


@pytest.mark.parametrize(
    "cfg",
    [
        FSConfig(fs_clip=0.0, fs_norm=False, alpha_init=-1.0),
        FSConfig(fs_clip=0.05, alpha_init=0.5, seed_scale=0.5),
        FSConfig(fs_variant="head", fs_alpha_schedule="cosine", fs_alpha_min=0.3, fs_clip=0.2),
        FSConfig(fs_variant="head", fs_input_gate=True, fs_alpha_schedule="linear", alpha_lr=1e-3),
        FSConfig(fs_input_gate=True, fs_detach=False, seed_scale=0.5, fs_clip=0.0),
    ],
)
def test_seed_matches_independent_reference(cfg):
    torch.manual_seed(3)
    fs = FutureSeed(cfg, n_layer=L, n_head=H, d_model=C)
    with torch.no_grad():
        fs.alpha.copy_(torch.randn(L))
        if fs.alpha_head is not None:
            fs.alpha_head.copy_(torch.randn(L, H))
        if fs.fs_in_w is not None:
            fs.fs_in_w.copy_(torch.randn(L, C))
            fs.fs_in_b.copy_(torch.randn(L))
    prev = torch.randn(3, H, N, N) * torch.tensor([0.01, 1.0, 30.0, 2.0]).view(1, H, 1, 1)
    x_last = torch.randn(3, C)
    for layer in range(1, L):
        got = fs.seed(layer, prev, x_last)
        want = reference_seed(
            prev, cfg, layer, L, fs.alpha, fs.alpha_head,
            x_last if cfg.fs_input_gate else None, fs.fs_in_w, fs.fs_in_b,
        )
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
        if cfg.fs_clip > 0:
            assert got.abs().max() <= cfg.fs_clip


def test_model_injects_exactly_the_seed_as_initial_state():
    """forward(fs) == forward with the seeds given as explicit initial states (fs=None)."""
    cfg = FSConfig(fs_layer_start=1, alpha_init=0.5, fs_alpha_schedule="linear", fs_variant="head", fs_clip=0.3)
    model, idx = random_model(), prompt()
    out = fs_forward(model, idx, cfg)
    seeder = model.future_seed
    explicit = [LayerState(torch.zeros(2, C), torch.zeros(2, H, N, N), torch.zeros(2, C))]
    for i in range(1, L):
        explicit.append(LayerState(torch.zeros(2, C), seeder.seed(i, out.state[i - 1].wkv), torch.zeros(2, C)))
    again = model(idx, state=explicit)
    torch.testing.assert_close(again.logits, out.logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("fs_variant", ["scalar", "head"])
def test_input_gate_reads_the_layer_input_at_the_last_prompt_token(fs_variant):
    """With non-zero input-gate weights, forward(fs) equals the model run with explicit initial states
    built by the reference formula from each layer's *input* (before ln1) at the last token. Reading
    the ln1 output instead (fsray's FS semantics 1) gives different logits, so the choice is pinned."""
    cfg = FSConfig(fs_input_gate=True, fs_variant=fs_variant, alpha_init=-1.0, fs_clip=0.0, alpha_lr=1e-3)
    model, idx = random_model(), prompt()
    fs = model.attach_fs(cfg)
    with torch.no_grad():
        fs.fs_in_w.copy_(3.0 * torch.randn(L, C))
        fs.fs_in_b.copy_(torch.randn(L))
    inputs, normed = {}, {}
    hooks = [b.ln1.register_forward_pre_hook(lambda m, args, k=k: inputs.__setitem__(k, args[0][:, -1].detach()))
             for k, b in enumerate(model.blocks)]
    hooks += [b.ln1.register_forward_hook(lambda m, a, o, k=k: normed.__setitem__(k, o[:, -1].detach()))
              for k, b in enumerate(model.blocks)]
    out = fs_forward(model, idx, cfg)
    for h in hooks:
        h.remove()

    def explicit(x_last):
        state = [LayerState(torch.zeros(2, C), torch.zeros(2, H, N, N), torch.zeros(2, C))]
        for i in range(1, L):
            seed = reference_seed(out.state[i - 1].wkv, cfg, i, L, fs.alpha, fs.alpha_head, x_last[i], fs.fs_in_w, fs.fs_in_b)
            state.append(LayerState(torch.zeros(2, C), seed.float(), torch.zeros(2, C)))
        return model(idx, state=state).logits

    torch.testing.assert_close(explicit(inputs), out.logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(explicit(normed), out.logits, atol=1e-3, rtol=1e-3)


def test_gates_at_their_start_follow_the_researchers_defaults():
    prev = torch.randn(2, H, N, N)
    x_last = torch.randn(2, C)
    sig = torch.sigmoid(torch.tensor(-2.0))
    plain = dict(alpha_init=-2.0, fs_clip=0.0, fs_norm=False)
    # input gate at its start (w = 0, b = 0): one sigmoid over alpha + 0, i.e. the scalar gate 0.119
    fs = FutureSeed(FSConfig(fs_input_gate=True, **plain), L, H, C)
    torch.testing.assert_close(fs.seed(1, prev, x_last), prev * sig)
    # per-head logits start at alpha_init: the gate starts at sigmoid(-2)^2 = 0.0144
    cfg = FSConfig(fs_variant="head", **plain)
    assert cfg.head_alpha_init is None and cfg.head_logit_init() == -2.0
    fs = FutureSeed(cfg, L, H, C)
    assert torch.equal(fs.alpha_head, torch.full((L, H), -2.0))
    torch.testing.assert_close(fs.seed(1, prev), prev * sig * sig)
    assert float(sig * sig) == pytest.approx(0.01421, abs=1e-5)  # sigmoid(-2)^2 (0.12^2 = 0.0144 rounded)
    # an explicit start still wins
    fs = FutureSeed(FSConfig(fs_variant="head", head_alpha_init=0.0, **plain), L, H, C)
    torch.testing.assert_close(fs.seed(1, prev), prev * sig * 0.5)


def test_seed_is_added_to_a_given_state():
    cfg = FSConfig(alpha_init=0.0)
    model, idx = random_model(), prompt()
    given = model(prompt(seed=7)).state
    out = fs_forward(model, idx, cfg, state=given)
    explicit = [given[0]] + [
        LayerState(given[i].att_x_prev, given[i].wkv + model.future_seed.seed(i, out.state[i - 1].wkv), given[i].ffn_x_prev)
        for i in range(1, L)
    ]
    torch.testing.assert_close(model(idx, state=explicit).logits, out.logits, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- gradients and detach


def run_with_grad(model, idx, cfg=None, state=None):
    """Backward of a fixed loss; returns parameter gradients and the terminal states' gradients."""
    model.zero_grad()
    x_last = {}
    # x_last of the input gate: layer k's input (what enters its ln1) at the last prompt token
    hooks = [b.ln1.register_forward_pre_hook(lambda m, args, k=k: x_last.__setitem__(k, args[0][:, -1]))
             for k, b in enumerate(model.blocks)]
    out = fs_forward(model, idx, cfg, state=state) if cfg is not None else model(idx, state=state)
    for h in hooks:
        h.remove()
    for s in out.state:
        s.wkv.retain_grad()
    out.logits.square().mean().backward()
    params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # a terminal state the loss does not use gets no gradient at all (None): count it as zero
    state_grads = [torch.zeros_like(s.wkv) if s.wkv.grad is None else s.wkv.grad for s in out.state]
    return out, params, state_grads, x_last


def constant_seed_grads(model, idx, out, x_last):
    """The same loss with every seed injected as a constant initial state (no FS in the graph)."""
    fs = model.future_seed
    seeds = [torch.zeros(2, H, N, N)]
    for i in range(1, L):
        seed = fs.seed(i, out.state[i - 1].wkv, x_last[i]).detach() if fs.is_seeded(i) else torch.zeros(2, H, N, N)
        seeds.append(seed)
    state = [LayerState(torch.zeros(2, C), s, torch.zeros(2, C)) for s in seeds]
    return run_with_grad(model, idx, state=state)


@pytest.mark.parametrize("input_gate", [False, True])
def test_detach_blocks_exactly_the_seed_gradient(input_gate):
    cfg = FSConfig(fs_detach=True, alpha_init=0.0, fs_layer_start=1, fs_input_gate=input_gate, alpha_lr=1e-3)
    model, idx = random_model(), prompt()
    model.attach_fs(cfg)
    if input_gate:
        with torch.no_grad():
            model.future_seed.fs_in_w.normal_()
    out, grads, state_grads, x_last = run_with_grad(model, idx, cfg)
    # FS really is in the graph: its gates get gradient
    fs_grads = [p.grad for p in model.future_seed.parameters()]
    assert fs_grads and all(g is not None and g.abs().sum() > 0 for g in fs_grads)
    _, const_grads, const_state_grads, _ = constant_seed_grads(model, idx, out, x_last)
    # ... but the model sees exactly the gradients of constant seeds: nothing flows through a seed
    assert set(const_grads) == {n for n in grads if not n.startswith("future_seed.")}
    for n, g in const_grads.items():
        torch.testing.assert_close(grads[n], g, atol=1e-7, rtol=1e-5, msg=n)
    for a, b in zip(state_grads, const_state_grads):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-5)


def test_without_detach_gradient_flows_into_the_layer_below():
    cfg = FSConfig(fs_detach=False, alpha_init=0.0, fs_layer_start=2)
    model, idx = random_model(), prompt()
    out, grads, state_grads, x_last = run_with_grad(model, idx, cfg)
    _, const_grads, const_state_grads, _ = constant_seed_grads(model, idx, out, x_last)
    # layer 1's terminal state seeds layer 2: it receives extra gradient through the seed
    assert (state_grads[1] - const_state_grads[1]).abs().max() > 1e-6
    # and the extra gradient reaches the weights of layer 1 and below, not the weights of the last layer (its state seeds nothing)
    assert not torch.allclose(grads["blocks.1.att.key.weight"], const_grads["blocks.1.att.key.weight"])
    assert not torch.allclose(grads["blocks.0.att.key.weight"], const_grads["blocks.0.att.key.weight"])
    torch.testing.assert_close(grads["blocks.3.att.key.weight"], const_grads["blocks.3.att.key.weight"])


# ---------------------------------------------------------------- schedules and gates


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("none", [0.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("cosine", [0.0, 0.25, 0.25 + 0.75 * 0.25, 0.25 + 0.75 * 0.75, 1.0]),
    ],
)
def test_schedule_multipliers_per_layer(schedule, expected):
    cfg = FSConfig(fs_alpha_schedule=schedule, fs_alpha_min=0.25, fs_alpha_max=1.0, seed_scale=0.5)
    fs = FutureSeed(cfg, n_layer=5, n_head=H, d_model=C)
    got = [fs.scalar_gate(i) for i in range(5)]
    assert got == pytest.approx([0.5 * e for e in expected], abs=1e-12)
    # and the model applies them: the seed of layer i scales with its multiplier (no clip, no norm)
    prev = torch.randn(1, H, N, N)
    cfg2 = cfg.model_copy(update={"fs_clip": 0.0, "fs_norm": False})
    fs2 = FutureSeed(cfg2, n_layer=5, n_head=H, d_model=C)
    for i in range(1, 5):
        torch.testing.assert_close(fs2.seed(i, prev), prev * 0.5 * expected[i] * torch.sigmoid(torch.tensor(-2.0)))


def test_schedule_starts_at_fs_layer_start():
    fs = FutureSeed(FSConfig(fs_alpha_schedule="linear", fs_layer_start=3, fs_alpha_min=0.4), 6, H, C)
    assert [fs.scalar_gate(i) for i in range(6)] == pytest.approx([0, 0, 0, 0.4, 0.7, 1.0])


def test_head_gate_changes_only_its_head():
    cfg = FSConfig(fs_variant="head", alpha_init=0.0, fs_clip=0.0)
    fs = FutureSeed(cfg, n_layer=L, n_head=H, d_model=C)
    prev = torch.randn(2, H, N, N)
    before = fs.seed(2, prev)
    fs.alpha_head[2, 1] = 3.0
    after = fs.seed(2, prev)
    changed = [not torch.equal(before[:, h], after[:, h]) for h in range(H)]
    assert changed == [h == 1 for h in range(H)]
    assert torch.equal(fs.seed(1, prev), FutureSeed(cfg, L, H, C).seed(1, prev))  # other layers untouched


def test_head_gate_in_model_changes_only_layers_from_its_own():
    cfg = FSConfig(fs_variant="head", alpha_init=0.0)
    model, idx = random_model(), prompt()
    model.attach_fs(cfg)
    before = fs_forward(model, idx, cfg)
    model.future_seed.alpha_head[2] = 4.0
    after = fs_forward(model, idx, cfg)
    assert [torch.equal(before.state[i].wkv, after.state[i].wkv) for i in range(L)] == [True, True, False, False]


def test_input_gate_is_per_sample_and_only_scales():
    cfg = FSConfig(fs_input_gate=True, alpha_init=0.0, fs_clip=0.0)
    fs = FutureSeed(cfg, n_layer=L, n_head=H, d_model=C)
    prev = torch.randn(1, H, N, N).expand(2, H, N, N)
    x_last = torch.randn(2, C)
    # zero-initialised weights: the gate is sigmoid(bias) for every input
    s = fs.seed(1, prev, x_last)
    torch.testing.assert_close(s[0], s[1])
    with torch.no_grad():
        fs.fs_in_w[1] = torch.randn(C)
    s = fs.seed(1, prev, x_last)
    ratio = s / fs.seed(1, prev, torch.zeros(2, C))
    # a per-sample scalar: constant within a sample, different across samples
    assert torch.allclose(ratio[0], ratio[0].flatten()[0]) and torch.allclose(ratio[1], ratio[1].flatten()[0])
    assert not torch.allclose(ratio[0].flatten()[0], ratio[1].flatten()[0])
    with pytest.raises(UsageError, match="x_last"):
        fs.seed(1, prev)


def test_fs_norm_gives_unit_rms_per_head():
    fs = FutureSeed(FSConfig(alpha_init=50.0, fs_clip=0.0), L, H, C)  # sigmoid(50) == 1 in float32
    prev = torch.randn(2, H, N, N) * torch.tensor([1e-3, 1.0, 1e3, 5.0]).view(1, H, 1, 1)
    rms = fs.seed(1, prev).square().mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(rms, torch.ones(2, H))
    assert torch.equal(fs.seed(1, torch.zeros(1, H, N, N)), torch.zeros(1, H, N, N))  # no 0/0


# ---------------------------------------------------------------- padding, groups, misuse


def test_padding_invariance_with_fs():
    cfg = FSConfig(alpha_init=0.0, fs_variant="head", fs_input_gate=True)
    model = random_model()
    model.attach_fs(cfg)
    with torch.no_grad():
        model.future_seed.fs_in_w.normal_()
    seqs = [[3, 5, 7, 9, 11, 2], [4, 1, 6]]
    T = 6
    idx = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        idx[b, T - len(s):] = torch.tensor(s)
        mask[b, T - len(s):] = True
    padded = fs_forward(model, idx, cfg, mask=mask)
    for b, s in enumerate(seqs):
        alone = fs_forward(model, torch.tensor([s]), cfg)
        torch.testing.assert_close(padded.logits[b, T - len(s):], alone.logits[0], atol=1e-5, rtol=1e-5)
        for i in range(L):
            torch.testing.assert_close(padded.state[i].wkv[b], alone.state[i].wkv[0], atol=1e-5, rtol=1e-5)


def test_gates_are_parameters_only_when_alpha_lr_positive():
    model = random_model()
    model.attach_fs(FSConfig(fs_variant="head", fs_input_gate=True, alpha_lr=0.0))
    groups = model.param_groups()
    assert groups["alpha"] == groups["head_gate"] == groups["input_gate"] == []
    assert "future_seed.alpha" in dict(model.named_buffers())

    fs = model.attach_fs(FSConfig(fs_variant="head", fs_input_gate=True, alpha_lr=1e-3))
    groups = model.param_groups()
    assert groups["alpha"] == [fs.alpha] and groups["head_gate"] == [fs.alpha_head]
    assert groups["input_gate"] == [fs.fs_in_w, fs.fs_in_b]
    fs_ids = {id(p) for p in fs.parameters()}
    assert not any(id(p) in fs_ids for p in groups["model"])
    assert len(groups["model"]) + 4 == len(list(model.parameters()))


def test_fs_prompt_pass_without_an_attached_config_is_refused():
    model, idx = random_model(), prompt()
    with pytest.raises(UsageError, match="attach_fs"):
        model(idx, use_fs=True)


def test_noop_is_decided_once_at_attach_from_the_model_depth():
    model = random_model()
    assert model.attach_fs(FSConfig(fs_layer_start=L)).noop_reason is not None
    assert model.attach_fs(FSConfig(fs_layer_start=L - 1)).noop_reason is None
