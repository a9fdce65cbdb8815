"""Ctrl-C ends a run even when Python loses it in a finalizer; real signals, real processes."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, ctrl_c_as_at_a_terminal

# The first Ctrl-C lands while a finalizer runs: Python prints "Exception ignored" and goes on.
SCRIPT = textwrap.dedent("""
    import sys, time
    from kepkreator.interrupt import delivered_until_left
    class Finalizer:
        def __del__(self):
            print("in a finalizer", flush=True)
            time.sleep(1.5)
    try:
        with delivered_until_left():
            Finalizer()
            time.sleep(float(sys.argv[1]))
        print("not interrupted", flush=True)
    except KeyboardInterrupt:
        time.sleep(2.5)  # clean-up: no further Ctrl-C may cut it short
        print("interrupted, clean-up finished", flush=True)
""")


def _run(seconds: float, signum=signal.SIGINT, ignore_sigint=False, prelude=""):
    job = subprocess.Popen(
        [sys.executable, "-c", prelude + SCRIPT, str(seconds)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint
        else ctrl_c_as_at_a_terminal)
    assert job.stdout.readline().strip() == "in a finalizer"
    job.send_signal(signum)
    out, err = job.communicate(timeout=120)
    return job.returncode, out, err


def test_a_ctrl_c_lost_in_a_finalizer_is_repeated_until_the_block_is_left():
    returncode, out, err = _run(30)
    assert out.strip() == "interrupted, clean-up finished", (out, err)
    assert returncode == 0, err


def test_a_sigterm_turned_into_ctrl_c_is_repeated_too():
    prelude = "from kepkreator.interrupt import terminate_like_ctrl_c; terminate_like_ctrl_c()\n"
    _, out, err = _run(30, signal.SIGTERM, prelude=prelude)
    assert out.strip() == "interrupted, clean-up finished", (out, err)


def test_an_ignored_ctrl_c_stays_ignored():
    """A background job started by a shell ignores SIGINT; the block must not change that."""
    returncode, out, err = _run(3, ignore_sigint=True)
    assert out.strip() == "not interrupted", (out, err)
