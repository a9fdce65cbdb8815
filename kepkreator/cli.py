"""The ``kepkreator`` command: a thin click layer over the library and the pipeline.

Every user mistake ends as one line on stderr and exit status 2; heavy imports happen inside
commands so ``--help`` and argument errors are instant.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from kepkreator.paths import not_local
from kepkreator.quiet import quiet_tensorflow_import


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


@click.group()
@click.version_option(package_name="kepkreator")
def cli():
    """Synthetic, labelled EMNIST-style handwriting, at dataset scale."""


@cli.group()
def train():
    """Train generators and validators into model bundles."""


def _class_set(ctx, param, value):
    from kepkreator.classsets import get_class_set
    from kepkreator.errors import KepKreatorError
    try:
        return get_class_set(value).name
    except KepKreatorError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _sources(ctx, param, values):
    from kepkreator.data import parse_source
    from kepkreator.errors import KepKreatorError
    try:
        for value in values:
            parse_source(value)
    except KepKreatorError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return values


# Real data in, the same way for train, downstream and tune.
_data_options = [
    click.option("--class-set", required=True, callback=_class_set,
                 help="digits, letters, letters52, balanced, byclass"),
    click.option("--data", "data", multiple=True, required=True, callback=_sources,
                 help="Training source, repeatable: mnist:train@DIR, emnist-byclass:test@DIR, "
                      "folder@DIR, dataset@DIR or dataset:SPLIT@DIR (a dataset kepkreator "
                      "generate wrote)."),
    click.option("--eval-data", multiple=True, callback=_sources,
                 help="Held-out (test) source(s); removed from training."),
    click.option("--holdout", type=FiniteRange(0, 0.9), default=0.0, show_default=True,
                 help="Without --eval-data: hash-split this fraction off as held-out data."),
]

_common_data = _data_options + [
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


def _with(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _downstream_card_key(ctx, param, value):
    """Only study keys: --card-key evaluation would overwrite the generator's evaluation."""
    if not value.startswith("downstream"):
        raise click.BadParameter(f"must start with 'downstream', got {value!r}", ctx, param)
    return value


def _drop_none(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


@train.command("validator")
@_with(_common_data)
@click.option("--preset", default="default", show_default=True, help="default or tiny")
@click.option("--no-augment", is_flag=True, help="Train without shifts/rotations/zoom.")
def train_validator_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                        per_class, subset_seed, max_train_samples, workdir, preset, no_augment):
    """Train the validation CNN that scores and filters generated samples."""
    from kepkreator.training.validator import ValidatorHParams, train_validator
    hp = ValidatorHParams(**_drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout,
        out=out, epochs=epochs, batch_size=batch_size, seed=seed, preset=preset,
        augment=not no_augment, per_class=per_class, subset_seed=subset_seed,
        max_train_samples=max_train_samples, workdir=workdir))
    path = train_validator(hp)
    metrics = json.loads((path / "card.json").read_text())["metrics"]
    click.echo(f"validator bundle: {path}  " + (f"held-out accuracy {metrics['eval_accuracy']:.4f}"
                                               if "eval_accuracy" in metrics else ""))


@train.command("gan")
@_with(_common_data)
@click.option("--generator-preset", default="default", show_default=True,
              help="default, kepkreator-2023, tiny, or warp (warp-tiny): for a few hundred "
                   "images per class, a learnt deformation of the training images themselves.")
@click.option("--discriminator-preset", default="default", show_default=True)
@click.option("--latent-dim", type=click.IntRange(1), default=None)
@click.option("--embed-dim", type=click.IntRange(1), default=None)
@click.option("--channels", type=click.IntRange(4), default=None)
@click.option("--g-lr", type=FiniteRange(0, min_open=True), default=None)
@click.option("--d-lr", type=FiniteRange(0, min_open=True), default=None)
@click.option("--aux-weight", type=FiniteRange(0), default=None)
@click.option("--diff-augment", is_flag=True,
              help="DiffAugment (translation, cutout) for the discriminator: use on small data.")
@click.option("--real-augment", is_flag=True,
              help="Classic shifts/rotations/zoom on the real images, which the generator then "
                   "learns too: widens a small set.")
@click.option("--mode-seeking", type=FiniteRange(0), default=None,
              help="Weight of the mode-seeking term (Mao et al. 2019) against dropped styles; "
                   "0.05 is a usable start.")
@click.option("--init-from", default="",
              help="Generator bundle to start from (e.g. default:letters for a few hundred digits): "
                   "layers of matching shape are copied, the label embedding of a new class set "
                   "starts fresh.")
@click.option("--modes-per-class", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Class splitting: cluster each class into this many modes and condition on "
                   "them, so no way of writing a class is dropped (3 for letters: capital and "
                   "small forms).")
@click.option("--validator", default="", help="Validator bundle to measure the result with.")
@click.option("--eval-per-class", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def train_gan_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                  per_class, subset_seed, max_train_samples, workdir, generator_preset,
                  discriminator_preset, latent_dim, embed_dim, channels, g_lr, d_lr, aux_weight,
                  diff_augment, real_augment, mode_seeking, init_from, modes_per_class, validator,
                  eval_per_class):
    """Train a conditional GAN; the bundle holds the (EMA) generator."""
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.training.gan import GANHParams, train_gan
    if validator:
        resolve_bundle_path(validator, "validator")  # fail before hours of training, not after
    if init_from:
        resolve_bundle_path(init_from, "generator")
    hp = GANHParams(**_drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout, out=out,
        epochs=epochs, batch_size=batch_size, seed=seed, max_train_samples=max_train_samples,
        per_class=per_class, subset_seed=subset_seed, diff_augment=diff_augment,
        real_augment=real_augment, mode_seeking=mode_seeking, init_from=init_from, workdir=workdir,
        modes_per_class=modes_per_class,
        generator_preset=generator_preset,
        discriminator_preset=discriminator_preset, latent_dim=latent_dim, embed_dim=embed_dim,
        channels=channels, g_learning_rate=g_lr, d_learning_rate=d_lr, aux_weight=aux_weight,
        validator=validator, eval_per_class=eval_per_class))
    path = train_gan(hp)
    click.echo(f"generator bundle: {path}")


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
def evaluate(generator_ref, validator_ref, samples, real_sources, real_holdout, split_seed, seed,
             json_out, latent_scale, update_card, train_sources, train_per_class,
             train_subset_seed, judge_ref, min_confidence):
    """Measure a generator with a validator: agreement, IS, BCIS, WCIS, Frechet distance, and
    with --train-data whether its samples copy its training images."""
    from kepkreator.evaluate import (evaluate_generator, format_table, record_in_card,
                                     shipped_judge)
    from kepkreator.models.bundle import load_bundle, resolve_bundle_path
    _check_report_path(json_out)
    if generator_ref is None:
        _evaluate_validator_only(validator_ref, real_sources, real_holdout, split_seed, json_out)
        return
    generator = load_bundle(generator_ref, "generator")
    validator = load_bundle(validator_ref, "validator")
    train = None
    real = _real_data(real_sources, real_holdout, split_seed, validator.class_set)
    if train_sources:
        train, held_out = _generator_training_set(generator, train_sources, train_per_class,
                                                  train_subset_seed)
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
                                min_confidence=min_confidence)
    click.echo(format_table(report))
    _write_report(json_out, report)
    if update_card:
        record_in_card(resolve_bundle_path(generator_ref, "generator"), report)


def _real_data(real_sources, real_holdout, split_seed, class_set):
    """--real, or the part of it a training run's --holdout left out."""
    if not real_sources:
        if real_holdout is not None:
            raise click.UsageError("--real-holdout splits --real: give --real")
        return None
    if real_holdout is None:
        from kepkreator.data import load_sources
        return load_sources(list(real_sources), class_set)
    from kepkreator.training.common import split_data
    held_out = split_data(list(real_sources), class_set.name, real_holdout, [], split_seed)[1]
    if not len(held_out):
        raise click.UsageError(f"--real-holdout {real_holdout:g} keeps none of the "
                               f"{', '.join(real_sources)} images")
    return held_out


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
    report = evaluate_validator(validator, _real_data(real_sources, real_holdout, split_seed,
                                                      validator.class_set))
    click.echo(format_validator_table(report))
    _write_report(json_out, report)


def _check_report_path(json_out) -> None:
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


def _write_report(json_out, report: dict) -> None:
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report: {json_out}")


def _generator_training_set(generator, sources, per_class, subset_seed):
    """(the images the generator learnt from, the hash holdout or None): the sources split,
    subset and capped as its card's hyperparameters say `train gan` did it."""
    from types import SimpleNamespace

    from kepkreator.training.common import training_data
    training = generator.card.get("training") or {}
    recorded = {"holdout": 0.0, "split_seed": 0, "per_class": 0, "subset_seed": 0,
                "max_train_samples": 0, "seed": 0, **(training.get("hparams") or {})}
    if per_class is not None:
        recorded["per_class"] = per_class
    if subset_seed is not None:
        recorded["subset_seed"] = subset_seed
    train, held_out, _ = training_data(SimpleNamespace(**{
        **recorded, "data": list(sources), "eval_data": [],
        "class_set": generator.class_set.name}))
    expected = (training.get("data") or {}).get("train_samples")
    if expected not in (None, len(train)):
        click.echo(f"note: {len(train):,} training images from --train-data, the generator's "
                   f"card records {expected:,}", err=True)
    return train, held_out


def _confidence(ctx, param, value):
    """``0.9``, or ``0.9,I=0.5,L=0.5`` (a default and per-class thresholds, as a spec's
    ``min_confidence: {default: 0.9, I: 0.5, L: 0.5}``); class names are checked by the spec."""
    out = {}
    try:
        for part in value.split(","):
            name, sep, number = part.rpartition("=")
            threshold = float(number)
            if not 0 <= threshold < 1:
                raise ValueError
            out[name.strip() if sep else "default"] = threshold
    except ValueError:
        raise click.BadParameter(f"{value!r} should be a threshold in [0, 1), optionally "
                                 "followed by CLASS=threshold pairs, e.g. 0.9,I=0.5", ctx,
                                 param) from None
    return out["default"] if list(out) == ["default"] else out


def _seed_list(ctx, param, value):
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


def _generate_with_pipeline(spec: dict, directory: Path) -> Path:
    """The studies' synthetic data comes from the real pipeline, read back from its output."""
    from kepkreator.errors import KepKreatorError
    from pipeline.run import run
    spec_file = directory.parent / f"{directory.name}.spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    # A spec reads relative bundle paths from its own folder; these were typed relative to here.
    spec = spec | {key: str(Path(spec[key]).resolve()) for key in ("generator", "validator")
                   if not spec[key].startswith("default:") and not Path(spec[key]).is_absolute()}
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    result = run(["--spec", str(spec_file), "--out", str(directory), "--overwrite"])
    if result.failed:
        raise KepKreatorError(result.failed)
    return Path(result.out)


_study_options = [
    click.option("--seeds", default="0,1,2", show_default=True, callback=_seed_list),
    click.option("--generator", default="",
                 help="Generator for b and d (default: the shipped one)."),
    click.option("--validator", default="",
                 help="Validator for b and d (default: the shipped one)."),
    click.option("--min-confidence", default="0.9", show_default=True, callback=_confidence,
                 help="Filter threshold: a number in [0, 1), or per class, e.g. 0.9,I=0.5."),
    click.option("--steps", type=click.IntRange(1), default=1500, show_default=True,
                 help="Reference classifier updates, the same for every setting."),
]


@cli.command()
@_with(_data_options)
@click.option("--out", required=True, type=LocalPath(file_okay=False),
              help="Study directory: reports, generated datasets, subset models, per-run "
                   "results. Re-running resumes.")
@click.option("--settings", default="a,b,c,c_aug,d,d_aug,e,e_aug",
              show_default=True, help="Which settings to run; add ceiling_aug for the control "
                                      "with other real images in place of the synthetic ones.")
@_with(_study_options)
@click.option("--per-class", type=click.IntRange(1), default=200, show_default=True,
              help="Real samples per class in the low-data settings (c, c_aug, d, d_aug, e).")
@click.option("--synthetic-per-class", type=click.IntRange(1, 100_000), default=2000,
              show_default=True,
              help="Synthetic samples per class added to the subset in d, d_aug and e.")
@click.option("--latent-scale", type=FiniteRange(0, 10, min_open=True), default=None,
              help="z ~ N(0, s^2) for every generated set (default: each generator at its own "
                   "card's choice, see tune-sampling; the subset-only one has none: 1).")
@click.option("--subset-validator-epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--subset-gan-epochs", type=click.IntRange(1), default=120, show_default=True)
@click.option("--subset-gan-batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--subset-presets", default="default,default,default", show_default=True,
              help="validator,generator,discriminator presets of the subset-only models.")
@click.option("--subset-aux-weight", type=FiniteRange(0), default=1.0, show_default=True,
              help="Auxiliary-classifier weight of the subset-only GAN.")
@click.option("--subset-modes-per-class", type=click.IntRange(1, 16), default=1,
              show_default=True, help="Class splitting for the subset-only GAN "
                                      "(see train gan --modes-per-class).")
@click.option("--subset-mode-seeking", type=FiniteRange(0), default=0.0, show_default=True,
              help="Mode-seeking weight of the subset-only GAN (see train gan --mode-seeking).")
@click.option("--update-card", is_flag=True,
              help="Also record the summary in the card of the generator used for b and d.")
@click.option("--card-key", default="downstream", show_default=True,
              callback=_downstream_card_key,
              help="Where in the card's metrics --update-card records it: another key keeps a "
                   "partial study (e.g. --settings c_aug,d,d_aug) beside the full one.")
def downstream(class_set, data, eval_data, holdout, out, settings, seeds, per_class,
               synthetic_per_class, generator, validator, min_confidence, steps,
               latent_scale, subset_validator_epochs, subset_gan_epochs, subset_gan_batch_size,
               subset_presets, subset_aux_weight, subset_modes_per_class, subset_mode_seeking,
               update_card, card_key):
    """Is the synthetic data worth training on? A fixed reference classifier per setting, tested
    on real data: full real (a), synthetic only (b), a small real subset (c, c_aug), the subset
    plus synthetic from the shipped generator (d; d_aug with classic augmentation too) or from one
    trained on the subset alone (e)."""
    from kepkreator.downstream import DownstreamConfig, ReferenceTraining, run_study
    presets = subset_presets.split(",")
    if len(presets) != 3:
        raise click.BadParameter("needs three comma-separated presets",
                                 param_hint="--subset-presets")
    cfg = DownstreamConfig(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout, out=out,
        settings=tuple(s.strip() for s in settings.split(",")), seeds=seeds, per_class=per_class,
        synthetic_per_class=synthetic_per_class, generator=generator, validator=validator,
        min_confidence=min_confidence, training=ReferenceTraining(steps=steps),
        subset_validator_epochs=subset_validator_epochs, subset_gan_epochs=subset_gan_epochs,
        subset_gan_batch_size=subset_gan_batch_size, subset_validator_preset=presets[0],
        subset_generator_preset=presets[1], subset_discriminator_preset=presets[2],
        subset_aux_weight=subset_aux_weight, subset_modes_per_class=subset_modes_per_class,
        subset_mode_seeking=subset_mode_seeking, latent_scale=latent_scale)

    report = run_study(cfg, _generate_with_pipeline, log=lambda m: click.echo(m, err=True))
    if update_card:
        from kepkreator.downstream import card_summary
        from kepkreator.evaluate import record_in_card
        from kepkreator.models.bundle import resolve_bundle_path
        record_in_card(resolve_bundle_path(generator or f"default:{class_set}", "generator"),
                       card_summary(report), key=card_key)
    click.echo((Path(out) / "downstream.md").read_text())
    click.echo(f"report: {Path(out) / 'downstream.json'}")
    missed = [c["target"] for c in report["checks"] if not c["met"]]
    if missed:
        click.echo("missed: " + "; ".join(missed), err=True)


@cli.command("tune-sampling")
@_with(_data_options)
@click.option("--out", required=True, type=LocalPath(file_okay=False),
              help="Scan directory: sampling.json/.md, one generated set per scale, per-run "
                   "results. Re-running resumes.")
@_with(_study_options)
@click.option("--scales", default="1,1.5,2,2.5,3", show_default=True,
              help="Latent scales to try, comma-separated.")
@click.option("--reserve-holdout", type=FiniteRange(0, 0.9), default=0.0,
              help="Leave out this hash holdout of --data first (another study's test set, e.g. "
                   "the letters study's 0.1) and draw --holdout from the rest.")
@click.option("--thresholds", default="",
              help="Filter thresholds to scan with every scale, comma-separated (e.g. "
                   "0.3,0.5,0.7,0.9); in place of --min-confidence.")
@click.option("--min-judge-agreement", type=FiniteRange(0, 1), default=0.998, show_default=True,
              help="Fidelity floor: the independent judge must agree with this share of the "
                   "kept labels for a setting to be chosen (0: no floor).")
@click.option("--min-density", type=FiniteRange(0, 10), default=0.0, show_default=True,
              help="Fidelity floor: density of the kept samples against real images in the "
                   "judge's features (real images score about 1; 0: no floor).")
@click.option("--update-card", is_flag=True,
              help="Record the chosen scale (and threshold) in the generator's card: the "
                   "pipeline's defaults.")
def tune_sampling(class_set, data, eval_data, holdout, out, seeds, generator, validator,
                  min_confidence, steps, scales, thresholds, reserve_holdout, min_judge_agreement,
                  min_density, update_card):
    """Choose the generator's latent scale (and filter threshold) by the Classification Accuracy
    Score on held-out real validation data (--holdout of the training source; the test set
    stays unseen)."""
    from kepkreator.downstream import (DownstreamConfig, ReferenceTraining, sampling_card_entry,
                                       scan_latent_scales)
    try:
        scale_list = tuple(float(v) for v in scales.split(","))
    except ValueError:
        raise click.BadParameter(f"{scales!r} is not a comma-separated list of numbers",
                                 param_hint="--scales") from None
    try:
        threshold_list = tuple(float(v) for v in thresholds.split(",")) if thresholds else ()
    except ValueError:
        raise click.BadParameter(f"{thresholds!r} is not a comma-separated list of numbers",
                                 param_hint="--thresholds") from None
    cfg = DownstreamConfig(class_set=class_set, data=list(data), eval_data=list(eval_data),
                           holdout=holdout, out=out, settings=("b",), seeds=seeds,
                           generator=generator, validator=validator,
                           min_confidence=min_confidence, training=ReferenceTraining(steps=steps),
                           reserve_holdout=reserve_holdout)
    report = scan_latent_scales(cfg, scale_list, _generate_with_pipeline,
                                log=lambda m: click.echo(m, err=True), thresholds=threshold_list,
                                floor={"judge_agreement": min_judge_agreement,
                                       "density": min_density})
    if update_card:
        from kepkreator.evaluate import record_in_card
        from kepkreator.models.bundle import resolve_bundle_path
        record_in_card(resolve_bundle_path(generator or f"default:{class_set}", "generator"),
                       sampling_card_entry(report), key="sampling", section=None)
    click.echo((Path(out) / "sampling.md").read_text())


@cli.command()
@_with(_data_options)
@click.option("--out", required=True, type=LocalPath(file_okay=False),
              help="Search directory: trials, results.csv/.md/.json, best/ bundle. "
                   "Re-running resumes the search.")
@click.option("--objective", type=click.Choice(["agreement", "bcis", "wcis", "frechet"]),
              default="agreement", show_default=True,
              help="agreement and bcis are maximised, wcis and frechet minimised.")
@click.option("--algorithm", type=click.Choice(["random", "hyperband"]), default="random",
              show_default=True)
@click.option("--trials", type=click.IntRange(1), default=8, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True,
              help="Epochs per trial (random) or the largest budget of a trial (hyperband).")
@click.option("--validator", default="", help="Validator bundle that scores trials "
                                              "(default: the shipped one for the class set).")
@click.option("--max-train-samples", type=click.IntRange(0), default=0,
              help="Train each trial on this many samples (0 = all).")
@click.option("--per-class", type=click.IntRange(0), default=0,
              help="Train on only this many real samples of each class (0 = all).")
@click.option("--eval-per-class", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Generated samples per class that score a trial.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--search-space", type=click.Choice(["default", "tiny"]), default="default",
              show_default=True, help="tiny: the same knobs at toy sizes (tests).")
@click.option("--presets", default="default,default", show_default=True,
              help="generator,discriminator presets the searched values override.")
def tune(class_set, data, eval_data, holdout, out, objective, algorithm, trials, epochs,
         validator, max_train_samples, per_class, eval_per_class, seed, search_space, presets):
    """Search GAN hyperparameters with Keras Tuner, scoring trials with the validator."""
    from kepkreator.tuning import TuneConfig, tune as run_tune
    generator_preset, _, discriminator_preset = presets.partition(",")
    cfg = TuneConfig(class_set=class_set, data=list(data), eval_data=list(eval_data),
                     holdout=holdout, out=out, objective=objective, algorithm=algorithm,
                     trials=trials, epochs=epochs, validator=validator,
                     max_train_samples=max_train_samples, per_class=per_class,
                     eval_per_class=eval_per_class, seed=seed, search_space=search_space,
                     generator_preset=generator_preset,
                     discriminator_preset=discriminator_preset or "default")
    summary = run_tune(cfg, log=lambda m: click.echo(m, err=True))
    click.echo((Path(out) / "results.md").read_text())
    click.echo(f"best bundle: {summary['best_bundle']}")


_models = [
    click.option("--digits", "digits_refs", default="default:digits,default:digits",
                 show_default=True, help="generator,validator bundles for digits ('' = none)."),
    click.option("--letters", "letters_refs", default="default:letters,default:letters",
                 show_default=True, help="generator,validator bundles for letters ('' = none)."),
    click.option("--case-validator", "case_ref", default="default:letters52", show_default=True,
                 help="Case-sensitive validator that picks, for a case-merged letters "
                      "generator, a candidate in the typed case ('' = either case)."),
]


def _renderer(digits_refs: str, letters_refs: str, case_ref: str):
    from kepkreator.errors import KepKreatorError
    from kepkreator.handwriting import TextRenderer
    roles = [(option, refs.split(","), kind) for option, refs, kind in (
        ("--digits", digits_refs, str.isdigit), ("--letters", letters_refs, str.isalpha)) if refs]
    if not roles or any(len(pair) != 2 for _, pair, _ in roles):
        raise click.BadParameter("give generator,validator bundle pairs",
                                 param_hint="--digits/--letters")
    renderer = TextRenderer([pair[0] for _, pair, _ in roles], [pair[1] for _, pair, _ in roles],
                            case_ref or None)
    # Each pair writes what its option names: a letters pair given as --digits used to be taken,
    # and the digits were then "not in the loaded class sets".
    for (option, pair, kind), (generator, _) in zip(roles, renderer.models):
        if not any(kind(ch) for ch in generator.class_set.chars):
            raise KepKreatorError(f"{option} {pair[0]} is a {generator.class_set.name!r} "
                                  f"generator: it writes no {option[2:]}")
    return renderer


@cli.command()
@click.argument("text")
@click.option("-o", "--out", required=True, type=LocalPath(dir_okay=False), help="PNG to write.")
@click.option("--best-of", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Candidates per character; the validator's most confident one is kept "
                   "(more, up to 64, for a letter whose kept candidate is not surely, P >= 0.9, "
                   "in the typed case).")
@click.option("--seed", type=SEED, default=None, help="Same seed, same picture.")
@click.option("--scale", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--json-out", type=LocalPath(dir_okay=False), default=None,
              help="Also write each character's class, confidences and box [x, y, width, "
                   "height] in the PNG's pixels: the line as labelled data.")
@_with(_models)
def render(text, out, best_of, seed, scale, json_out, digits_refs, letters_refs, case_ref):
    """Write TEXT in generated handwriting, e.g. kepkreator render "Hello2024" -o hello.png."""
    _check_report_path(json_out)
    renderer = _renderer(digits_refs, letters_refs, case_ref)
    rendered = renderer.render(text, best_of=best_of, seed=seed)
    # The labels first, the picture last: a failed write leaves no picture without its labels.
    _write_report(json_out, {"text": text, "png": str(out), "best_of": best_of, "seed": seed,
                             **rendered.labels(scale)})
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(rendered.png(scale))
    except OSError:
        if json_out:
            Path(json_out).unlink(missing_ok=True)
        raise
    scores = "  ".join(f"{c['char']}:{c['confidence']:.3f}"
                       + (f" (case {c['case_confidence']:.2f})" if "case_confidence" in c else "")
                       for c in rendered.characters if "confidence" in c)
    click.echo(f"{out}: {rendered.image.shape[1] * scale}x{rendered.image.shape[0] * scale}, "
               f"best of {best_of}; confidence {scores}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-cost", type=click.IntRange(1), default=1024, show_default=True,
              help="Largest request, in candidates (characters x best_of) plus the PNG's "
                   "pixels (100,000 per unit); larger ones are a 422 naming the limit.")
@click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Requests rendering at once (they take turns at the models).")
@click.option("--max-queued", type=click.IntRange(0, 10_000), default=32, show_default=True,
              help="Requests waiting for a render place; beyond, a 503 with Retry-After.")
@_with(_models)
def serve(host, port, max_cost, max_in_flight, max_queued, digits_refs, letters_refs, case_ref):
    """HTTP API (GET /generate/{text}, PNG or ?format=json) and a page at / to try it."""
    import socket

    import uvicorn

    from kepkreator.errors import KepKreatorError
    from kepkreator.server import Limits, create_app
    app = create_app(_renderer(digits_refs, letters_refs, case_ref),  # models load once, here
                     Limits(max_cost=max_cost, max_in_flight=max_in_flight,
                            max_queued=max_queued))
    # Bound here and handed to uvicorn: a taken port or an unknown host is one line before any
    # "serving on", which then names the real port (also for --port 0).
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise KepKreatorError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    click.echo(f"serving on http://{host}:{bound}/", err=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=bound, log_level="warning")).run(
        sockets=[sock])


@cli.command()
@click.argument("bundle")
@click.option("--data", "data", multiple=True, required=True, callback=_sources,
              help="Real, held-out images: the same sources as train's --data.")
@click.option("--holdout", type=FiniteRange(0, 0.9, min_open=True), default=None,
              help="Keep only the hash holdout of --data that `train --holdout F` leaves out "
                   "(seed --split-seed).")
@click.option("--split-seed", type=SEED, default=0, show_default=True)
@click.option("--per-class", type=click.IntRange(20, 5000), default=500, show_default=True,
              help="Real images per class in the bank (as many others measure the yardstick).")
@click.option("--seed", type=SEED, default=0, show_default=True)
def reference(bundle, data, holdout, split_seed, per_class, seed):
    """Give a validator or judge bundle a reference bank: the features of real images, which
    density and coverage (fidelity, diversity) and the realism filter are measured against."""
    from kepkreator.models.bundle import load_bundle
    from kepkreator.reference import add_reference_bank, bank_summary
    class_set = load_bundle(bundle, "validator").class_set
    real = _real_data(data, holdout, split_seed, class_set)
    described = {"sources": list(data), **({"holdout": holdout, "split_seed": split_seed}
                                           if holdout is not None else {})}
    click.echo(bank_summary(add_reference_bank(bundle, real, described, per_class, seed)))


@cli.command("import-model")
@click.argument("model_file", type=LocalPath(dir_okay=False))
@click.option("--card", "card_file", required=True, type=LocalPath(dir_okay=False),
              help="Hand-written card.json describing the model's signature (see jobs/peers/).")
@click.option("--out", required=True, type=LocalPath(file_okay=False), help="Bundle to create.")
def import_model_cmd(model_file, card_file, out):
    """Wrap a foreign Keras file (.keras/.h5) into a bundle, checking the card against it."""
    from kepkreator.models.bundle import import_model, load_bundle
    path = import_model(model_file, card_file, out)
    bundle = load_bundle(path)
    click.echo(f"{bundle.card['kind']} bundle: {path} ({bundle.class_set.name}, "
               f"{bundle.model.count_params()} parameters)")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--spec", required=True, help="Spec file (YAML/JSON) or a quoted glob of them.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: local, or gs://BUCKET/… (needs Google Cloud credentials).")
@click.option("--overwrite", is_flag=True, help="Replace an existing KepKreator output directory.")
@click.option("--shortfall-tolerance", type=FiniteRange(0, 1), default=0.0, show_default=True,
              help="Largest shortfall per class, as a fraction of its request, that still counts "
                   "as complete.")
@click.option("--accelerator", default=None, help="Resource hint for Generate/Score on Dataflow.")
@click.pass_context
def generate(ctx, spec, out, overwrite, shortfall_tolerance, accelerator):
    """Run the generation pipeline on a spec. Extra arguments are Beam pipeline options, e.g.
    --direct_num_workers=2 --direct_running_mode=multi_processing, or --runner=DataflowRunner.

    \b
    Spec keys (README, "Spec"): class_set, generator, validator, counts (required); seed,
    min_confidence, realism, label_policy, latent_scale, judge, formats, shards, split,
    orientation, name, unit_size, max_rounds, max_oversample.
    """
    from kepkreator.errors import KepKreatorError
    from pipeline.run import run
    argv = ["--spec", spec, "--out", out, "--shortfall_tolerance", str(shortfall_tolerance)]
    argv += ["--overwrite"] if overwrite else []
    argv += ["--accelerator", accelerator] if accelerator else []
    result = run(argv + list(ctx.args), show_progress=_progress_printer(),
                 note=lambda line: click.echo(line, err=True))
    if result.metrics is None:  # --dry_run: the runner got the pipeline, nothing ran
        click.echo(f"dry run: pipeline built for {out}; nothing was run or written")
        return
    click.echo("", err=True)
    click.echo(_summary_table(result.metrics))
    if result.failed:
        raise KepKreatorError(result.failed)
    splits = result.manifest["splits"]
    per_split = ("" if len(splits) == 1 else
                 ": " + ", ".join(f"{name} {row['records']}" for name, row in splits.items()))
    click.echo(f"dataset: {result.out} ({result.manifest['records']} samples{per_split}, "
               f"{len(result.manifest['shards'])} shards, {result.metrics['seconds']:.1f} s)")


def _progress_printer():
    """accepted/requested overall, the rate and time left, and the classes furthest behind; a
    live line on a terminal, a line every 15 s otherwise."""
    import time
    tty = sys.stderr.isatty()
    state = {"last": 0.0, "start": time.time()}

    def show(accepted, requested, generated, labels):
        now = time.time()
        if not generated or (not tty and now - state["last"] < 15):
            return
        state["last"] = now
        wanted = [c for c in range(len(requested)) if requested[c]]
        behind = sorted(wanted, key=lambda c: accepted[c] / requested[c])[:4]
        done, total = int(accepted.sum()), int(requested.sum())
        rate = done / max(now - state["start"], 1e-9)
        left = f"{(total - done) / rate:,.0f} s left" if rate > 0 else "-"
        line = (f"accepted {done:,}/{total:,} ({int(generated):,} generated; {rate:,.0f}/s, "
                f"{left})  "
                + " ".join(f"{labels[c]}:{int(accepted[c])}/{int(requested[c])}" for c in behind))
        if tty:
            click.echo("\r" + line.ljust(100), nl=False, err=True)
        else:
            click.echo(line, err=True)
    return show


def _summary_table(metrics: dict) -> str:
    judged = "judge" in metrics
    lines = [f"{'class':>5} {'requested':>10} {'accepted':>10} {'generated':>10} "
             f"{'passed%':>8} {'conf':>6}" + (f" {'judge:gen':>9} {'kept':>7}" if judged else "")]
    percent = lambda x: f"{100 * x:.2f}%" if x is not None else "-"
    for label, row in metrics["per_class"].items():
        rate = row["acceptance_rate"]
        conf = row["mean_confidence_accepted"]
        lines.append(f"{label:>5} {row['requested']:>10,} {row['accepted']:>10,} "
                     f"{row['generated']:>10,} {100 * rate if rate is not None else 0:>7.1f}% "
                     f"{conf if conf is not None else 0:>6.3f}"
                     + (f" {percent(row['judge_agreement_generated']):>9} "
                        f"{percent(row['judge_agreement_accepted']):>7}" if judged else ""))
    lines.append(f"{'all':>5} {metrics['requested']:>10,} {metrics['accepted']:>10,} "
                 f"{metrics['generated']:>10,} "
                 f"{100 * metrics['passed_filter'] / max(metrics['generated'], 1):>7.1f}%"
                 + (f" {'':>6} {percent(metrics['judge']['agreement_generated']):>9} "
                    f"{percent(metrics['judge']['agreement_accepted']):>7}" if judged else ""))
    m = metrics["generated_samples"]
    if m["samples"]:
        lines.append(f"validator on all candidates: agreement {m['agreement']:.4f}  "
                     f"BCIS {m['bcis']:.3f}  WCIS {m['wcis']:.3f}")
    if judged:
        lines.append(f"independent judge agrees with {percent(metrics['judge']['agreement_accepted'])}"
                     f" of the kept labels ({percent(metrics['judge']['agreement_generated'])} of "
                     "all candidates)")
    fidelity = metrics.get("fidelity")
    if fidelity:
        real = fidelity["real_vs_real"]
        lines.append(f"kept vs real (judge features, {fidelity['samples_per_class']} per class): "
                     f"density {fidelity['density']:.3f}  coverage {fidelity['coverage']:.3f}  "
                     f"(real vs real: {real['density']:.3f}, {real['coverage']:.3f})")
    return "\n".join(lines)


@cli.command()
@click.argument("directory", type=LocalPath())
def inspect(directory):
    """Verify a dataset folder against its manifest (every listed file's sha256, nothing
    unlisted), then show its counts and metrics."""
    from kepkreator.data.generated import verify_folder
    from kepkreator.errors import DataError, KepKreatorError
    manifest, problems = verify_folder(Path(directory))
    if problems:
        raise KepKreatorError(f"{directory} does not verify: {len(problems)} problem(s): "
                              f"{'; '.join(problems[:5])}")
    splits = manifest["splits"]
    named = ", ".join(f"{split} {row['records']:,}" if len(splits) > 1 else split
                      for split, row in splits.items())
    click.echo(f"{manifest['name']} ({manifest['class_set']}, split{'s' * (len(splits) > 1)} "
               f"{named}): {manifest['records']:,} samples in {len(manifest['shards'])} shards, "
               f"formats {', '.join(manifest['formats'])}")
    click.echo("counts: " + ", ".join(f"{k}={v}" for k, v in manifest["counts"].items()))
    if "metrics.json" in manifest["metadata"]:
        try:
            click.echo(_summary_table(json.loads((Path(directory) / "metrics.json").read_text())))
        except (ValueError, KeyError, TypeError) as exc:  # checksummed, so written so by us
            raise DataError(f"{directory}/metrics.json is not a metrics file: {exc}") from None
    files = sum(len(s["files"]) for s in manifest["shards"]) + len(manifest["metadata"])
    click.echo(f"verified: {files} files match their sha256 in manifest.json "
               f"({sum(len(s['files']) for s in manifest['shards'])} shards, "
               f"{len(manifest['metadata'])} metadata); no other file in the folder")


def main(argv=None, command: click.Command | None = None) -> int:
    """Entry point: one-line errors, no tracebacks for anything the user can fix. ``command``:
    another click command (a job script) run under the same rules."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.interrupt import terminate_like_ctrl_c
    quiet_tensorflow_import()
    terminate_like_ctrl_c()
    try:
        (command or cli).main(args=argv, prog_name="kepkreator", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("kepkreator: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"kepkreator: error: {exc.format_message()}", err=True)
        return 2
    except KepKreatorError as exc:
        click.echo(f"kepkreator: error: {exc}", err=True)
        return 2
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) and exc.filename and Path(exc.filename).is_file():
            reason = "a file where a folder is needed"  # mkdir's "File exists" misleads
        click.echo(f"kepkreator: error: {reason}: {exc.filename or ''}".rstrip(": "), err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("kepkreator: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
