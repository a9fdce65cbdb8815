"""``evaluate``: a generator (or a validator alone) measured on samples and real data."""
from __future__ import annotations

import click

from kepkreator.cli.group import cli
from kepkreator.cli.options import (SEED, FiniteRange, LocalPath, check_report_path,
                                    write_report)


@cli.command()
@click.option("--generator", "generator_ref", default=None,
              help="Bundle dir or default:NAME; without it, the validator alone is measured on "
                   "--real (accuracy per class, most confused pairs).")
@click.option("--validator", "validator_ref", required=True, help="Bundle dir or default:NAME.")
@click.option("-n", "--samples", type=click.IntRange(1, 1_000_000), default=10000,
              show_default=True,
              help="Total generated samples, spread evenly over the classes, held in memory "
                   "(for more, generate writes the same scores to metrics.json).")
@click.option("--real", "real_sources", multiple=True,
              help="Real data source(s) to compare with (BCIS of real data, Frechet distance).")
@click.option("--real-holdout", type=FiniteRange(0, 0.9, min_open=True), default=None,
              help="Keep only the hash holdout of --real that `train --holdout F` leaves out "
                   "(seed --split-seed): compare generators with the images one of them never "
                   "saw.")
@click.option("--split-seed", type=SEED, default=0, show_default=True,
              help="Seed of the --real-holdout split, as given to train.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--json-out", type=LocalPath(dir_okay=False), default=None,
              help="Where to write the JSON report (default: print only).")
@click.option("--latent-scale", type=FiniteRange(0, 10, min_open=True), default=None,
              help="z ~ N(0, scale^2); default: the generator card's sampling scale, as the "
                   "pipeline uses.")
@click.option("--update-card", is_flag=True, help="Also record the report in the generator card.")
@click.option("--train-data", "train_sources", multiple=True,
              help="The generator's training data source(s): checks whether the samples are new "
                   "or copies of training images, against --real or else the card's holdout.")
@click.option("--train-per-class", type=click.IntRange(0), default=None,
              help="Keep the per-class subset the generator was trained on (0: all); default: "
                   "the card's, as `train gan --per-class` recorded it.")
@click.option("--train-subset-seed", type=SEED, default=None,
              help="Seed of that subset; default: the card's.")
@click.option("--judge", "judge_ref", default="default", show_default=True,
              help="Independent classifier that reports on the samples (agreement, density, "
                   "coverage): a bundle, default (the class set's shipped judge) or none.")
@click.option("--min-confidence", type=FiniteRange(0, 1), default=None,
              help="The validator filter whose kept samples the judge also reports on; "
                   "default: the generator card's threshold, else 0.9.")
@click.option("--second-validator", "second_ref", default="default", show_default=True,
              help="A second validator the filter also asks, as the pipeline does: a bundle, "
                   "default (the generator card's `sampling.second_validator`, if any) or none.")
def evaluate(generator_ref, validator_ref, samples, real_sources, real_holdout, split_seed, seed,
             json_out, latent_scale, update_card, train_sources, train_per_class,
             train_subset_seed, judge_ref, min_confidence, second_ref):
    """Measure a generator with a validator: agreement, IS, BCIS, WCIS, Frechet distance, and
    with --train-data whether its samples copy its training images."""
    from kepkreator.evaluate import (evaluate_generator, format_table, generator_training_set,
                                     record_in_card, shipped_judge)
    from kepkreator.models.bundle import load_bundle, resolve_bundle_path
    check_report_path(json_out)
    if generator_ref is None:
        _evaluate_validator_only(validator_ref, real_sources, real_holdout, split_seed, json_out)
        return
    generator = load_bundle(generator_ref, "generator")
    validator = load_bundle(validator_ref, "validator")
    train = None
    real = _real(real_sources, real_holdout, split_seed, validator.class_set)
    if train_sources:
        train, held_out = generator_training_set(
            generator, train_sources, train_per_class, train_subset_seed,
            note=lambda line: click.echo(line, err=True))
        if real is None:
            if held_out is None:
                raise click.UsageError(
                    "--train-data needs --real (held-out images: how near new data falls to "
                    "the training images by chance) unless the generator's card records a "
                    "holdout of that data")
            real = held_out
            click.echo(f"real: the {len(held_out):,} images the card's holdout kept out of "
                       "--train-data", err=True)
    per_class = max(1, samples // generator.class_set.num_classes)
    if judge_ref == "default":
        judge_ref = shipped_judge(generator.class_set.name)
    report = evaluate_generator(generator, validator, per_class, seed, real,
                                latent_scale=latent_scale, train=train,
                                judge_ref=None if judge_ref in (None, "none") else judge_ref,
                                min_confidence=min_confidence,
                                second_validator_ref=None if second_ref == "default"
                                else "" if second_ref == "none" else second_ref)
    click.echo(format_table(report))
    write_report(json_out, report)
    if update_card:
        record_in_card(resolve_bundle_path(generator_ref, "generator"), report)


def _evaluate_validator_only(validator_ref, real_sources, real_holdout, split_seed, json_out):
    from kepkreator.evaluate import evaluate_validator, format_validator_table
    from kepkreator.models.bundle import load_bundle
    ctx = click.get_current_context()
    needs_generator = [max(param.opts, key=len) for param in ctx.command.params
                       if param.name in ("samples", "seed", "latent_scale", "update_card",
                                         "train_sources", "train_per_class", "train_subset_seed")
                       and ctx.get_parameter_source(param.name)
                       != click.core.ParameterSource.DEFAULT]
    if needs_generator:
        verb = "measures" if len(needs_generator) == 1 else "measure"
        raise click.UsageError(f"{', '.join(needs_generator)} {verb} a generator: give "
                               "--generator")
    if not real_sources:
        raise click.UsageError("without --generator, evaluate measures the validator on real "
                               "data: give --real")
    validator = load_bundle(validator_ref, "validator")
    report = evaluate_validator(validator, _real(real_sources, real_holdout, split_seed,
                                                      validator.class_set))
    click.echo(format_validator_table(report))
    write_report(json_out, report)


def _real(real_sources, real_holdout, split_seed, class_set):
    """--real, or the part of it a training run's --holdout left out; None without --real."""
    from kepkreator.evaluate import real_data
    if not real_sources:
        if real_holdout is not None:
            raise click.UsageError("--real-holdout splits --real: give --real")
        return None
    return real_data(real_sources, class_set, real_holdout, split_seed)
