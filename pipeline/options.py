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

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

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


def runner_for(options: PipelineOptions):
    """The runner the options name, checked before the output folder is touched (beam.Pipeline
    would raise these as tracebacks). Local runs use the FnApiRunner, named explicitly: this
    Beam version's DirectRunner would otherwise try to start the Prism runner, a download."""
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return FnApiRunner()
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
