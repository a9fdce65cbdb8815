import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def ctrl_c_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that is sent a Ctrl-C: a suite started in the background by a
    shell (``pytest … &``) ignores SIGINT, and its children would inherit that."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(*args):
    """``kepkreator serve ARGS`` on a free port, as a real process; yields its URL once /health
    answers, and stops it after."""
    import time

    import httpx
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "serve", "--port", str(port),
                             *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("server did not start: " + (proc.stdout.read() or ""))
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Untrained tiny digits bundles (generator, validator); tests that change one copy it."""
    from tests.pipeline_fixtures import make_tiny_bundles
    return make_tiny_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def tiny_dataset(tiny, tmp_path_factory):
    """(folder, result) of one small pipeline run of the tiny bundles, filter off: read only."""
    from pipeline.run import run
    from tests.pipeline_fixtures import tiny_spec
    root = tmp_path_factory.mktemp("job")
    spec = tiny_spec(root / "spec.yaml", tiny, counts={"0": 9, "3": 21, "9": 5})
    result = run(["--spec", str(spec), "--out", str(root / "out")])
    assert not result.failed
    return root / "out", result
