"""BlinkDL checkpoint save/load: round trip, shape inference, one clear error per bad file."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch

from fsray.checkpoint import infer_config, load_blinkdl, save_blinkdl
from fsray.errors import UsageError
from fsray.fsconfig import FSConfig
from fsray.model import ModelConfig, RWKV7

CFG = ModelConfig(n_layer=3, d_model=32, head_size=8, vocab_size=50, d_decay_lora=8, d_aaa_lora=12, d_mv_lora=4, d_gate_lora=16)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = RWKV7(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture
def ckpt(tmp_path, model):
    path = tmp_path / "m.pth"
    save_blinkdl(model, path)
    return path


def test_round_trip_is_exact(model, ckpt):
    loaded = load_blinkdl(ckpt)
    assert loaded.config == CFG
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    idx = torch.randint(0, 50, (2, 6))
    assert torch.equal(model(idx).logits, loaded(idx).logits)


def test_file_is_a_flat_blinkdl_state_dict_without_fs_gates(model, tmp_path):
    model.attach_fs(FSConfig(alpha_lr=1e-3, fs_variant="head"))
    path = tmp_path / "fs.pth"
    save_blinkdl(model, path)
    sd = torch.load(path, weights_only=True)
    assert not any(k.startswith("future_seed") for k in sd)
    assert sd["blocks.0.att.x_r"].shape == (1, 1, 32)
    assert sd["blocks.0.att.r_k"].shape == (4, 8)
    assert sd["blocks.1.att.w1"].shape == (32, 8) and sd["blocks.1.att.v2"].shape == (4, 32)
    assert sd["blocks.0.ffn.key.weight"].shape == (128, 32)
    assert "blocks.0.ln0.weight" in sd and "blocks.1.ln0.weight" not in sd
    assert "blocks.0.att.v0" not in sd and "blocks.2.att.v0" in sd
    assert sd["head.weight"].shape == (50, 32)


def test_infer_config_from_shapes(ckpt):
    assert infer_config(torch.load(ckpt, weights_only=True)) == CFG


def test_bf16_checkpoint_loads_as_float32(model, tmp_path):
    path = tmp_path / "bf16.pth"
    save_blinkdl(model, path, dtype=torch.bfloat16)
    loaded = load_blinkdl(path)
    assert loaded.emb.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.emb.weight, model.emb.weight.bfloat16().float())


class NotATensor:  # module level so it pickles; loading it needs code
    pass


def _edited(ckpt, tmp_path, edit):
    sd = torch.load(ckpt, weights_only=True)
    edit(sd)
    path = tmp_path / f"edited{len(list(tmp_path.glob('edited*')))}.pth"
    torch.save(sd, path)
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _saved(path, obj):
    torch.save(obj, path)
    return path


def _make_case(case, ckpt, tmp_path):
    """(path of a bad file, the pattern its error must match); builds only the file asked for."""
    builders = {
        "missing file": lambda: (tmp_path / "nope.pth", "no such file"),
        "directory": lambda: (tmp_path, "directory"),
        "truncated": lambda: (_write(tmp_path / "t.pth", ckpt.read_bytes()[: ckpt.stat().st_size // 2]), "corrupt or truncated"),
        "garbage": lambda: (_write(tmp_path / "g.pth", b"this is not a torch file at all" * 10), "corrupt"),
        "list": lambda: (_saved(tmp_path / "l.pth", [torch.zeros(2)]), "is a list, not a state dict"),
        "needs code": lambda: (
            _saved(tmp_path / "c.pth", {"emb.weight": torch.zeros(2), "extra": NotATensor()}), "need code to load"
        ),
        "plain pickle": lambda: (
            _write(tmp_path / "p.pkl", pickle.dumps(collections.OrderedDict(a=1))), "corrupt|not a state dict|need code to load"
        ),
        "non tensor values": lambda: (_saved(tmp_path / "i.pth", {"emb.weight": 3}), "not name -> tensor: emb.weight"),
        "missing key": lambda: (_edited(ckpt, tmp_path, lambda sd: sd.pop("blocks.1.att.k_a")), "missing keys: blocks.1.att.k_a"),
        "missing emb": lambda: (_edited(ckpt, tmp_path, lambda sd: sd.pop("emb.weight")), "missing keys: emb.weight"),
        "mis-shaped": lambda: (
            _edited(ckpt, tmp_path, lambda sd: sd.__setitem__("blocks.2.att.key.weight", torch.zeros(32, 31))),
            r"key blocks.2.att.key.weight has shape \[32, 31\], expected \[32, 32\]",
        ),
        "unexpected": lambda: (
            _edited(ckpt, tmp_path, lambda sd: sd.__setitem__("blocks.0.ffn.s_emb.weight", torch.zeros(3))),
            "unexpected keys.*blocks.0.ffn.s_emb.weight",
        ),
    }
    return builders[case]()


CASES = ["missing file", "directory", "truncated", "garbage", "list", "needs code", "plain pickle",
         "non tensor values", "missing key", "missing emb", "mis-shaped", "unexpected"]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_gives_one_clear_usage_error(case, ckpt, tmp_path):
    path, pattern = _make_case(case, ckpt, tmp_path)
    with pytest.raises(UsageError, match=pattern) as err:
        load_blinkdl(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(UsageError, match="RWKV7"):
        save_blinkdl(torch.nn.Linear(2, 2), tmp_path / "x.pth")
    with pytest.raises(UsageError, match="does not exist"):
        save_blinkdl(RWKV7(CFG), tmp_path / "no" / "dir" / "x.pth")
