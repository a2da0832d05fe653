"""Joining Ray: a fresh local instance, or the cluster that ``RAY_ADDRESS`` names.

``start_ray()`` is what the search driver calls. Against a cluster it checks, before anything else
is done, that the address answers (a short TCP connect, not Ray's long retry loop), and it takes
care of token authentication the way Ray itself sets it up:

* Ray (2.60) turns token authentication on for a head started with ``ray start --head`` when a token
  exists in ``~/.ray/auth_token`` on that machine (``ray.init()`` of a local instance writes one), and
  a joining node or driver must then run with ``RAY_AUTH_MODE=token`` and the same token
  (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``). A driver given an explicit
  address never turns it on by itself; here, when ``RAY_AUTH_MODE`` is unset and a token is present,
  it is turned on (a cluster without authentication ignores the token).
* A cluster that rejects us: one line saying what to set (no token here / a token that is not the
  cluster's), as a :class:`UsageError` (exit 2).

Ray's own connection messages (its C++ retry lines, the token notice) go to ``ray_connect.log`` in
``log_dir`` when one is given (the run directory), never to the terminal, unless ``debug``.
"""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

from fsray.errors import UsageError

CONNECT_TIMEOUT_S = 5.0
AUTH_MARKERS = ("InvalidAuthToken", "Unauthenticated", "authentication token", "AuthenticationError")


def cluster_address() -> str | None:
    """The cluster named by ``RAY_ADDRESS`` (None: start a local instance of our own)."""
    address = (os.environ.get("RAY_ADDRESS") or "").strip()
    return None if address in ("", "local") else address


def token_source() -> str | None:
    """Where this process would take a Ray auth token from (None: nowhere)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        return str(Path(path).expanduser())
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return str(default)
    return None


def _enable_token_auth() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # make this process's cached Ray config see it (what Ray does itself)
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth as ray_enable,
        )

        ray_enable()
    except Exception:  # noqa: BLE001 - older/newer Ray: the environment variable is what counts
        pass


def probe_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One line (``UsageError``) unless something accepts a TCP connection at ``address``."""
    if address.startswith(("http://", "https://")):
        raise UsageError(f"RAY_ADDRESS={address} is a dashboard (job submission) address; fsray needs "
                         f"the cluster's GCS address (HEAD_IP:6379), or 'auto' on a cluster node")
    if address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"RAY_ADDRESS={address!r} is not HOST:PORT (the head's GCS address, e.g. "
                         f"10.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        why = (f"no answer within {timeout_s:.0f}s" if isinstance(exc, TimeoutError | socket.timeout)
               else (exc.strerror or str(exc)).lower())
        raise UsageError(f"no Ray cluster answers at RAY_ADDRESS={address} ({why}): start the head "
                         f"(ray start --head) or fix RAY_ADDRESS") from None


@contextmanager
def _stderr_to(path: Path | None, debug: bool):
    """Send fd 2 (Ray's C++ lines land there) to ``path`` while connecting; yields the file."""
    if debug:
        yield None
        return
    if path is None:
        f = tempfile.TemporaryFile(mode="w+b")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")
    saved = os.dup(2)
    try:
        os.dup2(f.fileno(), 2)
        yield f
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        f.flush()
        f.seek(0)
        f.captured = f.read().decode(errors="replace")  # type: ignore[attr-defined]
        f.close()


def _init(address: str | None, log: Path | None, debug: bool, **kwargs) -> str | None:
    """ray.init; returns None on success, else the text of the failure (exception + Ray's lines)."""
    import ray

    with _stderr_to(log, debug) as f:
        try:
            ray.init(address=address or "local", **kwargs)
            err = None
        except Exception as exc:  # noqa: BLE001 - classified by the caller
            err = f"{exc}\n{exc.__cause__ or ''}\n{type(exc).__name__}"
    if err is None:
        return None
    return err + "\n" + (getattr(f, "captured", "") if f is not None else "")


def start_ray(log_dir: str | Path | None = None, debug: bool = False, **init_kwargs) -> bool:
    """Start or join Ray (``RAY_ADDRESS``); True when this call initialised it (shut it down after).

    Raises ``UsageError`` (one line) for a cluster address that does not answer, a cluster that
    needs a token this machine lacks, or a token the cluster rejects."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                  configure_logging=True)
    kwargs.update(init_kwargs)
    address = cluster_address()
    log = Path(log_dir) / "ray_connect.log" if log_dir is not None else None
    if address is None:
        ray.init(address="local", **kwargs)
        return True
    kwargs.pop("include_dashboard", None)  # only for a new instance
    probe_address(address)
    mode = (os.environ.get("RAY_AUTH_MODE") or "").lower()
    source = token_source()
    if not mode and source is not None:
        _enable_token_auth()
    err = _init(address, log, debug, **kwargs)
    if err is None:
        return True
    auth = any(m in err for m in AUTH_MARKERS)
    if not auth:
        first = err.strip().splitlines()[0] if err.strip() else "connection failed"
        raise UsageError(f"cannot join the Ray cluster at {address}: {first}")
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" and source is not None:
        _enable_token_auth()  # RAY_AUTH_MODE was set to something else: try the token once
        if _init(address, log, debug, **kwargs) is None:
            return True
    if source is None:
        raise UsageError(f"the Ray cluster at {address} requires token authentication and this machine "
                         f"has no token: copy the head node's ~/.ray/auth_token to ~/.ray/auth_token "
                         f"here (or set RAY_AUTH_TOKEN)")
    raise UsageError(f"the Ray cluster at {address} rejected the auth token from {source}: use the "
                     f"head node's token (its ~/.ray/auth_token, or RAY_AUTH_TOKEN)")

