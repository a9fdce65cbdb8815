"""The output folder as a user's disk: --overwrite deletes only what this tool wrote, one run at a
time, and a run killed at any point leaves nothing that reads as a dataset. Real processes,
real signals, real files."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kepkreator.data.generated import verify_folder
from kepkreator.errors import KepKreatorError
from pipeline.output import LOCK, STAGING_PREFIX
from pipeline.run import run
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.pipeline_fixtures import tiny_spec


def spec(path, tiny, **fields):
    return tiny_spec(path, tiny, **{"counts": {"per_class": 6}, "seed": 1, "shards": 2,
                                    **fields})


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """A clean run of the crash tests' spec: what a recovered run must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    result = run(["--spec", str(spec(root / "s.yaml", tiny)), "--out", str(root / "out")])
    return shard_hashes(root / "out"), result


def shard_hashes(out):
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return [(f["path"], f["sha256"]) for s in manifest["shards"] for f in s["files"].values()]


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def popen_generate(spec_path, out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "generate", "--spec",
                             spec_path, "--out", out, *extra], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# -- 1. ownership: --overwrite removes what this tool wrote, and nothing else -----------------

def _user_project(folder):
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "important.txt").write_text("precious")
    (folder / "README.md").write_text("# thesis")


@pytest.mark.parametrize("make, named", [
    (_user_project, "README.md, data/important.txt"),
    (lambda f: (f.mkdir(), (f / "mydata.tfrecord-backup-2023").write_text("mine")),
     "mydata.tfrecord-backup-2023"),
    (lambda f: (f.mkdir(), (f / "manifest.json").write_text('{"name": "my web app"}')),
     "manifest.json"),
    (lambda f: (f.mkdir(), (f / "empty-folder").mkdir()), "empty-folder/"),
])
def test_overwrite_refuses_a_folder_of_user_files_and_deletes_nothing(tiny, tmp_path, make,
                                                                      named):
    out = tmp_path / "proj"
    make(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_cli("generate", "--spec", spec(tmp_path / "s.yaml", tiny), "--out", out,
                     "--overwrite")
    assert_one_line_error(result, f"--overwrite refused: {out} holds files this tool did not "
                                  f"write: {named}; nothing was deleted")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not (out / LOCK).exists()


def test_overwrite_never_follows_a_symbolic_link(tiny, tmp_path):
    """data/ a link to the user's folder: README.md was deleted first, then a bare 'Cannot
    call rmtree on a symbolic link'."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    out = tmp_path / "out"
    assert run(["--spec", str(spec(tmp_path / "s.yaml", tiny)), "--out", str(out)]).manifest
    readme = (out / "README.md").read_text()
    for shard in (out / "data").iterdir():
        shard.unlink()
    (out / "data").rmdir()
    (out / "data").symlink_to(mine)
    result = run_cli("generate", "--spec", tmp_path / "s.yaml", "--out", out, "--overwrite")
    assert_one_line_error(result, "data (a symbolic link)", "nothing was deleted")
    assert (mine / "thesis.tex").read_text() == "precious"
    assert (out / "README.md").read_text() == readme


def test_overwrite_replaces_exactly_the_files_a_manifest_lists(tiny, tmp_path, reference):
    out = tmp_path / "out"
    first = run(["--spec", str(spec(tmp_path / "a.yaml", tiny, seed=2, shards=3)),
                 "--out", str(out)])
    assert first.manifest and len(list((out / "data").iterdir())) == 3
    (out / "data" / "notes.txt").write_text("mine")  # a user file among the shards
    result = run_cli("generate", "--spec", spec(tmp_path / "b.yaml", tiny), "--out", out,
                     "--overwrite")
    assert_one_line_error(result, "holds files this tool did not write: data/notes.txt")
    assert verify_folder(out)[1] == ["unlisted file data/notes.txt"]
    (out / "data" / "notes.txt").unlink()
    # Another spec, fewer shards: every file of the first run goes, the second's come.
    again = run(["--spec", str(tmp_path / "b.yaml"), "--out", str(out), "--overwrite"])
    assert shard_hashes(out) == reference[0]
    assert verify_folder(out)[1] == [] and again.manifest["seed"] == 1
    assert tree(out) == tree(Path(reference[1].out))  # no leftovers of the 3-shard run
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]


# -- 2. one run per folder --------------------------------------------------------------------

def test_a_second_run_is_refused_while_the_first_holds_the_folder(tiny, tmp_path):
    """Run B (--overwrite) started beside run A used to delete A's work in progress, and A's
    'complete' manifest then described 7,000 of B's 10,000 images."""
    out = tmp_path / "out"
    a_spec = spec(tmp_path / "a.yaml", tiny, counts={"per_class": 6000}, unit_size=128)
    a = popen_generate(a_spec, out)
    for line in a.stderr:  # the first progress line: A is generating
        if line.startswith("accepted"):
            break
    b_spec = spec(tmp_path / "b.yaml", tiny, seed=2)
    for extra in ([], ["--overwrite"]):  # in this process: quick, while A still runs
        with pytest.raises(KepKreatorError) as refused:
            run(["--spec", str(b_spec), "--out", str(out), *extra])
        assert str(refused.value).startswith(
            f"{out} is in use by another run (pid {a.pid} on {socket.gethostname()}, started ")
    assert a.poll() is None, "A ended before B tried: make A longer"
    _, err = a.communicate(timeout=600)
    assert a.returncode == 0, err
    manifest, problems = verify_folder(out)
    assert problems == [] and manifest["seed"] == 1 and manifest["records"] == 60000
    assert not (out / LOCK).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_sigterm_cleans_up_like_ctrl_c(tiny, tmp_path):
    out = tmp_path / "out"
    job = popen_generate(spec(tmp_path / "s.yaml", tiny, counts={"per_class": 200_000},
                              unit_size=256), out)
    for line in job.stderr:
        if line.startswith("accepted"):
            break
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 130, err
    assert err.strip().splitlines()[-1] == "kepkreator: aborted" and "Traceback" not in err
    assert list(out.iterdir()) == []


# -- kill -9 anywhere: nothing that reads as a dataset; --overwrite recovers byte for byte ---

@pytest.mark.parametrize("point", ["round", "shard", "publish", "manifest"])
def test_a_run_killed_at_any_point_is_recovered_by_overwrite(tiny, tmp_path, reference, point):
    out = tmp_path / "out"
    spec_path = spec(tmp_path / "s.yaml", tiny)
    job = popen_generate(spec_path, out, env={"KEPKREATOR_KILL_AT": point})
    _, err = job.communicate(timeout=300)
    assert job.returncode == -signal.SIGKILL, err
    left = tree(out)
    assert LOCK in left and any(p.startswith(STAGING_PREFIX) for p in left)
    assert "manifest.json" not in left
    if point in ("round", "shard", "publish"):  # nothing under a final name yet
        assert [p for p in left if not p.startswith((LOCK, STAGING_PREFIX))] == []
    else:  # shards and metadata published, the manifest not
        assert "data/train-00000-of-00002.parquet" in left
    assert_one_line_error(run_cli("inspect", out), "no manifest.json: not a complete",
                          "a run is writing it, or was stopped")
    assert_one_line_error(run_cli("generate", "--spec", spec_path, "--out", out),
                          "holds the files of an interrupted or failed run (use --overwrite)")
    again = run_cli("generate", "--spec", spec_path, "--out", out, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert f"note: taking over {out} from an interrupted run (pid {job.pid} on " in again.stderr
    assert shard_hashes(out) == reference[0]
    assert verify_folder(out)[1] == []
    assert tree(out) == tree(Path(reference[1].out))


def test_a_short_run_leaves_its_metrics_and_no_dataset(tiny, tmp_path):
    """Shards of a run that fell short were left under their final names, where pandas and
    Hugging Face read them as data."""
    out = tmp_path / "out"
    result = run(["--spec", str(spec(tmp_path / "s.yaml", tiny, min_confidence=0.9999,
                                     max_rounds=1, max_oversample=1)), "--out", str(out)])
    assert result.failed.startswith("shortfall above tolerance")
    assert tree(out) == [LOCK, "metrics.json"]
    marker = json.loads((out / LOCK).read_text())
    assert marker["state"] == "failed" and "metrics.json" in marker["files"]
    again = run(["--spec", str(tmp_path / "s.yaml"), "--out", str(out), "--overwrite"])
    assert again.failed and tree(out) == [LOCK, "metrics.json"]
