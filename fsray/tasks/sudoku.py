"""Sudoku 4x4 and 9x9 with a unique solution; the givens sit before (order=givens_prefix) or after
(order=givens_suffix) the blanks in reading order.

Prompt (4x4, givens_prefix; rows separated by ``/``, blanks are ``.``)::

    Sudoku 4x4
    2143/3412/1.2./..3.
    Solution:

Answer: the full solution grid in the same layout, then a newline (``2143/3412/1324/4231\\n``).

Blanks are taken from one half of the grid in reading order: the second half for givens_prefix
(a causal reader sees the clues first; upstream's ``mask_region=suffix``), the first half for
givens_suffix (the blanks come before the clues that fix them: the unfriendly order; upstream's
``mask_region=prefix``). Cells of that half are visited in random order and blanked while the
puzzle keeps a unique solution, until ``blanks`` cells are blank (default 6 of 8 for 4x4, 30 of 40
for 9x9); a solution grid where that fails is redrawn. Every puzzle has exactly ``blanks`` blanks,
which makes the chance level exact. Train and val never share a solution grid. 9x9 builds take
~10 ms a puzzle and are cached on disk (``$FSRAY_CACHE_DIR``, default ``~/.cache/fsray``).

Chance: the guesser copies the givens and fills each blank with a uniform digit:
seq_acc = size**-blanks; with one token per character, token_acc = 1 - blanks*(1 - 1/size)/L
for an answer of L tokens (a tokenizer that merges characters gets an estimate on 200 puzzles).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import math
import random
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from .base import VAL_SHARE, Example, GeneratedTask, TaskOptions, Tokenizer, sample_distinct, split_of

DEFAULT_BLANKS = {4: 6, 9: 30}


class Grid:
    """Index helpers of a size x size sudoku (cells in reading order)."""

    _cache: dict[int, "Grid"] = {}

    def __init__(self, size: int) -> None:
        box = {4: 2, 9: 3}[size]
        self.size, self.box, self.n = size, box, size * size
        self.full = (1 << size) - 1
        # (row, column, box) of each cell: the three units whose digits must differ
        self.units = [(r, c, (r // box) * box + c // box)
                      for r, c in (divmod(cell, size) for cell in range(self.n))]

    @classmethod
    def of(cls, size: int) -> "Grid":
        if size not in cls._cache:
            cls._cache[size] = cls(size)
        return cls._cache[size]

    def candidates(self, cells, cell: int) -> int:
        """Bitmask of digits (bit d-1 for digit d) that no other cell of ``cell``'s units uses."""
        r, c, b = self.units[cell]
        used = 0
        for other, (r2, c2, b2) in enumerate(self.units):
            if other != cell and cells[other] and (r2 == r or c2 == c or b2 == b):
                used |= 1 << (cells[other] - 1)
        return self.full & ~used


def count_solutions(cells, size: int, limit: int = 2, rng: random.Random | None = None,
                    out: list[int] | None = None) -> int:
    """Number of completions of ``cells`` (0 = blank), counting up to ``limit``.

    Depth-first search over digit bitmasks kept per row, column and box, always branching on the
    blank with the fewest candidates. With ``rng`` the digits are tried in random order (used to
    draw random solved grids); ``out`` receives the first solution found.
    """
    g = Grid.of(size)
    units, full = g.units, g.full
    rows, cols, boxes = [0] * size, [0] * size, [0] * size
    work = list(cells)
    for cell, v in enumerate(work):
        if v:
            bit = 1 << (v - 1)
            r, c, b = units[cell]
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return 0  # a contradictory grid has no solution
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    blanks = [i for i, v in enumerate(work) if v == 0]
    found = 0

    def search(k: int) -> bool:  # blanks[:k] are filled; True = stop (limit reached)
        nonlocal found
        if k == len(blanks):
            found += 1
            if out is not None and found == 1:
                out[:] = work
            return found >= limit
        best_j, best_mask, best_count = k, 0, size + 1
        for j in range(k, len(blanks)):
            r, c, b = units[blanks[j]]
            mask = full & ~(rows[r] | cols[c] | boxes[b])
            count = bin(mask).count("1")
            if count < best_count:
                best_j, best_mask, best_count = j, mask, count
                if count <= 1:
                    break
        if best_count == 0:
            return False
        blanks[k], blanks[best_j] = blanks[best_j], blanks[k]
        cell = blanks[k]
        r, c, b = units[cell]
        digits = [d for d in range(size) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        stop = False
        for d in digits:
            bit = 1 << d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            work[cell] = d + 1
            stop = search(k + 1)
            rows[r] &= ~bit
            cols[c] &= ~bit
            boxes[b] &= ~bit
            work[cell] = 0
            if stop:
                break
        blanks[k], blanks[best_j] = blanks[best_j], blanks[k]
        return stop

    search(0)
    return found


def random_solution(size: int, rng: random.Random) -> list[int]:
    """A random solved grid: the boxes on the diagonal share no unit, so they are filled with
    independent random permutations first; a randomised search completes the rest (a 4x4 start
    can have no completion: then it is drawn again)."""
    g = Grid.of(size)
    while True:
        cells = [0] * (size * size)
        for k in range(g.box):
            digits = rng.sample(range(1, size + 1), size)
            for i in range(g.box):
                for j in range(g.box):
                    cells[(k * g.box + i) * size + k * g.box + j] = digits[i * g.box + j]
        out: list[int] = []
        if count_solutions(cells, size, limit=1, rng=rng, out=out):
            return out


def relabel(cells, permutation: list[int]) -> tuple[int, ...]:
    """The grid with digit d replaced by permutation[d - 1] (blanks stay 0): still a sudoku."""
    return tuple(permutation[v - 1] if v else 0 for v in cells)


def keeps_unique(puzzle: list[int], size: int, cell: int, value: int) -> bool:
    """Whether blanking ``cell`` (whose solution digit is ``value``) of a uniquely solvable puzzle
    keeps the solution unique: no completion may put another digit there."""
    g = Grid.of(size)
    puzzle[cell] = 0
    others = g.candidates(puzzle, cell) & ~(1 << (value - 1))
    unique = True
    for d in range(size):
        if others >> d & 1:
            puzzle[cell] = d + 1
            if count_solutions(puzzle, size, limit=1):
                unique = False
                break
    puzzle[cell] = 0
    return unique


@lru_cache(maxsize=8)
def count_4x4_puzzles(region: tuple[int, ...], blanks: int) -> dict[str, int]:
    """Uniquely solvable 4x4 puzzles with ``blanks`` blanks inside ``region``, per split (a puzzle
    is in the split of its solution grid)."""
    grids: set[tuple[int, ...]] = set()
    rng = random.Random(0)
    while len(grids) < 288:  # every solved 4x4 grid, drawn until all 288 have shown up
        grids.add(tuple(random_solution(4, rng)))
    counts = {"train": 0, "val": 0}
    for grid in grids:
        for pattern in itertools.combinations(region, blanks):
            puzzle = list(grid)
            for cell in pattern:
                puzzle[cell] = 0
            if count_solutions(puzzle, 4) == 1:
                counts[split_of(repr(grid))] += 1
    return counts


def dig(solution: list[int], size: int, region: list[int], blanks: int,
        rng: random.Random) -> list[int] | None:
    """Blank ``blanks`` cells of ``region`` (visited in random order) keeping one solution."""
    puzzle = list(solution)
    order = list(region)
    rng.shuffle(order)
    removed = 0
    for cell in order:
        if removed == blanks:
            break
        value = puzzle[cell]
        if keeps_unique(puzzle, size, cell, value):
            removed += 1
        else:
            puzzle[cell] = value
    return puzzle if removed == blanks else None


class SudokuOptions(TaskOptions):
    size: Literal[4, 9] = 4
    order: Literal["givens_suffix", "givens_prefix"] = "givens_suffix"
    blanks: int | None = None  # default: 6 for 4x4, 30 for 9x9
    max_prompt_len: int = 128

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v

    @model_validator(mode="after")
    def _blanks(self) -> "SudokuOptions":
        half = self.size * self.size // 2
        blanks = self.blanks if self.blanks is not None else DEFAULT_BLANKS[self.size]
        if not 1 <= blanks <= half:
            raise ValueError(f"blanks must lie in 1-{half} (half of a {self.size}x{self.size} grid), got {blanks}")
        object.__setattr__(self, "blanks", blanks)
        return self


class Sudoku(GeneratedTask):
    name = "sudoku"
    ORDERS = ("givens_suffix", "givens_prefix")
    Options = SudokuOptions
    MAX_REDRAWS = 200

    @staticmethod
    def grid_text(cells, size: int) -> str:
        chars = ["." if v == 0 else str(v) for v in cells]
        return "/".join("".join(chars[r * size:(r + 1) * size]) for r in range(size))

    def region(self) -> list[int]:
        n = self.settings.size ** 2
        half = n // 2
        return list(range(n - half, n)) if self.settings.order == "givens_prefix" else list(range(half))

    def render(self, content: tuple) -> tuple[str, str]:
        puzzle, solution = content
        size = self.settings.size
        prompt = f"Sudoku {size}x{size}\n{self.grid_text(puzzle, size)}\nSolution:"
        return prompt, self.grid_text(solution, size) + "\n"

    def split_key(self, content: tuple) -> str:
        # split by the solution grid: no val puzzle shares its solution with a train puzzle
        return repr(content[1])

    def draw(self, rng: random.Random) -> tuple:
        return self.draw_for(rng, None)

    def draw_for(self, rng: random.Random, split: str | None) -> tuple:
        s = self.settings
        for _ in range(self.MAX_REDRAWS):
            solution = tuple(random_solution(s.size, rng))
            while split is not None and split_of(repr(solution)) != split:
                # relabelling the digits gives another grid at no search cost; dig only for
                # grids of our split
                solution = relabel(solution, rng.sample(range(1, s.size + 1), s.size))
            puzzle = dig(list(solution), s.size, self.region(), s.blanks, rng)
            if puzzle is not None:
                return tuple(puzzle), solution
        raise self.fail(
            f"could not blank {s.blanks} cells of one half of a {s.size}x{s.size} grid with a unique "
            f"solution in {self.MAX_REDRAWS} grids: lower blanks"
        )

    def _build(self, tokenizer: Tokenizer, split: str, n: int, seed: int):
        # 9x9 digging costs ~10 ms a puzzle: keep the texts of a build for repeated calls
        # (both modes of a paired run, several seeds on one worker).
        texts = _cached_texts(type(self), self.settings, split, n, seed)
        return [Example(list(tokenizer.encode(p)), list(tokenizer.encode(a))) for p, a in texts]

    def space_size(self, split: str, n: int) -> int | None:
        # 9x9 grids are vast. 4x4: 288 grids times C(8, blanks) blank patterns bound it; past a
        # third of that, count the puzzles of the split exactly (~0.5 s once).
        s = self.settings
        if s.size != 4 or n * 3 < 288 * math.comb(8, s.blanks) * VAL_SHARE:
            return None
        return count_4x4_puzzles(tuple(self.region()), s.blanks)[split]

    def check(self, tokenizer: Tokenizer) -> None:
        size = self.settings.size
        prompt, _ = self.render(([0] * size * size, [1] * size * size))
        length = len(tokenizer.encode(prompt))
        if length > self.settings.max_prompt_len:
            raise self.fail(
                f"a {size}x{size} prompt takes {length} tokens: raise max_prompt_len="
                f"{self.settings.max_prompt_len}"
            )

    def chance(self, tokenizer: Tokenizer) -> dict:
        s = self.settings
        seq = float(s.size) ** -s.blanks
        rng = random.Random(f"{self.name}|chance")
        prompt, answer = self.render(self.draw(rng))
        ids = tokenizer.encode(answer)
        if len(ids) == len(answer) and all(len(tokenizer.encode(ch)) == 1 for ch in set(answer)):
            return {"token_acc": 1 - s.blanks * (1 - 1 / s.size) / len(ids), "seq_acc": seq}
        return {"token_acc": self._estimate_token_chance(tokenizer, rng), "seq_acc": seq}

    def _estimate_token_chance(self, tokenizer: Tokenizer, rng: random.Random, n: int = 200) -> float:
        matched = total = 0
        for _ in range(n):
            prompt, answer = self.render(self.draw(rng))
            puzzle_rows = prompt.split("\n")[1]
            guess = "".join(str(rng.randint(1, self.settings.size)) if ch == "." else ch
                            for ch in puzzle_rows) + "\n"
            truth, g = tokenizer.encode(answer), tokenizer.encode(guess)
            matched += sum(a == b for a, b in zip(g, truth))
            total += len(truth)
        return matched / total


class _TextTokenizer:
    """Identity "tokenizer" used to cache texts: one id per example string."""

    vocab_size = 0

    def encode(self, text: str) -> list[str]:
        return [text]


@lru_cache(maxsize=32)
def _cached_texts(cls: type, settings: SudokuOptions, split: str, n: int, seed: int):
    """The (prompt, answer) texts of a build, kept in memory and, for 9x9, on disk: digging 9x9
    puzzles costs ~10 ms each, and every Ray worker or tuning trial would redo it."""
    path = _disk_path(settings, split, n, seed) if settings.size == 9 else None
    if path is not None and path.is_file():
        try:
            return tuple(tuple(pair) for pair in json.loads(path.read_text()))
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    task = cls(**settings.model_dump())
    # max_prompt_len is checked on real tokens by check(); texts count as one "token" here
    examples = sample_distinct(task, _TextTokenizer(), split, n, task.rng(split, seed))
    texts = tuple((e.prompt[0], e.answer[0]) for e in examples)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(texts))
            tmp.replace(path)  # atomic: concurrent workers never read a half-written file
        except OSError:
            pass  # a read-only home only costs the rebuild next time
    return texts


def _disk_path(settings: SudokuOptions, split: str, n: int, seed: int) -> Path:
    root = Path(os.environ.get("FSRAY_CACHE_DIR") or Path.home() / ".cache" / "fsray") / "tasks"
    what = json.dumps([settings.model_dump(mode="json"), split, n, seed], sort_keys=True)
    # the module's own source is part of the key: a change of the generator invalidates the files
    key = hashlib.sha256(what.encode() + Path(__file__).read_bytes()).hexdigest()[:20]
    return root / f"sudoku-{key}.json"
