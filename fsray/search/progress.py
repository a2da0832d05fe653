"""What the terminal shows during a search: a live progress line, and one line per event that matters.

On a terminal a tqdm bar (runs done / planned, trials running, elapsed, ETA) stays at the bottom and
every other line is written above it; elsewhere (a log, CI) each finished run is one plain line. Ray's
own output goes to ``<run>/ray.log`` (``quiet_output``), not here, unless ``--debug``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, say: Callable[[str], None] | None = None, planned: int = 0,
                 stream: TextIO | None = None):
        """``say``: where lines go; by default ``stream`` (stdout), with a live bar when that is a
        terminal."""
        stream = stream or sys.stdout
        tty = say is None and stream.isatty()
        self._say = say or (lambda line: print(line, file=stream, flush=True))
        self.planned, self.done = planned, 0
        self.t0 = time.monotonic()
        self.t_work: float | None = None
        self.lock = threading.Lock()
        self.bar = None
        if tty:
            from tqdm import tqdm

            self.bar = tqdm(total=planned or None, file=stream, dynamic_ncols=True, leave=False,
                            bar_format="[tune] {n_fmt}/{total_fmt} runs |{bar}| {postfix} "
                                       "[{elapsed}<{remaining}]")

    def say(self, line: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(line)
            else:
                self._say(line)

    def plan(self, more: int) -> None:
        """``more`` runs were added to (or, negative, removed from) what the search will train."""
        with self.lock:
            self.planned = max(self.done, self.planned + more)
            if self.bar is not None:
                self.bar.total = self.planned
                self.bar.refresh()

    def trials(self, running: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"trials running {running}")

    def eta(self) -> str:
        """Remaining runs at the pace since work began (the first run's start, so Ray's and the
        worker groups' start-up does not count as run time)."""
        if not self.done or self.planned <= self.done or self.t_work is None:
            return "?"
        per_run = max(time.monotonic() - self.t_work, 1e-9) / self.done
        return _clock(per_run * (self.planned - self.done))

    def on_event(self, event: dict) -> None:
        if event.get("kind") != "done":
            self.say(f"[tune] {event['line']}")
            return
        with self.lock:
            if self.t_work is None:
                self.t_work = time.monotonic() - float(event.get("seconds") or 0.0)
            self.done += 1
            if self.done > self.planned:
                self.planned = self.done
            if self.bar is not None:
                self.bar.total = self.planned
                self.bar.update(1)
                return
        what = event.get("tag") or event.get("mode") or "run"
        status = "" if event.get("status") == "ok" else f" ({event.get('status')})"
        secs = event.get("seconds")
        took = f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
        self._say(f"[tune] run {self.done}/{self.planned} done: seed {event.get('seed')} {what}"
                  f"{status}{took} | elapsed {_clock(time.monotonic() - self.t0)}, ETA {self.eta()}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def quiet_output(log_path: Path, enabled: bool = True) -> Iterator[TextIO]:
    """Send this process's stdout and stderr file descriptors (Ray's C++ and Python logs, the
    raylet's warnings it prints to stdout, Python warnings) to ``log_path`` for the duration, and
    yield a stream on the real terminal for fsray's own lines."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        terminal.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        terminal.close()
