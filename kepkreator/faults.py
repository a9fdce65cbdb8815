"""Named points where the crash tests kill a run with SIGKILL, as a power cut or the OOM killer
would: ``KEPKREATOR_KILL_AT=shard`` kills the process that reaches ``kill_point("shard")``.
Unset (always, outside tests), each point costs one environment lookup."""
from __future__ import annotations

import os
import signal

KILL_AT = "KEPKREATOR_KILL_AT"
POINTS = ("round", "shard", "publish", "manifest")


def kill_point(name: str) -> None:
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
