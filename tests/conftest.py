import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data lives beside the checkout)")
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _need(SHARED / "data" / "mnist")


@pytest.fixture(scope="session")
def emnist_dir() -> Path:
    return _need(SHARED / "data" / "emnist")


@pytest.fixture(scope="session")
def handwritten_dir() -> Path:
    return _need(SHARED / "data" / "handwritten_62")


@pytest.fixture(scope="session")
def peers_dir() -> Path:
    return _need(SHARED / "peers")


CXX_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d)",
                          re.MULTILINE)


def run_cli(*args, cwd=None, timeout=600, env=None):
    """The installed entry point, as a user runs it; returns CompletedProcess. ``env``: variables
    set on top of this process's environment."""
    return subprocess.run([sys.executable, "-m", "kepkreator.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout,
                          env={**os.environ, **env} if env else None)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("kepkreator: error:")]
    assert len(errors) == 1, result.stderr
    # No C++ library log lines (absl/glog format, e.g. TensorFlow's oneDNN notice) around it.
    assert not CXX_LOG_LINE.search(result.stderr), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
