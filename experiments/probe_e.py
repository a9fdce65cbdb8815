"""Setting e on validation data: how a subset-side generator and filter would change e_aug,
measured without touching the test set (the "Why (e) is missed" probes in
docs/downstream-study.md).

The reference classifier (seed 0, the study's schedule) trains on the 200-per-class MNIST subset
plus N accepted samples per class and is tested on 10,000 MNIST-train images outside the subset.
    .venv/bin/python -m experiments.probe_e GENERATOR VALIDATOR --per-class 50,200,2000 [--augment]
GENERATOR none: the subset alone (c / c_aug); elastic:ALPHA,SIGMA: random elastic distortions
(Simard et al. 2003) of the subset's own images instead of a generator — the unlearnt control for
a generator that redraws them (the warp preset); real: more real images (from neither the
subset nor the validation set) — a perfect generator, the most any synthetic data could add.
VALIDATOR is unused for both.
"""
from __future__ import annotations

import os
import sys

import click
import numpy as np

from kepkreator.cli import main as run_command
from kepkreator.thresholds import sure_of

VALIDATION_SEED = 123  # which 10,000 images outside the subset are the validation set


def validation_split(train, per_class: int, subset_seed: int, size: int = 10000,
                     with_rest: bool = False):
    """(subset, validation): the study's subset and ``size`` other images of the same source;
    ``with_rest`` adds a third part, the images in neither."""
    from kepkreator.data import per_class_subset as pick
    inside = pick(train.labels, train.class_set.num_classes, per_class, subset_seed)
    outside = np.setdiff1d(np.arange(len(train)), inside)
    chosen = np.random.default_rng(VALIDATION_SEED).choice(outside, size, replace=False)
    parts = train.subset(inside), train.subset(np.sort(chosen))
    if with_rest:
        return (*parts, train.subset(np.setdiff1d(outside, chosen)))
    return parts


def accepted_samples(generator, validator, per_class: int, min_confidence: float,
                     latent_scale: float, seed: int = 0, batch: int = 4096):
    """``per_class`` samples of every class that the validator gives their label with at least
    ``min_confidence`` — the pipeline's filter, run in-process for a quick probe."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(generator.class_set.num_classes):
        kept, drawn = [], 0
        while sum(len(k) for k in kept) < per_class:
            if drawn > 200 * per_class + 10 * batch:
                raise click.ClickException(f"class {c}: too few samples pass min_confidence "
                                           f"{min_confidence}")
            x = generator.generate(generator.sample_latent(rng, batch, latent_scale),
                                   np.full(batch, c))
            p = validator.probabilities(x)
            ok = sure_of(p, np.full(len(x), c), min_confidence)
            kept.append(x[ok])
            drawn += batch
        images.append(np.concatenate(kept)[:per_class])
        labels.append(np.full(per_class, c))
    return np.concatenate(images), np.concatenate(labels)


def _blur(fields: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (n, h, w) along both image axes (no SciPy in the environment)."""
    radius = int(3 * sigma)
    kernel = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    kernel /= kernel.sum()
    for axis in (1, 2):
        fields = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, fields)
    return fields


def elastic_distortions(images: np.ndarray, alpha: float, sigma: float, seed: int = 0):
    """Every image resampled along a smooth random displacement field (bilinear, background
    outside the frame): Simard et al.'s elastic distortion, through the warp generator's own
    resampling layer (its stroke-width channel left at zero)."""
    from kepkreator.models.networks import WarpImage
    rng = np.random.default_rng(seed)
    n, size = len(images), images.shape[1]
    dy, dx = (alpha * _blur(rng.uniform(-1, 1, (n, size, size)), sigma) for _ in range(2))
    field = np.stack([dy, dx, np.zeros_like(dy)], -1).astype(np.float32)
    warp, out = WarpImage(max_shift=1.0), []
    for start in range(0, n, 4096):
        batch = images[start:start + 4096, ..., None].astype(np.float32) / 127.5 - 1.0
        out.append(np.asarray(warp([batch, field[start:start + 4096]]))[..., 0])
    return np.clip(np.rint((np.concatenate(out) + 1.0) * 127.5), 0, 255).astype(np.uint8)


@click.command()
@click.argument("generator")
@click.argument("validator")
@click.option("--data", default=os.path.join(os.environ.get("DATA", "../shared/data"), "mnist"),
              show_default=True, help="MNIST directory.")
@click.option("--per-class", default="50,200,2000", show_default=True,
              help="Synthetic samples per class, comma-separated; one classifier each.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--latent-scale", type=click.FloatRange(0, 10, min_open=True), default=1.0,
              show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=1500, show_default=True)
@click.option("--subset-per-class", type=click.IntRange(1), default=200, show_default=True)
@click.option("--validation-size", type=click.IntRange(1), default=10000, show_default=True)
def main(generator, validator, data, per_class, min_confidence, latent_scale, augment, steps,
         subset_per_class, validation_size):
    from kepkreator.data import Dataset, load_sources
    from kepkreator.cas import ReferenceTraining, train_and_test
    from kepkreator.downstream import concat
    from kepkreator.models.bundle import load_bundle
    amounts = [int(n) for n in per_class.split(",")]
    train = load_sources([f"mnist:train@{data}"], "digits")
    subset, validation, rest = validation_split(train, subset_per_class, 0, validation_size, True)
    schedule = ReferenceTraining(steps=steps)
    if generator == "none":
        result = train_and_test(subset, validation, 0, augment=augment, schedule=schedule)
        click.echo(f"subset alone, augment {augment}: validation {100 * result['accuracy']:.2f}%")
        return
    if generator == "real":
        from kepkreator.data import per_class_subset as pick
        extra = rest.subset(pick(rest.labels, 10, max(amounts), 0))
        index = np.argsort(extra.labels, kind="stable")
        images, labels = extra.images[index], extra.labels[index]
    elif generator.startswith("elastic:"):
        try:
            alpha, sigma = (float(v) for v in generator.split(":", 1)[1].split(","))
        except ValueError:
            raise click.BadParameter(f"{generator!r}: want elastic:ALPHA,SIGMA, e.g. elastic:15,4",
                                     param_hint="GENERATOR") from None
        most = max(amounts)  # each subset image distorted most / subset_per_class times, or once
        index = np.concatenate([np.resize(np.flatnonzero(subset.labels == c), most)
                                for c in range(10)])
        images = elastic_distortions(subset.images[index], alpha, sigma)
        labels = subset.labels[index]
    else:
        gen, judge = load_bundle(generator, "generator"), load_bundle(validator, "validator")
        images, labels = accepted_samples(gen, judge, max(amounts), min_confidence, latent_scale)
    for n in amounts:
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])
        mixed = concat(subset, Dataset(images[keep], labels[keep], train.class_set, []))
        result = train_and_test(mixed, validation, 0, augment=augment, schedule=schedule)
        source = (generator if generator == "real" or generator.startswith("elastic:") else
                  f"min_confidence {min_confidence}, latent scale {latent_scale}")
        click.echo(f"{n} per class, {source}, augment {augment}: "
                   f"validation {100 * result['accuracy']:.2f}%")


if __name__ == "__main__":
    sys.exit(run_command(command=main))
