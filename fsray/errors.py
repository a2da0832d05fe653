"""Errors with a meaning for the CLI: bad input exits 2 with one line, a failed run exits 1."""


class UsageError(ValueError):
    """Bad input (a malformed file, an impossible setting): one line naming the problem, exit 2."""


class RunFailed(RuntimeError):
    """A run that was set up correctly but failed (diverged, crashed): exit 1."""


class CapacityLost(RunFailed):
    """Seed runs were lost with the cluster's capacity (nodes gone, no worker group for too long,
    retries spent): not the configuration's fault, so nothing is recorded as failed and ``--resume``
    runs them again."""


class Interrupted(BaseException):
    """A search stopped by SIGINT or SIGTERM (fsray.search.signals). A ``BaseException``, so that no
    ``except Exception`` on the way takes it for a failed run; the CLI exits 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.code = 128 + signum
        super().__init__(signal.Signals(signum).name)


def first_line(exc: BaseException, with_type: bool = True) -> str:
    """One line for an exception: ``Type: first line of its message`` (the type alone if it has none).
    Out-of-memory errors of any kind start with "out of memory", so a record says what happened."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in line.lower():
        return f"out of memory: {line or name}"
    if not with_type:
        return line or name
    return f"{name}: {line}" if line else name
