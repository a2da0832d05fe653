"""The fused training step: the model's forward and backward compiled by ``torch.compile``.

RWKV-7's block is dozens of small elementwise operations (token-shift mixes, LoRA gates, normalisations,
the k/a updates, the gate-output correction) around a few small matrix products. Eager PyTorch runs each
as its own pass over memory, forward and backward. ``compile_scorer`` hands the training forward to
TorchInductor, which fuses them (C++ with vector intrinsics on a CPU, Triton on a GPU) and derives the
backward through AOTAutograd, fused the same way. The WKV7 kernels stay hand-written: they are registered
as torch custom ops (``torch.ops.fsray.wkv7_cpu_fwd``/``_bwd``, ``torch.ops.fsray.wkv7_triton_fwd``/``_bwd``,
each with a shape-only fake and an autograd formula), so the compiler keeps them inside the graph
instead of breaking it. The eager model is the reference: tests compare the two (outputs and gradients).

Usage (the trainer's training forward; evaluation stays eager, it runs a tenth as often)::

    train_scorer = fsray.fused.compile_scorer(scorer, mode)   # "auto" | "on" | "off"
    opt = fsray.fused.adamw(groups, lr=..., betas=..., eps=...)  # fused AdamW kernel where available
    logits = train_scorer(prompt, prompt_mask, answer)            # then loss.backward(), opt.step()

Modes: ``off`` is the eager step; ``auto`` compiles where it can and otherwise falls back to eager,
with one warning per process saying why (no C++ compiler for Inductor, a device or Python that
torch.compile does not support, or a compile that failed); ``on`` insists: where compiling is not
possible it is one ``UsageError`` naming the reason.

Cost and cache: the first compile of a graph is slow on a small CPU: the embedded default's first
fused step took 57-93 s on the 2-core development machine (traced, lowered, ~100 C++ kernels built),
against a saving of ~10 ms a step (bench/RESULTS.md). Inductor's FX graph cache and AOTAutograd cache
keep the results on disk under ``$FSRAY_CACHE_DIR`` (default ``~/.cache/fsray``)``/inductor`` (unless
``TORCHINDUCTOR_CACHE_DIR`` is set), so every later process, e.g. each Ray worker of a search, only
traces and loads (~3 s), and later runs in the same process reuse the graph (no cost).
A process compiles each graph variant once: no_fs and prompt_fs differ, as do FS configurations that
change the graph (``fs_norm``, ``fs_detach``, ``fs_variant``, ``fs_input_gate``, and the numbers that
enter it as constants: ``seed_scale``, ``fs_clip``, the schedule); gate values such as ``alpha_init``
are tensors and do not. The trainer takes it as ``TrainSpec.compile`` (default ``off``). Shapes: the first prompt length is compiled static; when
another length comes, Dynamo's automatic dynamic shapes recompile once with the length symbolic, and
no further length recompiles (prompts are not padded to buckets: the embedded default's prompts are one
length, and padding them to a multiple of 8 would cost more compute than it saves).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.optim.optimizer as _optimizer_module

from .errors import UsageError

MODES = ("auto", "on", "off")
# A long-lived Ray worker trains many FS configurations: room for their graph variants (default 8).
RECOMPILE_LIMIT = 64


def cache_dir() -> Path:
    """Where compiled graphs are kept across processes (the C WKV kernel's cache root, /inductor)."""
    root = os.environ.get("FSRAY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fsray")
    return Path(root) / "inductor"


def _setup_cache() -> None:
    """Point Inductor's caches at fsray's cache directory, unless the user chose one.

    Inductor reads the variable whenever it opens a cache, and writes its default into it the first
    time it looks (any torch.compile in the process, or a compiler probe): a value equal to that
    default is not the user's choice and is replaced.
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is not None:
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir

            if os.path.abspath(current) != os.path.abspath(default_cache_dir()):
                return
        except ImportError:
            return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir())


def unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why ``torch.compile`` cannot build the step for ``device`` here (None: it can)."""
    device = torch.device(device or "cpu")
    try:
        from torch import _dynamo

        if not _dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {sys.version.split()[0]} with torch {torch.__version__}"
    except Exception as exc:  # noqa: BLE001  (an old or broken build: any failure means "cannot")
        return f"torch.compile is unavailable ({type(exc).__name__}: {exc})"
    if device.type == "cpu":
        try:
            from torch._inductor import cpp_builder

            cxx = cpp_builder.get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001
            return f"no C++ compiler for TorchInductor ({type(exc).__name__}: {exc})"
        if not (os.path.isfile(cxx) or shutil.which(cxx)):
            return f"no C++ compiler for TorchInductor ({cxx!r} not found; set CXX or install g++)"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (TorchInductor needs it on CUDA)"
    return f"compiling the training step on {device.type} devices is not supported"


@functools.cache
def _warn_fallback(reason: str) -> None:
    """Said once per process and reason: runs fall back to the eager step."""
    warnings.warn(f"fsray: the fused (compiled) training step is unavailable ({reason}); "
                  "training with the eager step", RuntimeWarning, stacklevel=3)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"unknown compile mode {mode!r}; choose from {', '.join(MODES)}")
    return mode


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


# Errors that mean "the compiler could not build this", as opposed to errors of the computation itself.
def _compile_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed, Unsupported

        errors += [BackendCompilerFailed, Unsupported]
    except ImportError:
        pass
    try:
        from torch._inductor.exc import CppCompileError, InductorError

        errors += [InductorError, CppCompileError]
    except ImportError:
        pass
    return tuple(errors)


def _left_padded(x: Any) -> bool:
    """False for a [B, T] bool mask with a real token before a padded one: the compiled forward takes
    the left-padding path without a data-dependent branch (fsray.model._TokenShift), so such a batch
    (fsray's collate never makes one) runs eagerly."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.bool or x.dim() != 2 or x.shape[1] < 2:
        return True
    return bool((x[:, 1:] >= x[:, :-1]).all())


class FusedScorer:
    """The compiled training forward with the eager one behind it (see ``compile_scorer``).

    Call it like the scorer. ``compiled`` says whether calls go through the compiler;
    ``first_call_seconds`` is the wall time of the first call (tracing and compiling, or loading from
    the cache, plus one forward); ``fallback_reason`` says why a call fell back to eager.
    """

    def __init__(self, scorer: torch.nn.Module, mode: str, options: dict | None = None,
                 backend: str = "inductor"):
        self.eager = scorer
        self.mode = mode
        self.options = dict(options or {})
        self._compiled = torch.compile(scorer, dynamic=None, backend=backend, options=self.options or None)
        self.compiled = True
        self.fallback_reason: str | None = None
        self.first_call_seconds: float | None = None

    def __call__(self, *args, **kwargs):
        if not self.compiled or not all(_left_padded(a) for a in (*args, *kwargs.values())):
            return self.eager(*args, **kwargs)
        t = time.perf_counter()
        try:
            out = self._compiled(*args, **kwargs)
        except _compile_errors() as exc:
            reason = f"compiling failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.mode == "on":
                raise UsageError(f"compile='on': the training step could not be compiled ({reason})") from exc
            _warn_fallback(reason)
            self.compiled, self.fallback_reason = False, reason
            return self.eager(*args, **kwargs)
        if self.first_call_seconds is None:
            self.first_call_seconds = time.perf_counter() - t
        return out

    # The trainer also uses the scorer as a module (train/eval mode, DDP's no_sync, ...).
    def __getattr__(self, name: str) -> Any:
        return getattr(self.eager, name)


def compile_scorer(scorer: torch.nn.Module, mode: str = "auto", *, options: dict | None = None,
                   backend: str = "inductor") -> FusedScorer | torch.nn.Module:
    """The training forward of ``scorer`` (a module, DDP-wrapped or not) compiled, or ``scorer``
    itself where compiling is off or not possible (``auto``: said once per process; ``on``: UsageError).

    ``options``: TorchInductor options passed through to ``torch.compile`` (e.g. ``{"cpp_wrapper":
    True}``); ``backend``: torch.compile's backend (tests use ``aot_eager``: Dynamo and AOTAutograd
    without Inductor's C++ compile). Use the result for training calls only; evaluate with the eager scorer (eval batches have
    other shapes and no backward: compiling them would add graphs for little gain).
    """
    _check_mode(mode)
    if mode == "off":
        return scorer
    _setup_cache()
    reason = unavailable_reason(_device_of(scorer))
    if reason is not None:
        if mode == "on":
            raise UsageError(f"compile='on': the training step cannot be compiled here: {reason}")
        _warn_fallback(reason)
        return scorer
    from torch._dynamo import config as cfg

    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    # Build (or load) the C WKV kernel now, outside tracing: its build takes a lock Dynamo cannot trace.
    from .wkv import compiled as wkv_compiled

    wkv_compiled.available()
    return FusedScorer(scorer, mode, options, backend)


class _FusedAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW(fused=True)`` whose plain steps call the fused kernel directly: the same
    update, without ~0.3 ms a step of Python bookkeeping over the trainer's ~70 small parameters.
    Anything but a plain step (a closure, hooks, first steps that create the state, amsgrad, tensor
    learning rates, sparse or mixed-device gradients) takes torch's own ``step``."""

    @torch.no_grad()
    def step(self, closure=None):
        if (closure is not None or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or _optimizer_module._global_optimizer_pre_hooks
                or _optimizer_module._global_optimizer_post_hooks):
            return super().step(closure)
        calls = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if (group["amsgrad"] or group.get("capturable") or group.get("differentiable")
                    or isinstance(group["lr"], torch.Tensor)):
                return super().step(closure)
            states = [self.state.get(p) for p in params]
            if (not all(states) or any(p.grad.is_sparse or p.grad.device != params[0].device or p.is_complex()
                                       for p in params)):
                return super().step(closure)
            calls.append((group, params, states))
        for group, params, states in calls:
            steps = [st["step"] for st in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(params, [p.grad for p in params], [st["exp_avg"] for st in states],
                                [st["exp_avg_sq"] for st in states], [], steps, amsgrad=False, lr=group["lr"],
                                beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                maximize=group["maximize"], grad_scale=None, found_inf=None)
        return None


def adamw(params, *, fused: bool | None = None, **kwargs) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel (one pass over all parameters per step, CPU and CUDA) where it
    supports the parameters, else the default (foreach) implementation. Same update up to rounding.

    ``fused``: None tries the fused kernel; True requires it; False never uses it.
    """
    if fused is False:
        return torch.optim.AdamW(params, **kwargs)
    params = list(params)
    try:
        return _FusedAdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError) as exc:
        if fused:
            raise UsageError(f"fused AdamW is not supported for these parameters: {exc}") from exc
        return torch.optim.AdamW(params, **kwargs)


def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (2-norm) as two operations: one norm over all gradients
    flattened together and one multi-tensor scale (the default takes a norm per parameter: ~0.2 ms a
    step more on a CPU for the trainer's ~70 small parameters). The same norm up to rounding."""
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or len({(g.device, g.dtype) for g in grads}) > 1 or any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    with torch.no_grad():
        total = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
    return total
