"""Ctrl-C and SIGTERM stop a search at once; nothing is confirmed or summarised as if it had finished.

Ray Tune catches SIGINT itself and ends ``Tuner.fit()`` "gracefully", returning as if the search were
done, and a settling round waits in its thread pool for every seed run in flight. Both would take a
stop for an end. During a search (``stop_on_signals``) SIGINT and SIGTERM instead raise
``Interrupted`` in the main thread (Tune's own handler is turned off with
``TUNE_DISABLE_SIGINT_HANDLER``): it is a ``BaseException``, so no ``except Exception`` on the way
(a trial failure handler, Tune's loop) takes it for a failed run, and the driver's ``finally``
blocks close the worker groups, the store actor and Ray. The CLI prints one line and exits
128 + the signal's number (130 for SIGINT, 143 for SIGTERM). Every record already written stays;
``--resume`` runs what is missing (``fsray.search.resume``). A second signal while stopping ends the
process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from fsray.errors import Interrupted

os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_fired: list[int] = []   # the signal that stopped the search in this process (the first)


def stopped() -> int | None:
    """The signal that stopped the running search, if one did."""
    return _fired[0] if _fired else None


def check() -> None:
    """Raise ``Interrupted`` if a stop signal arrived: the driver calls it between the steps of a
    search, so that a stop that some library took for an error (the handler's exception raised
    inside a C extension comes out as a ``SystemError``), or swallowed, still ends the search."""
    if _fired:
        raise Interrupted(_fired[0])


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM raise ``Interrupted`` (main thread only; elsewhere a no-op).
    Whatever leaves the block after a stop signal leaves as ``Interrupted``, as does a normal exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _fired.clear()

    def handler(signum, frame):
        if _fired:   # a second signal while the first one is being handled: stop now
            sys.stderr.write(f"fsray: {signal.Signals(signum).name} again: exiting now\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        _fired.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
        check()
    except Interrupted:
        _no_ray_restart()
        raise
    except BaseException:
        if _fired:   # the stop, dressed up by whatever it went through
            _no_ray_restart()
            raise Interrupted(_fired[0]) from None
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _fired.clear()


def _no_ray_restart() -> None:
    """After a stop, threads still finishing a seed run (a settling round's) find Ray shut down;
    Ray's auto-init would then start a fresh local instance from them, and the process would wait
    on it instead of exiting. Turn auto-init off: their calls fail at once and the threads end."""
    hook = sys.modules.get("ray._private.auto_init_hook")
    if hook is not None:
        hook.enable_auto_connect = False
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
