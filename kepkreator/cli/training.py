"""Models in: ``train``, ``tune``, ``reference``, ``import-model``, ``mix-generators``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from kepkreator.backend import require_tensorflow
from kepkreator.cli.group import cli, train
from kepkreator.cli.options import (DATA_OPTIONS, SEED, TRAINING_OPTIONS, FiniteRange,
                                    LocalPath, check_sources, drop_none, with_options)


@train.command("validator")
@with_options(TRAINING_OPTIONS)
@click.option("--preset", default="default", show_default=True, help="default or tiny")
@click.option("--no-augment", is_flag=True, help="Train without shifts/rotations/zoom.")
def train_validator_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                        per_class, subset_seed, max_train_samples, workdir, preset, no_augment):
    """Train the validation CNN that scores and filters generated samples."""
    require_tensorflow("kepkreator train validator")
    from kepkreator.training.validator import ValidatorHParams, train_validator
    hp = ValidatorHParams(**drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout,
        out=out, epochs=epochs, batch_size=batch_size, seed=seed, preset=preset,
        augment=not no_augment, per_class=per_class, subset_seed=subset_seed,
        max_train_samples=max_train_samples, workdir=workdir))
    path = train_validator(hp)
    metrics = json.loads((path / "card.json").read_text())["metrics"]
    click.echo(f"validator bundle: {path}  " + (f"held-out accuracy {metrics['eval_accuracy']:.4f}"
                                               if "eval_accuracy" in metrics else ""))


@train.command("gan")
@with_options(TRAINING_OPTIONS)
@click.option("--generator-preset", default="default", show_default=True,
              help="default, kepkreator-2023, tiny, or warp (warp-tiny): for a few hundred "
                   "images per class, a learnt deformation of the training images themselves.")
@click.option("--discriminator-preset", default="default", show_default=True,
              help="default, kepkreator-2023, tiny, diverse (a minibatch spread channel) or "
                   "spectral (spectral normalisation instead of dropout).")
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
@click.option("--cover-boost", type=click.IntRange(1, 20), default=1, show_default=True,
              help="With --validator: the real images that the --cover-of (else --init-from) "
                   "generator misses occur this many times in each epoch, pushing the training "
                   "towards the styles it lacks.")
@click.option("--cover-of", default="",
              help="Generator bundle whose misses --cover-boost repeats, e.g. a mixture of the "
                   "generators so far, so a new component learns what they miss (default: "
                   "--init-from).")
@click.option("--modes-per-class", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Class splitting: cluster each class into this many modes and condition on "
                   "them, so no way of writing a class is dropped (3 for letters: capital and "
                   "small forms).")
@click.option("--validator", default="", help="Validator bundle to measure the result with.")
@click.option("--eval-per-class", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def train_gan_cmd(class_set, data, eval_data, holdout, out, epochs, batch_size, seed,
                  per_class, subset_seed, max_train_samples, workdir, generator_preset,
                  discriminator_preset, latent_dim, embed_dim, channels, g_lr, d_lr, aux_weight,
                  diff_augment, real_augment, mode_seeking, init_from, cover_boost,
                  cover_of, modes_per_class, validator, eval_per_class):
    """Train a conditional GAN; the bundle holds the (EMA) generator."""
    require_tensorflow("kepkreator train gan")
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.training.gan import GANHParams, train_gan
    if validator:
        resolve_bundle_path(validator, "validator")  # fail before hours of training, not after
    for generator in (init_from, cover_of):
        if generator:
            resolve_bundle_path(generator, "generator")
    hp = GANHParams(**drop_none(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout, out=out,
        epochs=epochs, batch_size=batch_size, seed=seed, max_train_samples=max_train_samples,
        per_class=per_class, subset_seed=subset_seed, diff_augment=diff_augment,
        real_augment=real_augment, mode_seeking=mode_seeking, init_from=init_from, workdir=workdir,
        modes_per_class=modes_per_class, cover_boost=cover_boost,
        cover_of=cover_of, generator_preset=generator_preset,
        discriminator_preset=discriminator_preset, latent_dim=latent_dim, embed_dim=embed_dim,
        channels=channels, g_learning_rate=g_lr, d_learning_rate=d_lr, aux_weight=aux_weight,
        validator=validator, eval_per_class=eval_per_class))
    path = train_gan(hp)
    click.echo(f"generator bundle: {path}")


@cli.command()
@with_options(DATA_OPTIONS)
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
    require_tensorflow("kepkreator tune")
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


@cli.command()
@click.argument("bundle")
@click.option("--data", "data", multiple=True, required=True, callback=check_sources,
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
    from kepkreator.evaluate import real_data
    real = real_data(data, class_set, holdout, split_seed)
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
    from kepkreator.models.bundle import load_bundle
    from kepkreator.models.writing import import_model
    path = import_model(model_file, card_file, out)
    bundle = load_bundle(path)
    click.echo(f"{bundle.card['kind']} bundle: {path} ({bundle.class_set.name}, "
               f"{bundle.model.count_params()} parameters)")


@cli.command("mix-generators")
@click.argument("generators", nargs=-1, required=True)
@click.option("--out", required=True, type=LocalPath(file_okay=False), help="Bundle to create.")
@click.option("--shares", default=None,
              help="Comma-separated share of each generator (default: equal).")
def mix_generators_cmd(generators, out, shares):
    """One generator bundle whose samples come from GENERATORS (same class set and signature),
    each by its share: one pushed towards styles another misses (train gan --cover-boost)
    fills them in."""
    require_tensorflow("kepkreator mix-generators")
    from kepkreator.errors import KepKreatorError
    from kepkreator.models.bundle import resolve_bundle_path
    from kepkreator.models.mixture import mix_generators
    for ref in generators:
        resolve_bundle_path(ref, "generator")
    try:
        parsed = None if shares is None else [float(s) for s in shares.split(",")]
    except ValueError:
        raise KepKreatorError(f"--shares {shares!r}: give numbers, e.g. 0.5,0.5") from None
    path = mix_generators(list(generators), out, parsed)
    click.echo(f"generator bundle: {path} (a mixture of {len(generators)})")
