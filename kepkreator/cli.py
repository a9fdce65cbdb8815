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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


_common_data = [
    click.option("--class-set", required=True, callback=_class_set,
                 help="digits, letters, letters52, balanced, byclass"),
    click.option("--data", "data", multiple=True, required=True, callback=_sources,
                 help="Training source, repeatable: mnist:train@DIR, emnist-byclass:test@DIR, "
                      "folder@DIR."),
    click.option("--eval-data", multiple=True, callback=_sources, help="Held-out source(s); removed from training."),
    click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
                 help="Without --eval-data: hash-split this fraction off as held-out data."),
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Bundle directory to write."),
    click.option("--epochs", type=click.IntRange(1), default=None),
    click.option("--batch-size", type=click.IntRange(1), default=None),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--max-train-samples", type=click.IntRange(0), default=0,
                 help="Use only this many training samples (0 = all)."),
    click.option("--workdir", default="", help="Checkpoints, TensorBoard logs, sample grids "
                                                "(default OUT.work). Re-running resumes."),
]


def _with(options):
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _drop_none(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


@train.command("validator")
@_with(_common_data)
@click.option("--preset", default="default", show_default=True, help="default or tiny")
@click.option("--no-augment", is_flag=True, help="Train without shifts/rotations/zoom.")
def train_validator_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                        max_train_samples, workdir, preset, no_augment):
    """Train the validation CNN that scores and filters generated samples."""
    from kepkreator.training.validator import ValidatorHParams, train_validator
    hp = ValidatorHParams(**_drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout,
        out=out, epochs=epochs, batch_size=batch_size, seed=seed, preset=preset,
        augment=not no_augment, max_train_samples=max_train_samples, workdir=workdir))
    path = train_validator(hp)
    metrics = json.loads((path / "card.json").read_text())["metrics"]
    click.echo(f"validator bundle: {path}  " + (f"held-out accuracy {metrics['eval_accuracy']:.4f}"
                                               if "eval_accuracy" in metrics else ""))


@train.command("gan")
@_with(_common_data)
@click.option("--generator-preset", default="default", show_default=True,
              help="default, kepkreator-2023 or tiny")
@click.option("--discriminator-preset", default="default", show_default=True)
@click.option("--latent-dim", type=click.IntRange(1), default=None)
@click.option("--embed-dim", type=click.IntRange(1), default=None)
@click.option("--channels", type=click.IntRange(4), default=None)
@click.option("--g-lr", type=float, default=None)
@click.option("--d-lr", type=float, default=None)
@click.option("--aux-weight", type=float, default=None)
@click.option("--validator", default="", help="Validator bundle to measure the result with.")
@click.option("--eval-per-class", type=click.IntRange(1), default=1000, show_default=True)
def train_gan_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                  max_train_samples, workdir, generator_preset, discriminator_preset, latent_dim,
                  embed_dim, channels, g_lr, d_lr, aux_weight, validator, eval_per_class):
    """Train a conditional GAN; the bundle holds the (EMA) generator."""
    from kepkreator.training.gan import GANHParams, train_gan
    if validator:
        from kepkreator.models.bundle import resolve_bundle_path
        resolve_bundle_path(validator)  # fail before hours of training, not after
    hp = GANHParams(**_drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout, out=out,
        epochs=epochs, batch_size=batch_size, seed=seed, max_train_samples=max_train_samples,
        workdir=workdir, generator_preset=generator_preset,
        discriminator_preset=discriminator_preset, latent_dim=latent_dim, embed_dim=embed_dim,
        channels=channels, g_learning_rate=g_lr, d_learning_rate=d_lr, aux_weight=aux_weight,
        validator=validator, eval_per_class=eval_per_class))
    path = train_gan(hp)
    click.echo(f"generator bundle: {path}")


@cli.command()
@click.option("--generator", "generator_ref", required=True, help="Bundle dir or default:NAME.")
@click.option("--validator", "validator_ref", required=True, help="Bundle dir or default:NAME.")
@click.option("-n", "--samples", type=click.IntRange(1), default=10000, show_default=True,
              help="Total generated samples, spread evenly over the classes.")
@click.option("--real", "real_sources", multiple=True,
              help="Real data source(s) to compare with (BCIS of real data, Frechet distance).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the JSON report (default: print only).")
@click.option("--update-card", is_flag=True, help="Also record the report in the generator card.")
def evaluate(generator_ref, validator_ref, samples, real_sources, seed, json_out, update_card):
    """Measure a generator with a validator: agreement, IS, BCIS, WCIS, Frechet distance."""
    from kepkreator.evaluate import evaluate_generator, format_table, record_in_card
    from kepkreator.models.bundle import load_bundle, resolve_bundle_path
    real = None
    if real_sources:
        from kepkreator.data import load_sources
        class_set = load_bundle(validator_ref, "validator").class_set
        real = load_sources(list(real_sources), class_set)
    gen_probe = load_bundle(generator_ref, "generator")
    per_class = max(1, samples // gen_probe.class_set.num_classes)
    report = evaluate_generator(generator_ref, validator_ref, per_class, seed, real)
    click.echo(format_table(report))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"report: {json_out}")
    if update_card:
        record_in_card(resolve_bundle_path(generator_ref), report)


@cli.command("import-model")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--card", "card_file", required=True, type=click.Path(dir_okay=False),
              help="Hand-written card.json describing the model's signature (see jobs/peers/).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle to create.")
def import_model_cmd(model_file, card_file, out):
    """Wrap a foreign Keras file (.keras/.h5) into a bundle, checking the card against it."""
    from kepkreator.models.bundle import import_model, load_bundle
    path = import_model(model_file, card_file, out)
    bundle = load_bundle(path)
    click.echo(f"{bundle.card['kind']} bundle: {path} ({bundle.class_set.name}, "
               f"{bundle.model.count_params()} parameters)")


def main(argv=None) -> int:
    """Entry point: one-line errors, no tracebacks for anything the user can fix."""
    from kepkreator.errors import KepKreatorError
    try:
        cli.main(args=argv, prog_name="kepkreator", standalone_mode=False)
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
        click.echo(f"kepkreator: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                   err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("kepkreator: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
