"""Option types and option sets the commands share; their callbacks turn bad values into
click's one-line usage errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from kepkreator.paths import not_local


class LocalPath(click.Path):
    """click.Path that refuses a URL (see kepkreator.paths) and, unless ``allow_empty``, an
    empty string, which Path reads as the working directory."""

    def __init__(self, *args, allow_empty: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.allow_empty = allow_empty

    def convert(self, value, param, ctx):
        if not_local(value):
            self.fail(not_local(value), param, ctx)
        if not str(value).strip() and not (self.allow_empty and value == ""):
            self.fail("an empty path", param, ctx)
        return super().convert(value, param, ctx)


class FiniteRange(click.FloatRange):
    """click.FloatRange lets NaN through (every comparison with it is false), and inf where a
    side is open; no option here means either."""

    name = "float range"

    def convert(self, value, param, ctx):
        import math
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Seeds reach numpy's legacy seeding (Keras' set_random_seed), which takes [0, 2**32).
SEED = click.IntRange(0, 2**32 - 1)


def class_set_name(ctx, param, value):
    from kepkreator.classsets import get_class_set
    from kepkreator.errors import KepKreatorError
    try:
        return get_class_set(value).name
    except KepKreatorError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def check_sources(ctx, param, values):
    from kepkreator.data import parse_source
    from kepkreator.errors import KepKreatorError
    try:
        for value in values:
            parse_source(value)
    except KepKreatorError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return values


# Real data in, the same way for train, downstream and tune.
DATA_OPTIONS = [
    click.option("--class-set", required=True, callback=class_set_name,
                 help="digits, letters, letters52, balanced, byclass"),
    click.option("--data", "data", multiple=True, required=True, callback=check_sources,
                 help="Training source, repeatable: mnist:train@DIR, emnist-byclass:test@DIR, "
                      "folder@DIR, dataset@DIR or dataset:SPLIT@DIR (a dataset kepkreator "
                      "generate wrote)."),
    click.option("--eval-data", multiple=True, callback=check_sources,
                 help="Held-out (test) source(s); removed from training."),
    click.option("--holdout", type=FiniteRange(0, 0.9), default=0.0, show_default=True,
                 help="Without --eval-data: hash-split this fraction off as held-out data."),
]


TRAINING_OPTIONS = DATA_OPTIONS + [
    click.option("--out", required=True, type=LocalPath(file_okay=False),
                 help="Bundle directory to write."),
    click.option("--epochs", type=click.IntRange(1), default=None),
    click.option("--batch-size", type=click.IntRange(1), default=None),
    click.option("--seed", type=SEED, default=0, show_default=True),
    click.option("--per-class", type=click.IntRange(0), default=0,
                 help="Train on only this many real samples of each class (0 = all).",),
    click.option("--subset-seed", type=SEED, default=0, show_default=True,
                 help="Which --per-class subset: the same seed picks the same images."),
    click.option("--max-train-samples", type=click.IntRange(0), default=0,
                 help="Use only this many training samples (0 = all)."),
    click.option("--workdir", type=LocalPath(file_okay=False, allow_empty=True), default="",
                 help="Checkpoints, TensorBoard logs, sample grids (default OUT.work). "
                      "Re-running resumes."),
]


def with_options(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def drop_none(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def seed_list(ctx, param, value):
    try:
        seeds = tuple(int(v) for v in value.split(","))
    except ValueError:
        seeds = ()
    if not seeds or not all(0 <= seed < 2**32 for seed in seeds):
        raise click.BadParameter(f"{value!r} is not a comma-separated list of seeds (integers "
                                 f"in [0, 2**32))", ctx, param) from None
    if len(set(seeds)) < len(seeds):  # a seed fixes a run bit for bit: a repeat is a copy
        raise click.BadParameter(f"{value!r} lists a seed twice; a repeated seed repeats the "
                                 "same run, and its spread would read as zero", ctx, param)
    return seeds


def confidence_option(ctx, param, value):
    """``0.9``, or ``0.9,I=0.5,L=0.5`` (a default and per-class thresholds, as a spec's
    ``min_confidence: {default: 0.9, I: 0.5, L: 0.5}``); class names are checked by the spec."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.thresholds import parse_thresholds, thresholds_value
    if value == "":
        return None  # the generator card's
    try:
        default, per_class = parse_thresholds(value, "min_confidence")
    except KepKreatorError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if default is None:
        raise click.BadParameter(f"{value!r} needs a default threshold first, e.g. 0.9,I=0.5",
                                 ctx, param)
    return thresholds_value(default, per_class)


def check_report_path(json_out) -> None:
    """Measuring takes minutes: a report that cannot be written is said before, not after."""
    if not json_out:
        return
    folder = Path(json_out).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise click.UsageError(f"--json-out {json_out}: {folder} is a file where a folder is "
                               "needed")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.UsageError(f"--json-out {json_out}: cannot write in {folder}")


def write_report(json_out, report: dict) -> None:
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report: {json_out}")
