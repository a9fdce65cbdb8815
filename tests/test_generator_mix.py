"""experiments/generator_mix.py: a candidate set drawn half from each of two generators."""
import numpy as np

from experiments.generator_mix import PER_CLASS_SAMPLES, mixed_draw
from kepkreator.models.bundle import load_bundle


def test_sample_i_of_each_class_comes_from_generator_i_mod_g(tiny):
    first, second = load_bundle(tiny[0], "generator"), load_bundle(tiny[0], "generator")
    second.model.set_weights([w + 0.5 for w in second.model.get_weights()])
    images, labels = mixed_draw([first, second], 1.5, np.random.default_rng(0))
    assert len(labels) == 10 * PER_CLASS_SAMPLES
    assert (np.bincount(labels) == PER_CLASS_SAMPLES).all()
    source = np.tile(np.arange(PER_CLASS_SAMPLES) % 2, 10)
    rng = np.random.default_rng(0)  # the draw's order: the first generator's z, then the second's
    for g, generator in enumerate((first, second)):
        rows = np.flatnonzero(source == g)
        z = generator.sample_latent(rng, len(rows), 1.5)
        np.testing.assert_array_equal(images[rows], generator.generate(z, labels[rows]))
    assert (images[source == 0] != images[source == 1]).any()
