"""A lock handed out in the order it was asked for.

The renderer's model calls take turns: ``threading.Lock`` lets whichever waiter the scheduler
wakes go next, so a request that asks again and again (a long text, a large best_of) can keep
the models while a short request waits behind it. With turns in arrival order, and each
request's work cut into small model calls, a short request waits for at most one call of each
request ahead of it.
"""
from __future__ import annotations

import contextlib
import threading


class FairTurns:
    def __init__(self):
        self._changed = threading.Condition()
        self._issued = 0   # tickets handed out
        self._serving = 0  # the ticket whose turn it is

    @contextlib.contextmanager
    def turn(self):
        with self._changed:
            ticket = self._issued
            self._issued += 1
            while ticket != self._serving:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._serving += 1
                self._changed.notify_all()
