"""Would the discriminator's score make a better realism filter? (docs/sampling.md, *Two more
attempts*)

    .venv/bin/python -m experiments.discriminator_rejection --workdir runs/digits-cont16/work \
        --generator runs/digits-cont16/generator [--scale 1.5] [--steps 600] [--per-class 1500]
        [--mnist ../shared/data/mnist]

Discriminator rejection sampling (Azadi et al. 2019) needs the discriminator, which bundles do
not carry, so this reads it from a digits training run's checkpoint (``train gan --workdir``,
default architecture) whose generator bundle is ``--generator``. A discriminator at equilibrium
hardly tells real from generated, so it is first fine-tuned ``--steps`` batches against the
frozen EMA generator at the sampling scale, as the paper does; then it ranks the candidates the
shipped validator keeps at confidence ≥ 0.99, and keeping the top fraction of each class is
measured by the shipped judge, which neither network saw: precision / recall, density /
coverage of 400 kept per class against the judge's bank, and the judge's agreement.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FRACTIONS = (1.0, 0.8, 0.6, 0.45)
SHOWN = 400  # kept samples per class measured, as the pipeline's fidelity figures


def top_of_each_class(ranked, candidates, labels, fraction: float):
    """Mask of the best-ranked ``fraction`` of each class's candidates, so every class loses
    the same share and the per-class counts stay in proportion."""
    keep = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(candidates & (labels == c))
        best_first = rows[np.argsort(-ranked[rows], kind="stable")]
        keep[best_first[:int(round(fraction * len(rows)))]] = True
    return keep


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--scale", type=float, default=1.5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--per-class", type=int, default=1500)
    parser.add_argument("--mnist", default="../shared/data/mnist", help="MNIST IDX directory")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from kepkreator.data import idx
    from kepkreator.models.bundle import load_bundle, to_model_range
    from kepkreator.training.gan import GANHParams, build_gan

    gan = build_gan(GANHParams(class_set="digits", data=["unused"], out="unused",
                               jit_compile=False))
    gan.load_weights(str(Path(args.workdir) / "backup" / "latest.weights.h5"))
    generator = load_bundle(args.generator, "generator")
    validator = load_bundle("default:digits", "validator")
    judge = load_bundle("default:digits", "judge")
    bank = judge.reference_bank()
    disc, ema = gan.discriminator, gan.ema_generator
    train_images, train_labels, _ = idx.load_idx_split(args.mnist, "mnist", "train")
    test_images, test_labels, _ = idx.load_idx_split(args.mnist, "mnist", "test")
    rng = np.random.default_rng(1)

    def model_range(images):  # what the discriminator was trained on
        return to_model_range(images, "tanh")[..., None]

    def as_labels(labels):
        return np.asarray(labels, "int32").reshape(-1, 1)

    def scores(x, labels):
        return np.concatenate([np.asarray(disc([x[i:i + 2000], as_labels(labels[i:i + 2000])],
                                               training=False)[0]).ravel()
                               for i in range(0, len(x), 2000)])

    def draw(n, seed_rng):
        labels = np.repeat(np.arange(10), n)
        z = generator.sample_latent(seed_rng, len(labels), args.scale).astype("float32")
        raw = np.concatenate([np.asarray(ema.predict_on_batch([z[i:i + 2000],
                                                               as_labels(labels[i:i + 2000])]))
                              for i in range(0, len(z), 2000)])
        return raw, labels

    def separation():
        """P(score of a real test digit > score of a sample): 0.5 when D cannot tell them."""
        raw, labels = draw(400, rng)
        fake = scores(raw, labels)
        real = scores(model_range(test_images[:4000]), test_labels[:4000])
        return float((real[:, None] > fake[None, :]).mean())

    optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5)

    @tf.function
    def step(real, real_labels, z, fake_labels):
        fake = ema([z, fake_labels], training=False)
        with tf.GradientTape() as tape:
            loss = (tf.reduce_mean(tf.nn.softplus(-disc([real, real_labels], training=True)[0]))
                    + tf.reduce_mean(tf.nn.softplus(disc([fake, fake_labels], training=True)[0])))
        # The class head has no part in this loss: only the layers with a gradient move.
        pairs = [(g, v) for g, v in zip(tape.gradient(loss, disc.trainable_variables),
                                        disc.trainable_variables) if g is not None]
        optimizer.apply_gradients(pairs)

    print(f"discriminator separation, real test digits vs samples at {args.scale:g}: "
          f"{separation():.3f}", end="")
    for _ in range(args.steps):
        rows = rng.integers(0, len(train_images), 128)
        step(model_range(train_images[rows]), as_labels(train_labels[rows]),
             generator.sample_latent(rng, 128, args.scale).astype("float32"),
             as_labels(rng.integers(0, 10, 128)))
    print(f"; after {args.steps} steps fine-tuning it: {separation():.3f}")

    raw, labels = draw(args.per_class, np.random.default_rng(0))
    images = generator.postprocess(raw)
    confident = validator.probabilities(images)[np.arange(len(labels)), labels] >= 0.99
    ranked = scores(raw, labels)
    judge_probs, features = judge.scores(images)
    inside = bank.inside(features, labels)
    print(f"mean score of the confident samples inside / outside the judge's real manifold: "
          f"{ranked[confident & inside].mean():.3f} / {ranked[confident & ~inside].mean():.3f}")
    print("| kept by D (of the confident) | kept of all | precision / recall | density / coverage "
          "| judge agrees |\n|---|---|---|---|---|")
    for fraction in FRACTIONS:
        keep = top_of_each_class(ranked, confident, labels, fraction)
        shown = np.concatenate([np.random.default_rng(2).permutation(
            np.flatnonzero(keep & (labels == c)))[:SHOWN] for c in range(10)])
        f = bank.compare(features[shown], labels[shown])
        agrees = (judge_probs[keep].argmax(1) == labels[keep]).mean()
        print(f"| top {fraction:.0%} | {keep.mean():.1%} | {f['precision']:.3f} / "
              f"{f['recall']:.3f} | {f['density']:.3f} / {f['coverage']:.3f} | {agrees:.2%} |")


if __name__ == "__main__":
    main()
