"""``downstream`` and ``tune-sampling``: is the data worth training on, and at which
sampling settings."""
from __future__ import annotations

from pathlib import Path

import click

from kepkreator.backend import require_tensorflow
from kepkreator.cas import REFERENCE_CLASSIFIERS
from kepkreator.cli.group import cli
from kepkreator.cli.options import (DATA_OPTIONS, FiniteRange, LocalPath, confidence_option,
                                    seed_list, with_options)


def generate_with_pipeline(spec: dict, directory: Path) -> Path:
    """The studies' synthetic data comes from the real pipeline (``run_job``, with the spec as
    an object; relative bundle paths as typed, from the working directory), read back from its
    output."""
    from kepkreator.errors import KepKreatorError
    from pipeline.options import GenerateOptions
    from pipeline.run import run_job
    from pipeline.specs import parse_spec
    job = parse_spec(spec, where=f"the study's spec for {directory}", base_dir=Path.cwd())
    # Flags given, so Beam does not read this process's command line (the study's own options).
    options = GenerateOptions([], overwrite=True)
    result = run_job(job, str(directory), options)
    if result.failed:
        raise KepKreatorError(result.failed)
    return Path(result.out)


def _downstream_card_key(ctx, param, value):
    """Only study keys: --card-key evaluation would overwrite the generator's evaluation."""
    if not value.startswith("downstream"):
        raise click.BadParameter(f"must start with 'downstream', got {value!r}", ctx, param)
    return value


STUDY_OPTIONS = [
    click.option("--seeds", default="0,1,2", show_default=True, callback=seed_list),
    click.option("--generator", default="",
                 help="Generator for b and d (default: the shipped one)."),
    click.option("--validator", default="",
                 help="Validator for b and d (default: the shipped one)."),
    click.option("--min-confidence", default="", callback=confidence_option,
                 help="Filter threshold: a number in [0, 1), or per class, e.g. 0.9,I=0.5 "
                      "(downstream: the generator card's, as a spec that names none; "
                      "tune-sampling: 0.9)."),
    click.option("--steps", type=click.IntRange(1), default=1500, show_default=True,
                 help="Reference classifier updates, the same for every setting."),
    click.option("--reference-classifier", type=click.Choice(REFERENCE_CLASSIFIERS),
                 default="lenet", show_default=True,
                 help="The classifier every setting trains: lenet (fast), or convnet4 (four "
                      "3x3 convolutions, ~99.5% on MNIST; give --steps for six epochs, e.g. "
                      "2800 at batch 128)."),
]


@cli.command()
@with_options(DATA_OPTIONS)
@click.option("--out", required=True, type=LocalPath(file_okay=False),
              help="Study directory: reports, generated datasets, subset models, per-run "
                   "results. Re-running resumes.")
@click.option("--settings", default="a,b,c,c_aug,d,d_aug,e,e_aug",
              show_default=True, help="Which settings to run; add ceiling_aug for the control "
                                      "with other real images in place of the synthetic ones.")
@with_options(STUDY_OPTIONS)
@click.option("--per-class", type=click.IntRange(1), default=200, show_default=True,
              help="Real samples per class in the low-data settings (c, c_aug, d, d_aug, e).")
@click.option("--synthetic-per-class", type=click.IntRange(1, 100_000), default=2000,
              show_default=True,
              help="Synthetic samples per class added to the subset in d, d_aug and e.")
@click.option("--latent-scale", type=FiniteRange(0, 10, min_open=True), default=None,
              help="z ~ N(0, s^2) for every generated set (default: each generator at its own "
                   "card's choice, see tune-sampling; the subset-only one has none: 1).")
@click.option("--realism", type=FiniteRange(0, 10, min_open=True), default=None,
              help="The realism filter's strength for the shipped generator's sets (b, d); "
                   "default: as a spec that does not name it (the generator card's choice).")
@click.option("--generation-seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the generated sets (and of the subset-only models): --seeds vary the "
                   "reference classifier on one draw of data, this draws other data.")
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
               reference_classifier, latent_scale, realism, generation_seed,
               subset_validator_epochs,
               subset_gan_epochs, subset_gan_batch_size, subset_presets, subset_aux_weight,
               subset_modes_per_class, subset_mode_seeking, update_card, card_key):
    """Is the synthetic data worth training on? A fixed reference classifier per setting, tested
    on real data: full real (a), synthetic only (b), a small real subset (c, c_aug), the subset
    plus synthetic from the shipped generator (d; d_aug with classic augmentation too) or from one
    trained on the subset alone (e)."""
    require_tensorflow("kepkreator downstream")
    from kepkreator.cas import ReferenceTraining
    from kepkreator.downstream import DownstreamConfig, run_study
    presets = subset_presets.split(",")
    if len(presets) != 3:
        raise click.BadParameter("needs three comma-separated presets",
                                 param_hint="--subset-presets")
    cfg = DownstreamConfig(
        class_set=class_set, data=list(data), eval_data=list(eval_data), holdout=holdout, out=out,
        settings=tuple(s.strip() for s in settings.split(",")), seeds=seeds, per_class=per_class,
        synthetic_per_class=synthetic_per_class, generator=generator, validator=validator,
        min_confidence=min_confidence,
        training=ReferenceTraining(steps=steps, classifier=reference_classifier),
        subset_validator_epochs=subset_validator_epochs, subset_gan_epochs=subset_gan_epochs,
        subset_gan_batch_size=subset_gan_batch_size, subset_validator_preset=presets[0],
        subset_generator_preset=presets[1], subset_discriminator_preset=presets[2],
        subset_aux_weight=subset_aux_weight, subset_modes_per_class=subset_modes_per_class,
        subset_mode_seeking=subset_mode_seeking, latent_scale=latent_scale, realism=realism,
        generation_seed=generation_seed)

    report = run_study(cfg, generate_with_pipeline, log=lambda m: click.echo(m, err=True))
    if update_card:
        from kepkreator.study_report import card_summary
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
@with_options(DATA_OPTIONS)
@click.option("--out", required=True, type=LocalPath(file_okay=False),
              help="Scan directory: sampling.json/.md, one generated set per scale, per-run "
                   "results. Re-running resumes.")
@with_options(STUDY_OPTIONS)
@click.option("--scales", default="1,1.5,2,2.5,3", show_default=True,
              help="Latent scales to try, comma-separated.")
@click.option("--reserve-holdout", type=FiniteRange(0, 0.9), default=0.0,
              help="Leave out this hash holdout of --data first (another study's test set, e.g. "
                   "the letters study's 0.1) and draw --holdout from the rest.")
@click.option("--thresholds", default="",
              help="Filter thresholds to scan with every scale, comma-separated (e.g. "
                   "0.3,0.5,0.7,0.9); in place of --min-confidence.")
@click.option("--realism", "realism_list", default="",
              help="Realism filter strengths to scan with every scale and threshold, comma-"
                   "separated, off among them (e.g. off,1,0.8); none given: off.")
@click.option("--min-judge-agreement", type=FiniteRange(0, 1), default=0.998, show_default=True,
              help="Fidelity floor: the independent judge must agree with this share of the "
                   "kept labels for a setting to be chosen (0: no floor).")
@click.option("--min-precision", type=FiniteRange(0, 1), default=0.0, show_default=True,
              help="Fidelity floor: the share of kept samples inside the real manifold in the "
                   "judge's features (other real images: the judge card's yardstick; 0: no "
                   "floor).")
@click.option("--min-density", type=FiniteRange(0, 10), default=0.0, show_default=True,
              help="Fidelity floor: density of the kept samples against real images in the "
                   "judge's features (real images score about 1; 0: no floor).")
@click.option("--cas-tolerance", type=FiniteRange(0, 0.1), default=0.001, show_default=True,
              help="Settings within this much of the best CAS (0.001: 0.1 pp, about a seed's "
                   "spread) count as tied; the widest coverage among them is chosen.")
@click.option("--update-card", is_flag=True,
              help="Record the chosen scale, threshold and realism strength in the "
                   "generator's card: the pipeline's defaults.")
def tune_sampling(class_set, data, eval_data, holdout, out, seeds, generator, validator,
                  min_confidence, steps, reference_classifier, scales, thresholds, realism_list,
                  reserve_holdout, min_judge_agreement, min_precision, min_density, cas_tolerance,
                  update_card):
    """Choose the generator's latent scale (and filter threshold) by the Classification Accuracy
    Score on held-out real validation data (--holdout of the training source; the test set
    stays unseen)."""
    require_tensorflow("kepkreator tune-sampling")
    from kepkreator.cas import ReferenceTraining
    from kepkreator.downstream import DownstreamConfig
    from kepkreator.sampling import sampling_card_entry, scan_latent_scales
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
    try:
        realism = tuple(None if v.strip() == "off" else float(v)
                        for v in realism_list.split(",")) if realism_list else ()
    except ValueError:
        raise click.BadParameter(f"{realism_list!r} is not a comma-separated list of off and "
                                 "numbers", param_hint="--realism") from None
    cfg = DownstreamConfig(class_set=class_set, data=list(data), eval_data=list(eval_data),
                           holdout=holdout, out=out, settings=("b",), seeds=seeds,
                           generator=generator, validator=validator,
                           min_confidence=0.9 if min_confidence is None else min_confidence,
                           training=ReferenceTraining(steps=steps,
                                                      classifier=reference_classifier),
                           reserve_holdout=reserve_holdout)
    report = scan_latent_scales(cfg, scale_list, generate_with_pipeline,
                                log=lambda m: click.echo(m, err=True), thresholds=threshold_list,
                                floor={"judge_agreement": min_judge_agreement,
                                       "precision": min_precision, "density": min_density},
                                cas_tolerance=cas_tolerance, realism=realism)
    if update_card:
        from kepkreator.evaluate import record_in_card
        from kepkreator.models.bundle import resolve_bundle_path
        from kepkreator.models.card import read_card
        card_path = resolve_bundle_path(generator or f"default:{class_set}", "generator")
        second = (read_card(card_path).get("sampling") or {}).get("second_validator", "")
        record_in_card(card_path, sampling_card_entry(report, second), key="sampling",
                       section=None)
    click.echo((Path(out) / "sampling.md").read_text())
