"""Do two generators' samples together train a better classifier than either's alone?
(docs/sampling.md, twelfth attempt)

    .venv/bin/python -m experiments.generator_mix --out runs/generator-mix \\
        --generators default:digits,runs/cover/generator [--scales 1.5] [--seeds 0,1,2]

Two generators trained apart miss different real digits (the cover-boosted continuation and the
shipped generator share only a third of their misses), so a set drawn half from each may reach
more of the real variety than one generator's draw. Each setting ``S`` draws the latent_prior
experiment's 1,000 candidates per class at scale S, split evenly between the generators (sample
i of a class from generator i mod G), keeps those the shipped validator gives ≥ 0.99, and
measures them as that experiment does: the shipped judge's agreement, density and coverage, and
CAS of the first 900 kept per class (the studies' LeNet, MNIST test set). ``S@k`` draws from the
k-th generator alone, so each generator's own figures come from the same run and seeds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from experiments.latent_prior import (CAS_PER_CLASS, MNIST, PER_CLASS_SAMPLES, THRESHOLD,
                                      run_study)
from kepkreator.thresholds import sure_of


def mixed_draw(generators, scale: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """PER_CLASS_SAMPLES candidates per class, sample i of a class from generator i mod G."""
    num_classes = generators[0].class_set.num_classes
    labels = np.repeat(np.arange(num_classes), PER_CLASS_SAMPLES)
    source = np.tile(np.arange(PER_CLASS_SAMPLES) % len(generators), num_classes)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for g, generator in enumerate(generators):
        rows = np.flatnonzero(source == g)
        z = generator.sample_latent(rng, len(rows), scale)
        images[rows] = generator.generate(z, labels[rows])
    return images, labels


def measure(setting: str, seed: int, generators, validator, judge, test) -> dict:
    from kepkreator.cas import train_and_test
    from kepkreator.data import Dataset
    from kepkreator.evaluate import judge_report
    scale, _, alone = setting.partition("@")
    chosen = [generators[int(alone)]] if alone else generators
    images, labels = mixed_draw(chosen, float(scale), np.random.default_rng(seed))
    accepted = sure_of(validator.probabilities(images), labels, THRESHOLD)
    report = judge_report(judge, images, labels, accepted, validator.class_set.chars)
    kept = np.concatenate([np.flatnonzero(accepted & (labels == c))[:CAS_PER_CLASS]
                           for c in np.unique(labels)])
    cas = train_and_test(Dataset(images[kept], labels[kept], validator.class_set), test, seed)
    return {"setting": setting, "seed": seed, "accepted": float(accepted.mean()),
            "judge_agreement_accepted": report["accepted"]["agreement"],
            "density": report["accepted"]["density"], "coverage": report["accepted"]["coverage"],
            "cas": cas["accuracy"], "cas_train_samples": len(kept)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generators", required=True, help="comma-separated bundles")
    parser.add_argument("--scales", default="1.5",
                        help="settings: S (the mix at scale S) or S@k (generator k alone)")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)

    from kepkreator.data import load_sources
    from kepkreator.models.bundle import load_bundle, require_class_set
    validator, judge = (load_bundle("default:digits", kind) for kind in ("validator", "judge"))
    generators = [load_bundle(ref, "generator") for ref in args.generators.split(",")]
    for generator in generators:
        require_class_set(generator, validator.class_set, "generator", "the validator's")
    train = load_sources([f"mnist:train@{MNIST}"], "digits")
    test = load_sources([f"mnist:test@{MNIST}"], "digits")
    args.out.mkdir(parents=True, exist_ok=True)
    run_study(args.out, args.seeds, args.scales, train, test,
              lambda setting, seed: measure(setting, seed, generators, validator, judge, test))


if __name__ == "__main__":
    main()
