"""``generate``'s options, defined once as a Beam ``PipelineOptions`` subclass: the CLI,
``python -m pipeline.run`` and the Dataflow job parse the same arguments, the job's own beside
Beam's, with one-line errors for bad values and unknown names."""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import re
import threading

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from kepkreator.errors import KepKreatorError


def _accelerator(text):
    """Dataflow's accelerator form, 'type:GPU;count:N' plus flags such as install-nvidia-driver:
    checked here, since a malformed hint is otherwise refused only by the service, after staging,
    and a local runner ignores it without a word."""
    parts = [part.strip() for part in text.split(";")]
    fields = dict(part.split(":", 1) for part in parts if ":" in part)
    flags = [part for part in parts if ":" not in part]
    problems = []
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", fields.get("type", "")):
        problems.append("no type:GPU (e.g. type:nvidia-l4)")
    if "count" in fields and not re.fullmatch(r"[1-9][0-9]*", fields["count"]):
        problems.append(f"count {fields['count']!r} is not a positive whole number")
    unknown = sorted(set(fields) - {"type", "count"})
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}")
    if any(not re.fullmatch(r"[a-z][a-z0-9_-]*", flag) for flag in flags):
        problems.append("an empty or malformed flag")
    if problems:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {'; '.join(problems)}; the form is "
            "'type:nvidia-l4;count:1;install-nvidia-driver'")
    return text


def _number(kind, low, high=None):
    """An argparse type: a finite ``kind`` in [low, high] (NaN passes a plain ``float``)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not in [{low}, {'inf' if high is None else high}]")
        return value
    parse.__name__ = kind.__name__
    return parse


class GenerateOptions(PipelineOptions):
    """The generation job's own options (Beam's convention: one class, parsed with the rest)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--spec", default=None,
                            help="spec file (YAML/JSON) or a quoted glob of them (required)")
        parser.add_argument("--out", default=None,
                            help="output directory: local, or gs://BUCKET/... with Google Cloud "
                                 "credentials (required)")
        parser.add_argument("--overwrite", action="store_true", default=False,
                            help="replace what an earlier run of this tool wrote there")
        parser.add_argument("--shortfall_tolerance", "--shortfall-tolerance",
                            dest="shortfall_tolerance", type=_number(float, 0, 1), default=0.0,
                            help="largest shortfall per class, as a fraction of its request, "
                                 "that still counts as complete")
        parser.add_argument("--accelerator", default=None, type=_accelerator,
                            help="resource hint for the model steps on Dataflow, e.g. "
                                 "'type:nvidia-l4;count:1;install-nvidia-driver'")
        parser.add_argument("--max_units_per_batch", type=_number(int, 1), default=4,
                            help="work units RunInference batches into one inference call")
        parser.add_argument("--intra_op_threads", type=_number(int, 0), default=0,
                            help="TensorFlow threads per worker process (0: TensorFlow decides)")
        parser.add_argument("--dask_address", default=None,
                            help="with --runner dask: the scheduler of an existing Dask cluster, "
                                 "tcp://HOST:PORT (without it, a local cluster is started)")
        parser.add_argument("--dask_workers", type=_number(int, 1, 1024), default=2,
                            help="with --runner dask and no --dask_address: worker processes of "
                                 "the local cluster, one thread each")


def generate_help() -> str:
    """``kepkreator generate --help``: the job's options, the spec keys, Beam's options."""
    parser = argparse.ArgumentParser(
        prog="kepkreator generate", allow_abbrev=False, add_help=False,
        description="Run the generation pipeline on a spec. Every other argument is a Beam "
                    "pipeline option, e.g. --direct_num_workers=2 "
                    "--direct_running_mode=multi_processing, or --runner=DataflowRunner.",
        epilog="Spec keys (README, 'Spec keys'): class_set, generator, validator, counts "
               "(required); seed, min_confidence, realism, label_policy, latent_scale, judge, "
               "formats, shards, split, orientation, name, unit_size, max_rounds, "
               "max_oversample.")
    GenerateOptions._add_argparse_args(parser)
    return parser.format_help()


class _CtrlCIsNotAnError(logging.Filter):
    """Beam logs a Ctrl-C that lands inside a DoFn as an error with the step's traceback."""

    def filter(self, record):
        return not record.getMessage().startswith("KeyboardInterrupt")


logging.getLogger("apache_beam.runners.common").addFilter(_CtrlCIsNotAnError())


def parse_options(argv) -> PipelineOptions:
    """The job's and Beam's options from ``argv``; a bad value or a name neither knows is one
    line (Beam's parser would print its whole usage, or only log an unknown name)."""
    argv = list(argv)
    runners = [value for flag, value in zip(argv, argv[1:] + [""]) if flag == "--runner"]
    runners += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--runner=")]
    if any(_is_dask_name(runner) for runner in runners):
        _register_dask_options()
    options = PipelineOptions(list(argv))
    usage = io.StringIO()
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    try:
        beam_log.setLevel(logging.ERROR)
        with contextlib.redirect_stderr(usage):
            retained = options.get_all_options(retain_unknown_options=True)
            known = options.get_all_options()
    except SystemExit:
        said = usage.getvalue().strip().splitlines() or ["invalid Beam pipeline option"]
        raise KepKreatorError(said[-1].split("error: ", 1)[-1]) from None
    finally:
        beam_log.setLevel(level)
    unknown = sorted(set(retained) - set(known))
    if unknown:
        raise KepKreatorError(f"unknown option --{unknown[0]} (not a generate option and not a "
                              "Beam pipeline option)")
    return options


def _register_dask_options() -> None:
    """Beam declares the DaskRunner's options (--dask_client_address, ...) in the runner's
    module, which needs the dask extra: imported only for a Dask run."""
    try:
        import apache_beam.runners.dask.dask_runner
        import distributed
        del apache_beam, distributed
    except ImportError:
        raise KepKreatorError("--runner DaskRunner needs Dask: pip install '.[dask]'") from None


def _is_dask_name(runner) -> bool:
    return str(runner).lower().replace("_", "") in ("dask", "daskrunner")


def is_dask(options: PipelineOptions) -> bool:
    return _is_dask_name(options.view_as(StandardOptions).runner)


def check_dask_cluster(options: PipelineOptions) -> None:
    """An existing cluster (``--dask_address``) is checked before the output folder is
    touched: it answers, its workers are processes; partitions are sized to its threads."""
    if not is_dask(options):
        return
    _register_dask_options()
    from apache_beam.runners.dask.dask_runner import DaskOptions
    settings, dask = options.view_as(GenerateOptions), options.view_as(DaskOptions)
    if settings.dask_address or dask.address:
        dask.address = settings.dask_address or dask.address
        _partition_for(dask, None)


@contextlib.contextmanager
def dask_cluster(options: PipelineOptions):
    """For a Dask run: the cluster ``--dask_address`` names (or Beam's own
    ``--dask_client_address``), else a local one of ``--dask_workers`` processes of one thread
    each, shut down after. Yields ``ready()``, which returns once the cluster can take the
    pipeline. A local cluster starts in a thread at once: its workers start and import Keras
    while this process loads the bundles and builds the pipeline (about 5 s of a run's fixed
    cost that would otherwise come after). Elsewhere ``ready`` does nothing."""
    if not is_dask(options) or options.view_as(TestOptions).dry_run:
        yield lambda: None
        return
    _register_dask_options()
    from apache_beam.runners.dask.dask_runner import DaskOptions
    # The scheduler and nannies run in this process and log every worker's comings and goings
    # (and, at shutdown, the kill of workers that TensorFlow's threads keep busy).
    logging.getLogger("distributed").setLevel(logging.ERROR)
    settings, dask = options.view_as(GenerateOptions), options.view_as(DaskOptions)
    if settings.dask_address or dask.address:  # checked by check_dask_cluster
        yield lambda: None
        return
    from dask import config as dask_config
    from distributed import LocalCluster
    started: dict = {}

    def start():
        try:
            # A worker is handed one task at a time (Dask's default lets it queue a second):
            # when a partition's models finish, the scheduler then starts that partition's sink
            # steps before the next partition's models, instead of leaving every partition's
            # PNG encoding and fragment writing to the end of the run.
            with dask_config.set({"distributed.scheduler.worker-saturation": 1.0}):
                started["cluster"] = LocalCluster(
                    n_workers=settings.dask_workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                    preload=["pipeline.dask_worker"])
        except BaseException as exc:  # raised where the cluster is waited for
            started["error"] = exc

    def ready():
        starting.join()
        if "error" in started:
            raise started["error"]
        dask.address = started["cluster"].scheduler_address

    _partition_for(dask, settings.dask_workers)
    starting = threading.Thread(target=start, name="dask-cluster-start", daemon=True)
    starting.start()
    try:
        yield ready
    finally:
        starting.join()
        if "cluster" in started:
            started["cluster"].close()


def _partition_for(dask, workers: int | None) -> None:
    """Two partitions per worker thread, unless the options say otherwise. An element is a
    whole work unit: Beam's default of 128 per partition would hand a small job's every unit to
    one worker, and one unit per partition costs each unit the set-up of every step it passes
    (a 30,000-sample job: 427 s against 44 s with a partition per worker)."""
    if workers is None:
        workers = _existing_cluster_threads(dask.address)
    if dask.partition_size or dask.npartitions:
        return
    dask.npartitions = 2 * workers


def _existing_cluster_threads(address: str) -> int:
    """Worker threads of the cluster at ``address``, after checking that its workers are
    processes of their own. Beam's DaskRunner collects a step's outputs in one list that every
    task of the step receives; workers in the scheduler's process (``inproc://``) share that
    list instead of each unpickling its own copy, and every output comes out many times."""
    from distributed import Client
    try:
        client = Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as err:
        raise KepKreatorError(f"--dask_address {address}: no Dask scheduler answers ({err})") \
            from None
    with client:
        workers = client.scheduler_info()["workers"]
        in_process = [w for w in workers if w.startswith("inproc://")]
        if in_process:
            raise KepKreatorError(
                f"--dask_address {address}: its workers run inside the scheduler's process "
                f"({in_process[0]}), where Beam's DaskRunner repeats outputs; start the "
                "cluster with worker processes (e.g. LocalCluster(processes=True) or "
                "dask worker)")
        return sum(w["nthreads"] for w in workers.values()) or 1


def runner_for(options: PipelineOptions):
    """The runner the options name, checked before the output folder is touched (beam.Pipeline
    would raise these as tracebacks). Local runs use the FnApiRunner, named explicitly: this
    Beam version's DirectRunner would otherwise try to start the Prism runner, a download."""
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
    if is_dask(options):  # create_runner does not know it
        _register_dask_options()
        from pipeline.dask_runner import GroupingDaskRunner
        return GroupingDaskRunner()
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner
    try:
        runner = create_runner(runner)
    except ValueError:
        raise KepKreatorError(f"unknown --runner {runner!r}") from None
    missing = [line.strip().rstrip(".") for line in
               PipelineOptionsValidator(options, runner).validate()]
    if missing:
        raise KepKreatorError(f"{type(runner).__name__}: {'; '.join(missing)}")
    return runner


def beam_arguments(options: PipelineOptions) -> list[str]:
    """The Beam options a run was given (not the job's own), as the manifest records them."""
    own = argparse.ArgumentParser(add_help=False)
    GenerateOptions._add_argparse_args(own)
    mine = {action.dest for action in own._actions}
    return [f"--{name}={value}" for name, value in
            sorted(options.get_all_options(drop_default=True).items()) if name not in mine]
