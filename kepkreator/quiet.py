"""Silence the two absl lines TensorFlow prints before absl is initialised, for entry points.

Entry points (the CLI, ``python -m pipeline.run``, the Dataflow job) install this before anything
imports TensorFlow; a library import never does, since it captures the process's stderr.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

# TensorFlow's C++ libraries log "oneDNN custom operations are on" through absl before absl is
# initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence it (abseil-cpp#1957): two pairs of lines
# ahead of every command's output, and ahead of what should be a one-line error.
_ABSL_PREINIT_NOISE = ("WARNING: All log messages before absl::InitializeLog() is called",
                       "oneDNN custom operations are on")


@contextlib.contextmanager
def stderr_without(noise: tuple[str, ...]):
    """Capture file descriptor 2 (C++ writes bypass sys.stderr) and replay every line but the
    noise, so a real warning or an import error still reaches the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().splitlines(keepends=True)
                    if not any(text.encode() in line for text in noise)]
            if kept:
                os.write(2, b"".join(kept))


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` under ``stderr_without``; commands import it lazily,
    so ``--help`` stays instant. A ``find_spec`` that only asks whether TensorFlow is installed
    (kepkreator.backend) leaves the finder in place for the import itself."""

    def __init__(self):
        self._looking = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow" or self._looking:
            return None
        self._looking = True  # the lookup below comes back through sys.meta_path
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._looking = False
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_quietly(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                with stderr_without(_ABSL_PREINIT_NOISE):
                    exec_module(module)
            spec.loader.exec_module = exec_quietly
        return spec


def quiet_tensorflow_import() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())
