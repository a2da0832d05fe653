"""Where fsray writes: the one place that resolves and guards output paths.

A run directory (``fsray tune``) is fsray's own or new, and holds one search at a time:

* ``resolve_run_dir``: ``--out``, else ``<results_dir>/<name>`` (the name must stay inside
  results_dir); never a file, never the search file itself.
* ``check_run_dir``: an existing directory that holds files but no fsray run is someone else's and is
  refused (fsray would write ``summary.json``, ``report.html``, ... over files of the same name).
* ``RunLock``: an exclusive ``flock`` on ``<run>/.fsray.lock`` held by the search's process for its
  whole life; a second search on the same directory is refused in one line. The kernel drops the
  lock when its holder dies, SIGKILL included, so a killed search never leaves it stuck.
* ``probe_writable`` / ``check_output_file``: an output that cannot be written (read-only file
  system, a name too long, a directory where a file goes, a file where a directory goes) is one
  ``UsageError`` line before any work, not an OS traceback at the end.

Every check raises ``UsageError`` (``fsray: error: ...``, exit 2).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from pathlib import Path

from fsray.errors import UsageError

LOCK = ".fsray.lock"
# What makes a directory an fsray run (fsray.search.driver writes space.json first, and takes the
# lock before that; results.jsonl is the store itself).
RUN_MARKERS = (LOCK, "space.json", "results.jsonl")
# A search's name is its run directory under results_dir and its Optuna study: one plain path
# component (no separator, no leading dot, so never `..`), short enough for any file system.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def os_reason(exc: OSError) -> str:
    """An OS error in words, without Python's ``[Errno N]``."""
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return (exc.strerror or str(exc)).lower()


def _resolved(path: Path, inputs, cannot: str, is_input: str) -> tuple[Path, bool]:
    """``path`` made absolute and whether it is a directory; refused (one line) when the file system
    cannot resolve it (``cannot (why)``) or when it is one of ``inputs`` (``is_input``)."""
    try:
        resolved = path.resolve()
        is_dir = resolved.is_dir()
    except OSError as exc:   # a name too long for the file system, a loop of links
        raise UsageError(f"{cannot} ({os_reason(exc)})") from None
    if any(Path(inp).expanduser().resolve() == resolved for inp in inputs):
        raise UsageError(is_input)
    return resolved, is_dir


def resolve_run_dir(out: str | os.PathLike | None, results_dir: str, name: str,
                    inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """The absolute run directory: ``out``, else ``<results_dir>/<name>``, refused (UsageError) when
    the name leaves results_dir, the path is a file, or it is one of ``inputs``."""
    if out is not None and str(out).strip() == "":
        raise UsageError("--out is empty: give a directory")
    if out is not None:
        where, path = "--out", Path(out).expanduser()
    else:
        root = Path(results_dir).expanduser().resolve()
        where, path = "name", root / name
        resolved = path.resolve()
        if not re.fullmatch(NAME_PATTERN, name or "") or resolved.parent != root:
            raise UsageError(f"name {name!r}: the run directory must be one folder inside results_dir "
                             f"({root}), not {resolved}")
    path, is_dir = _resolved(path, inputs, cannot=f"{where} {path}: cannot be used as a run directory",
                             is_input=f"{where} {path} is the search file itself: give a run directory")
    if path.exists() and not is_dir:
        raise UsageError(f"{where} {path} is a file, not a run directory: give a new or fsray run directory")
    return path


def is_fsray_run(path: Path) -> bool:
    return any((path / m).exists() for m in RUN_MARKERS)


def check_run_dir(path: Path) -> None:
    """An existing directory must be empty or an fsray run: fsray never writes into another's files."""
    try:
        names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    except OSError as exc:
        raise UsageError(f"run directory {path}: cannot be read ({os_reason(exc)})") from None
    if names and not is_fsray_run(path):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UsageError(f"{path} is not an fsray run directory (it holds {shown}): give a new or "
                         f"empty directory with --out")


def probe_writable(directory: Path, what: str = "output directory") -> None:
    """Create ``directory`` (and its parents) and write a file there; any OS error is one line."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fsray-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"{what} {directory}: cannot be written ({os_reason(exc)})") from None


def check_output_file(path: str | os.PathLike, what: str = "--out", inputs=()) -> Path:
    """A file fsray will write (``fsray train --out``, ``fsray report --out``): not a directory, not
    one of ``inputs``, its folder writable, and its name allowed by the file system."""
    path = Path(path).expanduser()
    if str(path).strip() in ("", "."):
        raise UsageError(f"{what} is empty: give a file")
    resolved, is_dir = _resolved(path, inputs, cannot=f"{what} {path}: cannot be written",
                                 is_input=f"{what} {path} is one of the inputs: write the output somewhere else")
    if is_dir:
        raise UsageError(f"{what} {path} is a directory: give a file name")
    probe_writable(resolved.parent, f"{what} {path}: folder")
    max_name = os.pathconf(resolved.parent, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if len(resolved.name.encode()) > max_name:
        raise UsageError(f"{what} {path}: cannot be written (file name too long)")
    return resolved


def write_atomic(path: Path, text: str, what: str = "--out") -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a crash or a
    full disk never leaves half a file, and the OS error is one line."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot be written ({os_reason(exc)})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


class RunLock:
    """One search per run directory: an exclusive, non-blocking ``flock`` on ``<run>/.fsray.lock``.

    The lock belongs to the open file, which the kernel closes when the process ends however it
    ends, so a SIGKILLed search leaves nothing stuck; the file's text (pid and host) only names the
    holder in the refusal. The descriptor is not inherited by child processes (PEP 446)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"run directory {self.path.parent}: cannot be written ({os_reason(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"{self.path.parent} is in use by another fsray search ({holder}): wait for it "
                             f"to end (or stop it), or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"fsray search, pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
