"""Batches for paired training: collation, the seeded training stream, fixed validation batches.

Pairing depends on this module: for a seed, both modes read the same global batches in the same
order, and a Ray Train worker of rank r out of W reads its slice of each global batch, so the data
seen per step does not depend on the number of workers.

Layout of a batch (answer-only loss with teacher forcing)::

    prompt       [B, Tp]  left-padded with pad_id; prompt_mask False on padding
    answer       [B, Ta]  right-padded; answer_mask False on padding (these are the targets)

The first answer token is predicted from the last prompt position (always a real token, thanks to
left padding); answer[:, :-1] is fed after the prompt state to predict answer[:, 1:].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import UsageError


@dataclass
class Batch:
    prompt: torch.Tensor
    prompt_mask: torch.Tensor
    answer: torch.Tensor
    answer_mask: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def n_answer_tokens(self) -> int:
        return int(self.answer_mask.sum())

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens processed: prompt plus teacher-forced answer."""
        return int(self.prompt_mask.sum()) + int(self.answer_mask.sum())

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.prompt, self.prompt_mask, self.answer, self.answer_mask)))


def collate(examples: Sequence, pad_id: int = 0) -> Batch:
    """Stack examples (objects with ``prompt`` and ``answer`` token lists) into one Batch."""
    if not examples:
        raise UsageError("cannot collate an empty batch")
    for i, ex in enumerate(examples):
        if len(ex.prompt) == 0 or len(ex.answer) == 0:
            raise UsageError(f"example {i} has an empty prompt or answer")
    B = len(examples)
    Tp = max(len(ex.prompt) for ex in examples)
    Ta = max(len(ex.answer) for ex in examples)
    prompt = torch.full((B, Tp), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros(B, Tp, dtype=torch.bool)
    answer = torch.full((B, Ta), pad_id, dtype=torch.long)
    answer_mask = torch.zeros(B, Ta, dtype=torch.bool)
    for i, ex in enumerate(examples):
        p, a = len(ex.prompt), len(ex.answer)
        prompt[i, Tp - p:] = torch.as_tensor(ex.prompt, dtype=torch.long)
        prompt_mask[i, Tp - p:] = True
        answer[i, :a] = torch.as_tensor(ex.answer, dtype=torch.long)
        answer_mask[i, :a] = True
    return Batch(prompt, prompt_mask, answer, answer_mask)


def worker_slice(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """The part of a global batch that worker ``rank`` of ``world`` trains on (contiguous chunks)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} out of range for world size {world}")
    chunks = np.array_split(np.asarray(indices, dtype=np.int64), world)
    return [int(i) for i in chunks[rank]]


class TrainStream:
    """Seeded, endless stream of global batches: one fresh permutation of the training set per epoch.

    ``batch_indices(step)`` is a pure function of (n_examples, batch_size, seed, step), so both modes
    of a seed, any worker count, and a run resumed mid-way all see the same batches.
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        if batch_size > n_examples:
            raise UsageError(
                f"batch_size {batch_size} is larger than the training set ({n_examples} examples)"
            )
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def batch_indices(self, step: int) -> list[int]:
        # Batches never straddle epochs: the tail of a permutation that cannot fill a batch is
        # dropped, so every batch has exactly batch_size distinct examples.
        per_epoch = self.n // self.batch_size
        epoch, j = divmod(step, per_epoch)
        perm = self._perm(epoch)
        return [int(i) for i in perm[j * self.batch_size:(j + 1) * self.batch_size]]


def eval_batches(n_examples: int, batch_size: int) -> list[list[int]]:
    """Fixed validation batches: consecutive slices of the validation set, same for every seed."""
    return [list(range(s, min(s + batch_size, n_examples))) for s in range(0, n_examples, batch_size)]


def indices_digest(batches: Sequence[Sequence[int]]) -> str:
    """Short hash of a sequence of index batches (records which data a run saw, for pairing checks)."""
    h = hashlib.sha256()
    for b in batches:
        h.update(np.asarray(b, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:12]
