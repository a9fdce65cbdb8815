"""Interrupts that end a command cleanly.

SIGTERM (``kill``, a scheduler, a container stop) ends a command the way Ctrl-C does: the
same clean-up runs (a generate run's staging folder and marker go), where Python's default for
SIGTERM is to die on the spot and leave them.

A Ctrl-C that Python delivers while the main thread runs a finalizer (``__del__``, a weakref
callback) is printed as "Exception ignored" and lost, and the run would go on as if nothing had
been pressed; ``delivered_until_left`` repeats it until the interrupted block has been left.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

REPEAT_SECONDS = 1.0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def terminate_like_ctrl_c() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def delivered_until_left():
    """Inside the block, a Ctrl-C (or a SIGTERM turned into one) is sent again every
    ``REPEAT_SECONDS`` until the block is left, so one that a finalizer swallowed still stops
    it; nothing is repeated after, so the clean-up that follows runs undisturbed. Outside the
    main thread (where Python delivers no signals) a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed, left, received = threading.Event(), threading.Event(), []
    ours = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _interrupt}
    # only where the handler raises KeyboardInterrupt: an ignored Ctrl-C (a background job's)
    # stays ignored
    previous = {sig: signal.getsignal(sig) for sig, handler in ours.items()
                if signal.getsignal(sig) is handler}

    def on_signal(signum, frame):
        received.append(signum)
        pressed.set()
        if not left.is_set():
            raise KeyboardInterrupt

    def repeat():
        pressed.wait()
        while not left.wait(REPEAT_SECONDS):
            os.kill(os.getpid(), received[0])

    for sig in previous:
        signal.signal(sig, on_signal)
    watcher = threading.Thread(target=repeat, name="repeat-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        left.set()
        pressed.set()  # lets the watcher end
        watcher.join()  # a signal it sent meets on_signal, which no longer raises
        for sig, handler in previous.items():
            signal.signal(sig, handler)
