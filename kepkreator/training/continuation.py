"""Continuing from a trained generator: copy its weights, and find the real images a generator
(that one, or a mixture of those so far) misses so the training can show them to the
discriminator more often.

A real image is *missed* when none of several samples per real image of its class lies within
the image's k-nearest-neighbour radius among the real images of its class, in a validator's
features: the coverage test of ``kepkreator.manifold``, image by image. Repeating the missed
images (the reweighting of AdaGAN, Tolstikhin et al. 2017, applied to one generator) puts the
discriminator's pressure where the generator's samples are absent; a conditional GAN otherwise
keeps drawing each class's common styles and drops the rarer ones.
"""
from __future__ import annotations

import numpy as np

from kepkreator.manifold import NEIGHBOURS, knn_radii, squared_distances


def warm_start(generator, source) -> dict:
    """Copy ``source``'s weights into ``generator`` layer by layer where the shapes agree."""
    from kepkreator.errors import KepKreatorError
    target_layers = [layer for layer in generator.layers if layer.weights]
    source_layers = [layer for layer in source.layers if layer.weights]
    if len(target_layers) != len(source_layers):
        raise KepKreatorError(f"cannot start from a generator with {len(source_layers)} weighted "
                              f"layers: this architecture has {len(target_layers)}")
    copied, fresh = [], []
    for target, origin in zip(target_layers, source_layers):
        shapes = [tuple(w.shape) for w in target.weights]
        if type(target) is type(origin) and shapes == [tuple(w.shape) for w in origin.weights]:
            target.set_weights(origin.get_weights())
            copied.append(target.name)
        else:
            fresh.append(target.name)
    if not copied or all(name.startswith("label_embedding") for name in copied):
        raise KepKreatorError("the generator to start from shares no layer shapes with this one")
    return {"copied_layers": len(copied), "fresh_layers": fresh}


def missed_by(real_features: np.ndarray, real_labels: np.ndarray, sample_features: np.ndarray,
              sample_labels: np.ndarray, k: int = NEIGHBOURS, chunk: int = 2048) -> np.ndarray:
    """True for each real image that no sample of its class reaches (within its k-NN radius)."""
    missed = np.zeros(len(real_labels), bool)
    for c in np.unique(real_labels):
        rows = np.flatnonzero(real_labels == c)
        if len(rows) <= k:  # too few to have a radius: nothing to say about them
            continue
        radii = knn_radii(real_features[rows], k)
        samples = sample_features[sample_labels == c]
        reached = np.zeros(len(rows), bool)
        for lo in range(0, len(samples), chunk):
            reached |= (squared_distances(samples[lo:lo + chunk], real_features[rows])
                        <= radii[None, :] ** 2).any(0)
        missed[rows] = ~reached
    return missed


# Samples per real image. With one each, two draws of the shipped digits generator agree on only
# 40% of the images they miss (an image near the edge is reached by chance); with four, about
# 1.7% of real digits are missed and the two draws share half of them: serif 1s, curled 9s.
DRAWS_PER_REAL = 4


def missed_real_images(generator, validator, images: np.ndarray, labels: np.ndarray,
                       seed: int) -> np.ndarray:
    """``missed_by`` for ``generator`` drawn at its prior's own width (scale 1: what training
    shapes), ``DRAWS_PER_REAL`` samples per real image of each class, in ``validator``'s
    features."""
    rng = np.random.default_rng(seed)
    sample_labels = np.repeat(np.sort(labels), DRAWS_PER_REAL)
    z = generator.sample_latent(rng, len(sample_labels), 1.0)
    samples = generator.generate(z, sample_labels)
    return missed_by(validator.features(images), labels, validator.features(samples),
                     sample_labels)


def boosted_rows(missed: np.ndarray, boost: int) -> np.ndarray:
    """Row indices of a training set in which each missed image occurs ``boost`` times."""
    return np.concatenate([np.arange(len(missed))]
                          + [np.flatnonzero(missed)] * (boost - 1)).astype(np.int64)


def check_cover_boost(hp) -> None:
    from kepkreator.errors import KepKreatorError
    if hp.cover_boost > 1 and not ((hp.cover_of or hp.init_from) and hp.validator):
        raise KepKreatorError("--cover-boost needs --cover-of or --init-from (the generator whose "
                              "misses are boosted) and --validator (whose features tell what it "
                              "misses)")
    if hp.cover_of and hp.cover_boost == 1:
        raise KepKreatorError("--cover-of names whose misses --cover-boost repeats: give "
                              "--cover-boost 2 or more")


def boost_missed(hp, train):
    """Rows of ``train`` with the images ``hp.cover_of`` (else ``hp.init_from``) misses
    repeated, and the card's account. Misses are found per class, as a generator is asked for
    classes; with class splitting each repeated image keeps its mode label."""
    from kepkreator.models.bundle import load_bundle, load_validator_for, require_class_set
    of = hp.cover_of or hp.init_from
    generator = load_bundle(of, "generator")
    require_class_set(generator, train.class_set, "--cover-of" if hp.cover_of else "--init-from",
                      "the training data's")
    missed = missed_real_images(generator, load_validator_for(hp.validator, train.class_set),
                                train.images, train.labels, hp.seed)
    rows = boosted_rows(missed, hp.cover_boost)
    info = {"boost": hp.cover_boost, "generator": of, "missed": int(missed.sum()),
            "of": len(missed),
            "images_per_epoch": len(rows),
            "missed_per_class": np.bincount(train.labels[missed],
                                            minlength=train.class_set.num_classes).tolist(),
            "found_by": f"no sample of that generator (scale 1, {DRAWS_PER_REAL} per real "
                        "image) within the image's 5-NN radius among its class, in the "
                        "validator's features"}
    return rows, info
