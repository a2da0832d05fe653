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


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM raise ``Interrupted`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum, frame):
        if fired:   # a second signal while the first one is being handled: stop now
            sys.stderr.write(f"fsray: {signal.Signals(signum).name} again: exiting now\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        fired.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
