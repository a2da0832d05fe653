"""BlinkDL RWKV-7 checkpoints (``.pth``: a flat state dict, docs/DESIGN.md §2): load and save.

A checkpoint is data, never code: ``torch.load(weights_only=True)``. Every problem with a file
raises one ``UsageError`` line naming the file and what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch

from .errors import UsageError, first_line
from .model import RWKV7, ModelConfig

_SHOW = 6  # how many key names an error lists before "... and N more"


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _read_state_dict(path: Path, map_location, mmap: bool = False) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UsageError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise UsageError(f"checkpoint {path}: is a directory, expected a .pth file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise UsageError(
                f"checkpoint {path}: contains objects that need code to load "
                "(not a plain state dict of tensors); refusing to unpickle it"
            ) from None
        raise UsageError(f"checkpoint {path}: corrupt or not a torch file ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001  a damaged pickle stream can fail in any of the unpickler's ops
        raise UsageError(f"checkpoint {path}: corrupt or truncated torch file ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"checkpoint {path}: is a {type(obj).__name__}, not a state dict (name -> tensor)")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UsageError(f"checkpoint {path}: not a state dict: entries that are not name -> tensor: {_names(bad)}")
    if not obj:
        raise UsageError(f"checkpoint {path}: is an empty state dict")
    return obj


def _first_line(e: Exception) -> str:
    return first_line(e, with_type=False)[:200]   # a corrupt pickle's message can be huge


def infer_config(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """Layer count, width, heads, head size, vocabulary and LoRA ranks from the tensor shapes."""
    needed = ["emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1", "blocks.0.att.g1",
              "blocks.0.ffn.key.weight"]
    missing = [k for k in needed if k not in sd]
    if missing:
        raise UsageError(f"{source}: missing keys: {_names(missing)}")
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    n_layer = max(layers) + 1

    def dims(key, ndim):
        t = sd[key]
        if t.dim() != ndim:
            raise UsageError(f"{source}: key {key} has shape {tuple(t.shape)}, expected {ndim} dimensions")
        return t.shape

    V, C = dims("emb.weight", 2)
    H, N = dims("blocks.0.att.r_k", 2)
    if H * N != C:
        raise UsageError(
            f"{source}: key blocks.0.att.r_k has shape {[H, N]}, expected [heads, head_size] with heads*head_size = {C}"
        )
    ffn_hidden = dims("blocks.0.ffn.key.weight", 2)[0]
    if ffn_hidden % C:
        raise UsageError(f"{source}: key blocks.0.ffn.key.weight has {ffn_hidden} rows, expected a multiple of {C}")
    d_mv = dims("blocks.1.att.v1", 2)[1] if n_layer > 1 and "blocks.1.att.v1" in sd else None
    ranks = {name: int(dims(f"blocks.0.att.{key}", 2)[1]) for name, key in
             (("d_decay_lora", "w1"), ("d_aaa_lora", "a1"), ("d_gate_lora", "g1"))}
    try:
        return ModelConfig(n_layer=n_layer, d_model=int(C), head_size=int(N), vocab_size=int(V),
                           d_mv_lora=int(d_mv) if d_mv is not None else None,
                           ffn_mult=int(ffn_hidden // C), **ranks)
    except UsageError as e:
        raise UsageError(f"{source}: shapes give an impossible model: {e}") from None


def read_config(path) -> ModelConfig:
    """A checkpoint's shape (layers, width, heads, vocabulary) without loading its weights into
    memory (memory-mapped where the file allows): what a driver needs to decide no-op configs."""
    path = Path(os.fspath(path))
    try:
        sd = _read_state_dict(path, "cpu", mmap=True)
    except UsageError:
        sd = _read_state_dict(path, "cpu")   # old (non-zip) torch files cannot be memory-mapped
    return infer_config(sd, source=f"checkpoint {path}")


def load_blinkdl(path, map_location="cpu", dtype: torch.dtype = torch.float32, wkv_backend: str = "auto") -> RWKV7:
    """Build an ``RWKV7`` from a BlinkDL ``.pth`` (weights cast to ``dtype``)."""
    path = Path(os.fspath(path))
    sd = _read_state_dict(path, map_location)
    cfg = infer_config(sd, source=f"checkpoint {path}")
    model = RWKV7(cfg, wkv_backend=wkv_backend, init=False)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    if missing:
        raise UsageError(f"checkpoint {path}: missing keys: {_names(missing)}")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        raise UsageError(f"checkpoint {path}: unexpected keys (not a plain RWKV-7 x070 model): {_names(unexpected)}")
    for k, shape in expected.items():
        if sd[k].shape != shape:
            raise UsageError(
                f"checkpoint {path}: key {k} has shape {list(sd[k].shape)}, expected {list(shape)}"
            )
    with torch.no_grad():
        model.load_state_dict({k: v.to(dtype) for k, v in sd.items()})
    return model.to(dtype)


def save_blinkdl(model: RWKV7, path, dtype: torch.dtype | None = None) -> None:
    """Write the model's weights (not its FS gates) as a flat BlinkDL state dict."""
    if not isinstance(model, RWKV7):
        raise UsageError(f"save_blinkdl needs an RWKV7 model, got {type(model).__name__}")
    sd = {
        k: (v.detach().to("cpu", dtype or v.dtype).contiguous().clone())
        for k, v in model.state_dict().items()
        if not k.startswith("future_seed.")
    }
    path = Path(os.fspath(path))
    if path.parent and not path.parent.exists():
        raise UsageError(f"cannot save checkpoint {path}: directory {path.parent} does not exist")
    torch.save(sd, path)
