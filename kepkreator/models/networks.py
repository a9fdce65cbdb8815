"""Generator, discriminator and validator networks, as plain Keras 3 (any backend can run them).

The discriminator conditions twice over, which is what the seed project lacked: a projection
term <embed(y), phi(x)> (Miyato & Koyama 2018) makes the real/fake score label-aware, and an
auxiliary classifier head (Odena et al. 2017) trained on real labels pushes the generator to make
samples of the requested class.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

IMAGE_SHAPE = (28, 28, 1)

GENERATOR_PRESETS = {
    # Ours: DCGAN-style, label embedding joined to z, batch-normalised upsampling.
    "default": dict(style="dcgan", latent_dim=64, embed_dim=32, channels=128),
    # The seed's generator (latent 96, Embedding(C,10)->Dense(392,tanh)->7x7x8 label map,
    # Dense(4704,tanh)->7x7x96, two stride-2 transposed convs, tanh), with the label path used.
    "kepkreator-2023": dict(style="seed", latent_dim=96, embed_dim=10, channels=64),
    # Small enough for tests and tuning trials.
    "tiny": dict(style="dcgan", latent_dim=16, embed_dim=8, channels=16),
    # For a few hundred images per class: the generator redraws one of its own training images
    # (picked by z) through a learnt smooth deformation and stroke-width change (see WarpImage),
    # in the spirit of DAGAN (Antoniou et al. 2017) and learnt class-dependent deformations
    # (Hauberg et al. 2016). It cannot invent a style, but it cannot lose one either.
    "warp": dict(style="warp", latent_dim=32, embed_dim=16, channels=64, max_shift=4.0),
    "warp-tiny": dict(style="warp", latent_dim=8, embed_dim=4, channels=8, max_shift=4.0),
}
DISCRIMINATOR_PRESETS = {
    "default": dict(channels=64, dropout=0.3),
    "kepkreator-2023": dict(channels=64, dropout=0.4),
    "tiny": dict(channels=8, dropout=0.0),
    # The default with a minibatch standard deviation channel (Karras et al. 2018): a generator
    # whose samples vary less than real ones within a batch is told apart by it.
    "diverse": dict(channels=64, dropout=0.3, minibatch_std=4),
    # Spectral normalisation of every weight layer (Miyato et al. 2018) in place of dropout: a
    # 1-Lipschitz critic. At one step per generator step and equal rates it is too weak a one
    # for the digits recipe (docs/sampling.md, *Three recipes trained from scratch*).
    "spectral": dict(channels=64, dropout=0.0, spectral=True),
}
VALIDATOR_PRESETS = {
    # ~11k parameters like the seed's validation CNN: Conv8-BN-Pool-Conv16-Conv16-BN-Pool-Conv32.
    # Short runs (tests, tuning trials) need BatchNorm statistics that settle in a few dozen steps.
    "tiny": dict(widths=(8, 16, 16, 32), dense=0, dropout=0.0, bn_momentum=0.9),
    "default": dict(widths=(32, 32, 64, 64, 128), dense=128, dropout=0.3, bn_momentum=0.99),
    # The independent judge: a classifier that shares no design choice with the validator it
    # checks (5x5 then 3x3 convolutions without batch norm, flattened rather than pooled
    # features, heavy dropout), so their mistakes on malformed samples are not the same ones.
    "judge": dict(style="plain", widths=(32, 32, 64, 64), dense=128, dropout=0.5),
    "judge-tiny": dict(style="plain", widths=(4, 4, 8, 8), dense=16, dropout=0.0),
    # A judge of a third kind, for checking a filter built from two CNNs: no convolutions at
    # all, so it reads a digit from the whole pixel layout rather than from local strokes.
    "mlp": dict(style="mlp", widths=(512,), dense=256, dropout=0.3),
    "mlp-tiny": dict(style="mlp", widths=(16,), dense=8, dropout=0.0),
}


def check_presets(validator: str | None = None, generator: str | None = None,
                  discriminator: str | None = None) -> None:
    """Unknown preset names fail before data is read or a work directory is made."""
    for table, name in ((VALIDATOR_PRESETS, validator), (GENERATOR_PRESETS, generator),
                        (DISCRIMINATOR_PRESETS, discriminator)):
        if name is not None:
            preset_params(table, name)


def preset_params(table, name, overrides=None):
    if name not in table:
        from kepkreator.errors import KepKreatorError
        kind = next(k for k, t in (("generator", GENERATOR_PRESETS),
                                   ("validator", VALIDATOR_PRESETS),
                                   ("discriminator", DISCRIMINATOR_PRESETS)) if t is table)
        raise KepKreatorError(f"unknown {kind} preset {name!r} (known: {', '.join(table)})")
    params = dict(table[name])
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return params


def build_generator(num_classes: int, preset: str = "default", exemplars=None,
                    **overrides) -> keras.Model:
    """(z (n, latent_dim) float, label (n, 1) int) -> (n, 28, 28, 1) in [-1, 1], upright.

    ``exemplars`` (images (n, 28, 28) uint8, labels (n,)): the training images a "warp" generator
    redraws; required by that style only.
    """
    p = preset_params(GENERATOR_PRESETS, preset, overrides)
    z = keras.Input((p["latent_dim"],), name="z")
    label = keras.Input((1,), name="label", dtype="int32")
    embedded = layers.Embedding(num_classes, p["embed_dim"], name="label_embedding")(label)
    ch = p["channels"]
    if p["style"] == "warp":
        from kepkreator.errors import KepKreatorError
        if exemplars is None:
            raise KepKreatorError(f"generator preset {preset!r} needs its training images")
        images, labels = exemplars
        counts = np.bincount(np.asarray(labels), minlength=num_classes)
        if p["latent_dim"] < 3 or counts.min() == 0:
            raise KepKreatorError("a warp generator needs a latent_dim of at least 3 and "
                                  "training images of every class")
        bank = ExemplarBank(counts.tolist(), name="exemplars")
        bank.build(None)
        order = np.argsort(np.asarray(labels), kind="stable")
        bank.set_weights([np.asarray(images, np.float32)[order] / 127.5 - 1.0])
        exemplar = bank([z, label])
        h = exemplar
        for width in (ch // 2, ch):
            h = layers.LeakyReLU(0.2)(layers.Conv2D(width, 4, strides=2, padding="same")(h))
        code = layers.Concatenate()([z, layers.Flatten()(embedded)])
        code = layers.Reshape((7, 7, 8))(layers.Dense(7 * 7 * 8, activation="relu")(code))
        h = layers.Concatenate()([h, code])
        h = layers.Conv2D(ch, 3, padding="same", activation="relu")(h)
        coarse = layers.Conv2D(3, 3, padding="same", activation="tanh", name="deformation")(h)
        field = layers.UpSampling2D(4, interpolation="bilinear")(coarse)
        image = WarpImage(p["max_shift"], name="image")([exemplar, field])
        return keras.Model([z, label], image, name="generator")
    if p["style"] == "seed":
        label_map = layers.Dense(7 * 7 * 8, activation="tanh")(layers.Flatten()(embedded))
        label_map = layers.Reshape((7, 7, 8))(label_map)
        h = layers.Dense(7 * 7 * 96, activation="tanh")(z)
        h = layers.Concatenate()([layers.Reshape((7, 7, 96))(h), label_map])
        for _ in range(2):
            h = layers.Conv2DTranspose(ch, 4, strides=2, padding="same", activation="tanh")(h)
        image = layers.Conv2D(1, 7, padding="same", activation="tanh", name="image")(h)
    else:
        h = layers.Concatenate()([z, layers.Flatten()(embedded)])
        norm = p.get("batch_norm", True)
        normalise = (lambda t: layers.BatchNormalization()(t)) if norm else (lambda t: t)
        h = layers.Dense(7 * 7 * ch, use_bias=not norm)(h)
        h = layers.ReLU()(normalise(h))
        h = layers.Reshape((7, 7, ch))(h)
        for width in (ch // 2, ch // 4):
            h = layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=not norm)(h)
            h = layers.ReLU()(normalise(h))
        image = layers.Conv2D(1, 3, padding="same", activation="tanh", name="image")(h)
    return keras.Model([z, label], image, name="generator")


class ProjectionScore(layers.Layer):
    """Real/fake logit: linear(phi) + <embed(label), phi>."""

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.linear = layers.Dense(1)
        self.linear.build((None, dim))
        self.embed = layers.Embedding(self.num_classes, dim)
        self.embed.build((None, 1))

    def call(self, inputs):
        features, label = inputs
        projected = keras.ops.sum(self.embed(label)[:, 0, :] * features, axis=-1, keepdims=True)
        return self.linear(features) + projected

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class MinibatchStdDev(layers.Layer):
    """Appends one channel: the spread of each group of ``group`` samples, averaged over its
    features (ProGAN). Real and generated batches go through the discriminator apart, so a
    group never mixes them; the batch size must be a multiple of ``group``."""

    def __init__(self, group: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.group = group

    def call(self, x):
        ops = keras.ops
        shape = ops.shape(x)
        grouped = ops.reshape(x, (self.group, -1, *x.shape[1:]))
        spread = ops.sqrt(ops.var(grouped, axis=0) + 1e-8)
        spread = ops.mean(spread, axis=(1, 2, 3), keepdims=True)  # (n / group, 1, 1, 1)
        spread = ops.tile(spread, (self.group, shape[1], shape[2], 1))
        return ops.concatenate([x, spread], axis=-1)

    def get_config(self):
        return {**super().get_config(), "group": self.group}


def build_discriminator(num_classes: int, preset: str = "default", **overrides) -> keras.Model:
    """(image, label) -> (real/fake logit (n, 1), class logits (n, C))."""
    p = preset_params(DISCRIMINATOR_PRESETS, preset, overrides)
    image = keras.Input(IMAGE_SHAPE, name="image")
    label = keras.Input((1,), name="label", dtype="int32")
    ch = p["channels"]
    weighted = layers.SpectralNormalization if p.get("spectral") else (lambda layer: layer)
    h = image
    for width in (ch, ch * 2):
        h = weighted(layers.Conv2D(width, 4, strides=2, padding="same"))(h)
        h = layers.LeakyReLU(0.2)(h)
        if p["dropout"]:
            h = layers.Dropout(p["dropout"])(h)
    if p.get("minibatch_std"):
        h = MinibatchStdDev(p["minibatch_std"])(h)
    h = layers.Flatten()(h)
    features = layers.LeakyReLU(0.2)(weighted(layers.Dense(ch * 4))(h))
    score = ProjectionScore(num_classes, name="projection")([features, label])
    class_logits = layers.Dense(num_classes, name="class_logits")(features)
    return keras.Model([image, label], [score, class_logits], name="discriminator")


def build_validator(num_classes: int, preset: str = "default", **overrides) -> keras.Model:
    """(n, 28, 28, 1) in [-1, 1] -> class probabilities; the penultimate layer is 'features'."""
    p = preset_params(VALIDATOR_PRESETS, preset, overrides)
    image = keras.Input(IMAGE_SHAPE, name="image")
    h = image
    widths = p["widths"]
    norm = lambda: layers.BatchNormalization(momentum=p.get("bn_momentum", 0.99))
    if p.get("style") == "mlp":
        h = layers.Flatten()(h)
        for width in widths:
            h = layers.Dense(width, activation="relu")(h)
            if p["dropout"]:
                h = layers.Dropout(p["dropout"])(h)
        features = layers.Dense(p["dense"], activation="relu", name="features")(h)
        if p["dropout"]:
            features = layers.Dropout(p["dropout"])(features)
    elif p.get("style") == "plain":
        for i, width in enumerate(widths):
            h = layers.Conv2D(width, 5 if i < 2 else 3, padding="same", activation="relu")(h)
            if i % 2:
                h = layers.MaxPooling2D()(h)
                if p["dropout"]:
                    h = layers.Dropout(p["dropout"] / 2)(h)
        features = layers.Dense(p["dense"], activation="relu", name="features")(layers.Flatten()(h))
        if p["dropout"]:
            features = layers.Dropout(p["dropout"])(features)
    elif p["dense"] == 0:  # the seed's tiny layout
        h = layers.Conv2D(widths[0], 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(norm()(h))
        h = layers.Conv2D(widths[1], 3, padding="same", activation="relu")(h)
        h = layers.Conv2D(widths[2], 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(norm()(h))
        h = layers.Conv2D(widths[3], 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(norm()(h))
        features = layers.GlobalAveragePooling2D(name="features")(h)
    else:
        for i, width in enumerate(widths):
            h = layers.Conv2D(width, 3, padding="same", use_bias=False)(h)
            h = layers.ReLU()(norm()(h))
            if i in (1, 3):
                h = layers.MaxPooling2D()(h)
        h = layers.GlobalAveragePooling2D()(h)
        features = layers.Dense(p["dense"], activation="relu", name="features")(h)
        if p["dropout"]:
            features = layers.Dropout(p["dropout"])(features)
    probs = layers.Dense(num_classes, activation="softmax", name="probabilities")(features)
    return keras.Model(image, probs, name="validator")


class ModeChoice(layers.Layer):
    """(z, class) -> mode label ``class * k + mode``, the mode drawn from z with each class's
    mode shares (see ``training.modes``).

    The draw is the angle of (z[0], z[1]): uniform for any isotropic z, at any latent scale, so
    sampling wider or narrower never changes the mix of modes; the same z gives the same mode.
    """

    def __init__(self, shares, **kwargs):
        super().__init__(**kwargs)
        self.shares = [[float(s) for s in row] for row in shares]
        self.modes = len(self.shares[0])
        self.thresholds = np.cumsum(np.asarray(self.shares, np.float32), axis=1)[:, :-1]

    def call(self, inputs):
        z, label = inputs
        ops = keras.ops
        uniform = (ops.arctan2(z[:, 1], z[:, 0]) + 3.141592653589793) / (2 * 3.141592653589793)
        label = ops.cast(ops.reshape(label, (-1,)), "int32")
        thresholds = ops.take(ops.convert_to_tensor(self.thresholds, "float32"), label, axis=0)
        mode = ops.sum(ops.cast(uniform[:, None] > thresholds, "int32"), axis=1)
        return ops.reshape(label * self.modes + mode, (-1, 1))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], 1)

    def get_config(self):
        return {**super().get_config(), "shares": self.shares}


def with_mode_choice(generator: keras.Model, shares) -> keras.Model:
    """A generator trained on mode labels, wrapped to take (z, class) like any other."""
    z = keras.Input(generator.inputs[0].shape[1:], name="z")
    label = keras.Input((1,), name="label", dtype="int32")
    mode_label = ModeChoice(shares, name="mode_choice")([z, label])
    return keras.Model([z, label], generator([z, mode_label]), name="generator_with_modes")


def without_mode_choice(generator: keras.Model) -> keras.Model:
    """The generator inside a ``with_mode_choice`` wrapper (the model itself otherwise)."""
    inner = [layer for layer in generator.layers if isinstance(layer, keras.Model)]
    if any(isinstance(layer, ModeChoice) for layer in generator.layers) and len(inner) == 1:
        return inner[0]
    return generator


class ExemplarBank(layers.Layer):
    """(z, class) -> one of the class's stored training images, chosen by the angle of
    (z[0], z[1]) (uniform over the class's images at any latent scale; same z, same image).

    The images are a non-trainable weight, so they travel inside the saved model."""

    def __init__(self, counts, **kwargs):
        super().__init__(**kwargs)
        self.counts = [int(c) for c in counts]

    def build(self, input_shape):
        self.images = self.add_weight(shape=(sum(self.counts), 28, 28), initializer="zeros",
                                      trainable=False, name="images")

    def call(self, inputs):
        z, label = inputs
        ops = keras.ops
        counts = ops.convert_to_tensor(np.asarray(self.counts, np.float32))
        offsets = ops.convert_to_tensor(np.cumsum([0] + self.counts[:-1]).astype(np.int32))
        label = ops.cast(ops.reshape(label, (-1,)), "int32")
        uniform = (ops.arctan2(z[:, 1], z[:, 0]) + 3.141592653589793) / (2 * 3.141592653589793)
        count = ops.take(counts, label)
        within = ops.cast(ops.minimum(ops.floor(uniform * count), count - 1), "int32")
        return ops.take(self.images, ops.take(offsets, label) + within, axis=0)[..., None]

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 28, 28, 1)

    def get_config(self):
        return {**super().get_config(), "counts": self.counts}


class WarpImage(layers.Layer):
    """(image in [-1, 1], field (n, h, w, 3) in [-1, 1]) -> the image resampled at every pixel
    moved by up to ``max_shift`` pixels (channels 0, 1), its strokes thickened or thinned by up
    to one pixel (channel 2, averaged over the image). Bilinear, so gradients reach the field;
    what comes from outside the frame is background."""

    def __init__(self, max_shift: float, **kwargs):
        super().__init__(**kwargs)
        self.max_shift = float(max_shift)

    def call(self, inputs):
        ops = keras.ops
        image, field = inputs
        size = image.shape[1]
        ink = image[..., 0] + 1.0  # background 0
        batch = ops.shape(ink)[0]
        grid = ops.arange(size, dtype="float32")
        ys = grid[None, :, None] + self.max_shift * field[..., 0]
        xs = grid[None, None, :] + self.max_shift * field[..., 1]
        y0, x0 = ops.floor(ys), ops.floor(xs)
        wy, wx = ys - y0, xs - x0
        flat = ops.reshape(ink, (batch, size * size))

        def at(y, x):
            inside = ops.cast((y >= 0) & (y <= size - 1) & (x >= 0) & (x <= size - 1), "float32")
            index = ops.cast(ops.clip(y, 0, size - 1) * size + ops.clip(x, 0, size - 1), "int32")
            picked = ops.take_along_axis(flat, ops.reshape(index, (batch, size * size)), axis=1)
            return ops.reshape(picked, (batch, size, size)) * inside

        moved = (at(y0, x0) * (1 - wy) * (1 - wx) + at(y0 + 1, x0) * wy * (1 - wx)
                 + at(y0, x0 + 1) * (1 - wy) * wx + at(y0 + 1, x0 + 1) * wy * wx)
        weight = ops.mean(field[..., 2], axis=(1, 2))[:, None, None]
        moved4 = moved[..., None]
        thicker = ops.max_pool(moved4, 3, 1, "same")[..., 0]
        thinner = -ops.max_pool(-moved4, 3, 1, "same")[..., 0]
        out = (moved + ops.relu(weight) * (thicker - moved) - ops.relu(-weight) * (moved - thinner))
        return ops.clip(out, 0.0, 2.0)[..., None] - 1.0

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift}


def _mixture_layers() -> dict:
    from kepkreator.models.mixture import ChosenOutput, ComponentChoice
    return {"ComponentChoice": ComponentChoice, "ChosenOutput": ChosenOutput}


CUSTOM_OBJECTS = {"ProjectionScore": ProjectionScore, "ModeChoice": ModeChoice,
                  "ExemplarBank": ExemplarBank, "WarpImage": WarpImage, **_mixture_layers()}
