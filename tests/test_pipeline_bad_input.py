"""Bad input to generate: one line naming the problem, a non-zero status, and no output."""
import time

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import make_tiny_bundles, tiny_spec

BAD = [
    ({"class_set": "klingon"}, "unknown class set 'klingon'"),
    ({"counts": {"Q": 3}}, "class 'Q' is not in class set 'digits'"),
    ({"counts": {"per_class": 0}}, "counts.per_class must be at least 1"),
    ({"counts": {"per_class": 1.5}}, "must be a whole number"),
    ({"counts": {"per_class": 10_000_001}}, "must be at most 10,000,000"),
    ({"flavour": 1}, "unknown key 'flavour' (known: class_set, counts, "),
    ({"min_confidance": 0.9}, "unknown key 'min_confidance': did you mean 'min_confidence'?"),
    ({"formats": ["csv"]}, "unknown format 'csv'"),
    ({"latent_scale": 0}, "latent_scale must be a number in (0, 10]"),
    ({"generator": "/nonexistent/bundle"}, "bundle not found: /nonexistent/bundle"),
    # relative to the spec's folder, and said so
    ({"generator": "../gen"}, "/spec-dir/../gen (resolved to /"),
    ({"counts": {"balance_to": {"labels": "missing.idx", "target": 9}}}, "balance_to labels not found"),
]


@pytest.mark.parametrize("changes, message", BAD)
def test_bad_spec_through_the_cli(tiny, tmp_path, changes, message):
    spec = tiny_spec(tmp_path / "spec-dir" / "spec.yaml", tiny, **changes)
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "out")
    assert_one_line_error(result, message)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_malformed_spec_files_and_mixed_class_sets(tiny, tmp_path):
    (tmp_path / "bad.yaml").write_text("class_set: [digits\n")
    assert_one_line_error(run_cli("generate", "--spec", tmp_path / "bad.yaml", "--out",
                                  tmp_path / "o"), "malformed YAML")
    (tmp_path / "bad.json").write_text("{nope")
    assert_one_line_error(run_cli("generate", "--spec", tmp_path / "bad.json", "--out",
                                  tmp_path / "o"), "malformed JSON")
    letters_gen, _ = make_tiny_bundles(tmp_path / "letters", "letters", 26,
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    spec = tiny_spec(tmp_path / "mixed.yaml", tiny, generator=str(letters_gen))
    assert_one_line_error(run_cli("generate", "--spec", spec, "--out", tmp_path / "o"),
                          "generator class set 'letters' differs from validator class set 'digits'")
    assert not (tmp_path / "o").exists()


def test_unreadable_balance_file_and_non_empty_output(tiny, tmp_path):
    (tmp_path / "counts.json").write_text("{broken")
    spec = tiny_spec(tmp_path / "b.yaml", tiny,
                     counts={"balance_to": {"labels": str(tmp_path / "counts.json"), "target": 5}})
    assert_one_line_error(run_cli("generate", "--spec", spec, "--out", tmp_path / "o"),
                          "unreadable")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    spec = tiny_spec(tmp_path / "ok.yaml", tiny)
    assert_one_line_error(run_cli("generate", "--spec", spec, "--out", tmp_path / "full"),
                          "is not empty (use --overwrite)")
    assert_one_line_error(run_cli("generate", "--spec", spec, "--out", tmp_path / "full",
                                  "--overwrite"), "holds files this tool did not write")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("option, message", [
    ("--direct_num_worker=2", "unknown option --direct_num_worker"),
    ("--direct_num_workers=two", "argument --direct_num_workers: invalid int value: 'two'"),
    ("--runner=Nope", "unknown --runner 'Nope'"),
    ("--runner=DataflowRunner", "DataflowRunner: Missing GCS path option: temp_location"),
    # A malformed GPU hint was refused by Dataflow only after staging; a local run ignored it.
    ("--accelerator=nvidia-l4", "argument --accelerator: 'nvidia-l4': no type:GPU"),
    ("--accelerator=type:nvidia-l4;count:0", "count '0' is not a positive whole number"),
])
def test_a_bad_pipeline_option_is_one_line_before_any_output(tiny, tmp_path, option, message):
    """Beam would print its whole usage, or raise from beam.Pipeline after --out was made."""
    spec = tiny_spec(tmp_path / "spec.yaml", tiny)
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "o", option)
    assert_one_line_error(result, message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_gs_output_without_credentials_is_one_line_at_once(tiny, tmp_path):
    """Beam would retry the credential lookup for half a minute, log its tracebacks, connect
    anonymously and fail minutes later on the network or a 401."""
    spec = tiny_spec(tmp_path / "spec.yaml", tiny)
    started = time.monotonic()
    result = run_cli("generate", "--spec", spec, "--out", "gs://kepkreator-test/out",
                     env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing-key.json")},
                     timeout=120)
    assert_one_line_error(result, "cannot write to gs://kepkreator-test/out: no Google Cloud "
                                  "credentials", "missing-key.json")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("module", ["pipeline.run", "jobs.dataflow.gpu_job"])
def test_module_entry_points_follow_the_cli_rules(tiny, tmp_path, module):
    """``python -m pipeline.run`` and the Dataflow job: one line, status 2, and no absl notice
    ahead of it (TF_CPP_MIN_LOG_LEVEL cannot silence that; here it is not even set)."""
    import os
    import subprocess
    import sys
    from tests.conftest import ROOT
    spec = tiny_spec(tmp_path / "spec.yaml", tiny)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", module, "--spec", spec, "--out",
                             tmp_path / "o", "--bogus"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=300)
    assert_one_line_error(result, "unknown option --bogus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kepkreator: error: unknown option --bogus (not a generate option and not a Beam "
        "pipeline option)"], result.stderr


@pytest.mark.parametrize("url", ["file:///tmp/kepkreator-out", "s3://bucket/out"])
def test_an_output_url_other_than_gs_is_one_line(tiny, tmp_path, url):
    """file:// was a Beam traceback, s3:// a 'Must provide one of client or options'."""
    spec = tiny_spec(tmp_path / "spec.yaml", tiny)
    result = run_cli("generate", "--spec", spec, "--out", url, cwd=tmp_path)
    assert_one_line_error(result, f"--out {url}: {url.split(':')[0]}:// is not supported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_ctrl_c_aborts_in_one_line_and_leaves_no_dataset(tiny, tmp_path):
    """Beam wraps a Ctrl-C inside a step as RuntimeError("KeyboardInterrupt [while running
    ...]") and logs the step's traceback: to a user that looked like a crash."""
    import os
    import signal
    import subprocess
    import sys
    from tests.conftest import ROOT, ctrl_c_as_at_a_terminal
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"per_class": 200_000}, unit_size=256)
    job = subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "generate", "--spec", spec,
                            "--out", tmp_path / "out"], cwd=ROOT, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"},
                           preexec_fn=ctrl_c_as_at_a_terminal,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for line in job.stderr:  # the first progress line: the pipeline is running
        if line.startswith("accepted"):
            break
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 130, err
    assert err.strip().splitlines()[-1] == "kepkreator: aborted" and "Traceback" not in err, err
    assert list((tmp_path / "out").iterdir()) == []
