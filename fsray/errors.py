"""Errors with a meaning for the CLI: bad input exits 2 with one line, a failed run exits 1."""


class UsageError(ValueError):
    """Bad input (a malformed file, an impossible setting): one line naming the problem, exit 2."""


class RunFailed(RuntimeError):
    """A run that was set up correctly but failed (diverged, crashed): exit 1."""
