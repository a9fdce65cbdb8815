"""The pipeline on Beam's DaskRunner: a local `distributed` cluster of worker processes (or an
existing one by address) writes the same bytes as the DirectRunner, and survives a worker that
is killed mid-run."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kepkreator.data.generated import verify_folder
from kepkreator.errors import KepKreatorError
from pipeline.run import run
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.pipeline_fixtures import make_tiny_bundles, tiny_spec

pytest.importorskip("distributed", reason="the dask extra is not installed (pip install .[dask])")


def shard_hashes(out):
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return [f["sha256"] for s in manifest["shards"] for f in s["files"].values()]


@pytest.fixture(scope="module")
def direct(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("direct")
    spec = tiny_spec(root / "s.yaml", tiny, counts={"per_class": 20}, judge="default",
                     split={"train": 0.8, "validation": 0.2})
    result = run(["--spec", str(spec), "--out", str(root / "out")])
    assert not result.failed
    return spec, shard_hashes(root / "out")


def test_a_local_dask_cluster_writes_the_direct_runners_bytes(direct, tmp_path):
    spec, expected = direct
    out = tmp_path / "dask"
    result = run_cli("generate", "--spec", spec, "--out", out, "--runner", "dask",
                     "--dask_workers", 2)
    assert result.returncode == 0, result.stderr
    assert shard_hashes(out) == expected
    manifest, problems = verify_folder(out)
    assert problems == [] and "--runner=dask" in manifest["beam_options"]
    # The local cluster's address is this run's alone: not recorded as if it were an option.
    assert not any(o.startswith("--address") for o in manifest["beam_options"])
    assert "distributed." not in result.stderr and "oneDNN" not in result.stderr


def test_an_existing_cluster_by_address(direct, tmp_path):
    from distributed import LocalCluster
    spec, expected = direct
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = run(["--spec", str(spec), "--out", str(tmp_path / "dask"), "--runner=dask",
                      "--dask_address", cluster.scheduler_address])
    assert not result.failed and shard_hashes(tmp_path / "dask") == expected


def test_a_cluster_of_in_process_workers_is_refused_before_the_folder_is_made(direct, tmp_path):
    """Workers inside the scheduler's process share the DaskRunner's output lists, and every
    output comes out many times: refused in one line, nothing written."""
    from distributed import LocalCluster
    spec, _ = direct
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        with pytest.raises(KepKreatorError, match="inside the scheduler's process"):
            run(["--spec", str(spec), "--out", str(tmp_path / "dask"), "--runner=dask",
                 "--dask_address", cluster.scheduler_address])
    assert not (tmp_path / "dask").exists()


def test_a_cluster_that_does_not_answer_is_one_line(direct, tmp_path):
    spec, _ = direct
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "o", "--runner", "dask",
                     "--dask_address", "tcp://127.0.0.1:9", timeout=120)
    assert_one_line_error(result, "--dask_address tcp://127.0.0.1:9: no Dask scheduler answers")
    assert not (tmp_path / "o").exists()


def test_a_bad_bundle_while_the_local_cluster_starts_is_one_line_and_no_worker_is_left(
        tiny, tmp_path):
    """The local cluster starts in the background while the bundles are checked: a bad bundle
    still ends in one line, with no folder, and the cluster's processes gone."""
    import psutil
    _, letters = make_tiny_bundles(tmp_path, "letters", 26, "abcdefghijklmnopqrstuvwxyz")
    spec = tiny_spec(tmp_path / "s.yaml", tiny, validator=str(letters))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "o", "--runner", "dask",
                     "--dask_workers", 2, timeout=120)
    assert_one_line_error(result, "letters-validator/card.json")
    assert not (tmp_path / "o").exists()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_a_killed_worker_is_replaced_and_the_bytes_are_the_same(tiny, tmp_path):
    """kill -9 of one of the two worker processes while the rounds run: Dask reschedules its
    tasks, and the dataset is the one a DirectRunner writes (a unit's samples depend on its seed
    alone, never on where or how often it ran)."""
    import psutil
    spec = tiny_spec(tmp_path / "s.yaml", tiny, counts={"per_class": 2000}, unit_size=128,
                     judge="none")
    expected = run(["--spec", str(spec), "--out", str(tmp_path / "direct")])
    assert not expected.failed
    job = subprocess.Popen([sys.executable, "-m", "kepkreator.cli", "generate", "--spec", spec,
                            "--out", tmp_path / "dask", "--runner", "dask", "--dask_workers", "2"],
                           cwd=ROOT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in job.stderr:
        if line.startswith("accepted"):
            break
    workers = [p for p in psutil.Process(job.pid).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2, workers
    workers[0].send_signal(signal.SIGKILL)
    _, err = job.communicate(timeout=600)
    assert job.returncode == 0, err
    assert shard_hashes(tmp_path / "dask") == shard_hashes(tmp_path / "direct")


def test_dask_options_are_checked_like_any_other(tiny, tmp_path):
    spec = tiny_spec(tmp_path / "s.yaml", tiny)
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "o", "--runner", "dask",
                     "--dask_workers", 0)
    assert_one_line_error(result, "argument --dask_workers: '0' is not in [1, 1024]")
    assert not (tmp_path / "o").exists()


def test_the_slurm_job_builds_its_cluster_and_generate_arguments():
    """jobs/dask/slurm_job.py, without a SLURM: the arguments it would hand dask-jobqueue and
    kepkreator generate."""
    from jobs.dask.slurm_job import cluster_kwargs, generate_args, parse
    args, rest = parse(["--spec", "s.yaml", "--out", "/shared/o", "--workers", "8", "--queue",
                        "gpu", "--gpus-per-worker", "1", "--cores", "8",
                        "--max_units_per_batch", "8"])
    kwargs = cluster_kwargs(args)
    assert kwargs["queue"] == "gpu" and kwargs["processes"] == 1 and kwargs["cores"] == 8
    assert kwargs["job_extra_directives"] == ["--gres=gpu:1"]
    assert "export TF_NUM_INTRAOP_THREADS=8" in kwargs["job_script_prologue"]
    argv = generate_args(args, rest, "tcp://10.0.0.1:8786")
    assert argv == ["--spec", "s.yaml", "--out", "/shared/o", "--max_units_per_batch", "8",
                    "--runner", "dask", "--dask_address", "tcp://10.0.0.1:8786"]
    from pipeline.options import GenerateOptions, parse_options
    settings = parse_options(argv).view_as(GenerateOptions)  # generate takes them as they are
    assert settings.dask_address == "tcp://10.0.0.1:8786" and settings.max_units_per_batch == 8


def _translated(runner):
    """{step label: its Dask bag} for a small pipeline of a grouping, a per-key combine and a
    global one, as ``runner`` translates it (16 partitions)."""
    import apache_beam as beam
    import dask
    from apache_beam.runners.dask.overrides import dask_overrides
    p = beam.Pipeline(runner=runner)
    pairs = p | "Pairs" >> beam.Create([(i % 3, i) for i in range(40)])
    _ = pairs | "Group" >> beam.GroupByKey() | "Sorted" >> beam.MapTuple(
        lambda k, vs: (k, sorted(vs)))
    _ = pairs | "SumPerKey" >> beam.CombinePerKey(sum)
    _ = (pairs | "Values" >> beam.Values()
         | "Total" >> beam.CombineGlobally(sum).without_defaults())
    p.replace_all(dask_overrides())
    visitor = runner.to_dask_bag_visitor({"npartitions": 16})
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):  # as with a cluster's client
        p.visit(visitor)
    return {node.full_label: bag for node, bag in visitor.bags.items()}


def test_groupings_and_combines_are_tree_reductions_with_beams_results():
    """Beam's own translation shuffles every grouping through ~partitions x 32 tasks and
    combines only after grouping; ours groups and combines by a tree of a few tasks, and the
    results are the same."""
    import dask
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from pipeline.dask_runner import GroupingDaskRunner
    ours, beams = _translated(GroupingDaskRunner()), _translated(DaskRunner())
    per_key = "SumPerKey/Combine/ParDo(CombineValuesDoFn)"  # the step that makes its output
    labels = ("Sorted", per_key, "Total/UnKey")
    # Each task must unpickle its own copy of a step, as on a cluster of worker processes: Beam's
    # DaskRunner collects a step's outputs in one list that the step's tasks would share.
    results = dask.compute(*[bags[label] for bags in (ours, beams) for label in labels],
                           scheduler="processes", num_workers=2)
    results = [sorted(r) for r in results]
    expected = [[(k, list(range(k, 40, 3))) for k in range(3)],
                [(k, sum(range(k, 40, 3))) for k in range(3)], [sum(range(40))]]
    assert results == expected + expected
    steps = (("Group/ReifyWindows", "Group/GroupByKey"), ("Pairs", per_key),
             ("Values/Values", "Total/UnKey"))
    added = lambda bags, before, after: (len(bags[after].__dask_graph__())  # noqa: E731
                                         - len(bags[before].__dask_graph__()))
    for before, after in steps:  # the tasks a grouping or combine adds to its input's
        assert 3 * added(ours, before, after) < added(beams, before, after), after
    # the groups are spread over the run's partitions again, for the steps after a grouping
    assert ours["Sorted"].npartitions == 16
