"""SIGTERM (``kill``, a scheduler, a container stop) ends a command the way Ctrl-C does: the
same clean-up runs (a generate run's staging folder and marker go), where Python's default for
SIGTERM is to die on the spot and leave them."""
from __future__ import annotations

import signal
import threading


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def terminate_like_ctrl_c() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
