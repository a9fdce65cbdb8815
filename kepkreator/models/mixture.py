"""A mixture of generators in one bundle: each sample comes from one of K generators, chosen
by two extra latent dimensions.

A generator continued towards the real styles another misses (``train gan --cover-boost``) draws
those styles; mixed with the other, the set trains a better small classifier (LeNet) than
either's, though not a stronger one (docs/sampling.md, thirteenth attempt). The mixture is an
ordinary generator bundle, (z, class) -> image, so the pipeline's exact counts, sharding and
byte-identical reruns hold unchanged. z has the components' latent dimensions plus two: the
angle of the last two chooses the component (uniform for any isotropic z, so the mix is the same
at every latent scale; the same z gives the same component), and the components see the rest
untouched. Every component runs on every sample, so a mixture of K costs K generators' work per
sample.
"""
from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers

CHOICE_DIMS = 2


class ComponentChoice(layers.Layer):
    """z -> (z without its last two dimensions, one-hot choice of a component by their angle)."""

    def __init__(self, shares, **kwargs):
        super().__init__(**kwargs)
        self.shares = [float(s) for s in shares]
        self.thresholds = np.cumsum(np.asarray(self.shares, np.float32))[:-1]

    def call(self, z):
        ops = keras.ops
        angle = ops.arctan2(z[:, -1], z[:, -2])
        uniform = (angle + math.pi) / (2 * math.pi)
        thresholds = ops.convert_to_tensor(self.thresholds, "float32")
        chosen = ops.sum(ops.cast(uniform[:, None] > thresholds[None, :], "int32"), axis=1)
        return z[:, :-CHOICE_DIMS], ops.one_hot(chosen, len(self.shares))

    def compute_output_shape(self, input_shape):
        return ((input_shape[0], input_shape[1] - CHOICE_DIMS), (input_shape[0], len(self.shares)))

    def get_config(self):
        return {**super().get_config(), "shares": self.shares}


class ChosenOutput(layers.Layer):
    """(one-hot choice, each component's images) -> the chosen component's images."""

    def call(self, inputs):
        ops = keras.ops
        choice, outputs = inputs[0], ops.stack(inputs[1:], axis=1)
        weights = ops.reshape(choice, (-1, outputs.shape[1]) + (1,) * (len(outputs.shape) - 2))
        return ops.sum(outputs * ops.cast(weights, outputs.dtype), axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]


def mixture_model(generators, shares) -> keras.Model:
    """One (z, label) -> image model over ``generators`` (Keras models with equal inputs)."""
    latent_dim = int(generators[0].inputs[0].shape[-1])
    z = keras.Input((latent_dim + CHOICE_DIMS,), name="z")
    label = keras.Input(generators[0].inputs[1].shape[1:], name="label",
                        dtype=generators[0].inputs[1].dtype)
    inner, choice = ComponentChoice(shares, name="component_choice")(z)
    # Each component is renamed so that two copies of one architecture can sit side by side.
    outputs = [keras.Model(g.inputs, g.output, name=f"component_{k}")([inner, label])
               for k, g in enumerate(generators)]
    return keras.Model([z, label], ChosenOutput(name="chosen_output")([choice, *outputs]),
                       name="generator_mixture")


def mix_generators(refs: list[str], out: str, shares: list[float] | None = None) -> str:
    """Write the mixture of the generator bundles ``refs`` to ``out``; the card names each
    component (its sha256 and card) and keeps the first's sampling choice, marked as such."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.models.bundle import load_bundle, require_class_set
    from kepkreator.models.writing import write_bundle
    from kepkreator.training.common import check_bundle_out
    if len(refs) < 2:
        raise KepKreatorError("a mixture needs at least two generators")
    shares = [1.0 / len(refs)] * len(refs) if shares is None else [float(s) for s in shares]
    if len(shares) != len(refs) or min(shares) <= 0 or abs(sum(shares) - 1) > 1e-6:
        raise KepKreatorError(f"--shares needs {len(refs)} positive numbers that sum to 1, "
                              f"got {','.join(f'{s:g}' for s in shares)}")
    check_bundle_out(out)
    bundles = [load_bundle(ref, "generator") for ref in refs]
    first = bundles[0]
    for ref, bundle in zip(refs[1:], bundles[1:]):
        require_class_set(bundle, first.class_set, "generator", f"{refs[0]}'s")
        if bundle.signature != first.signature:
            raise KepKreatorError(f"{ref}'s signature differs from {refs[0]}'s: a mixture's "
                                  "components take the same inputs and give the same images")
    model = mixture_model([b.model for b in bundles], shares)
    sampling = {key: value for key, value in (first.card.get("sampling") or {}).items()
                if key in ("latent_scale", "min_confidence", "second_validator")}
    if sampling:
        sampling["chosen_by"] = (f"copied from component 0 ({refs[0]}); not scanned as a "
                                 "mixture: `kepkreator tune-sampling --update-card` replaces it")
    card = {"kind": "generator", "name": Path(out).name,
            "class_set": first.class_set.name, "labels": list(first.class_set.chars),
            "signature": {**first.signature,
                          "latent_dim": first.latent_dim + CHOICE_DIMS},
            "architecture": {
                "mixture": {"choice": f"angle of z's last {CHOICE_DIMS} dimensions against the "
                                      "shares; the components see the other dimensions",
                            "components": [{"bundle": ref, "name": b.card.get("name", ""),
                                            "model_sha256": b.card.get("model_sha256"),
                                            "share": share, "architecture": b.card.get(
                                                "architecture")}
                                           for ref, b, share in zip(refs, bundles, shares)]},
                "parameters": int(model.count_params())},
            "training": {"components": [b.card.get("training") for b in bundles]},
            "metrics": {}}
    if sampling:
        card["sampling"] = sampling
    return str(write_bundle(out, model, card))
