"""Filling a prompt up to its token budget with extra text (distractor paragraphs, notes)."""

from __future__ import annotations

import random
from typing import Callable, Sequence


def fill(budget: int, pool: Sequence[dict], render: Callable[[dict], list[int]], rng: random.Random,
         exclude: Callable[[dict], bool], exact: bool, max_misses: int = 8) -> list[list[int]]:
    """Token pieces drawn at random from ``pool`` (rendered with ``render``) that fit ``budget``.

    Draws until ``max_misses`` draws in a row do not fit. With ``exact``, the remaining budget is
    then filled with the head of one more piece, so the total equals the budget when the pool
    allows it.
    """
    pieces: list[list[int]] = []
    left, misses = budget, 0
    candidates = [r for r in pool if not exclude(r)]
    if not candidates:
        return pieces
    while left > 0 and misses < max_misses:
        piece = render(candidates[rng.randrange(len(candidates))])
        if 0 < len(piece) <= left:
            pieces.append(piece)
            left -= len(piece)
            misses = 0
        else:
            misses += 1
    if exact and left > 0:
        for _ in range(max_misses):
            piece = render(candidates[rng.randrange(len(candidates))])
            if len(piece) >= left:
                pieces.append(piece[:left])
                break
    return pieces
