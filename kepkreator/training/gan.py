"""train_gan(hparams): a conditional GAN whose samples are of the class they were asked for.

Losses: non-saturating GAN loss on a projection discriminator, plus an auxiliary classification
loss (the discriminator learns real labels; the generator is rewarded when its sample is
classified as the requested label). The exported generator is an exponential moving average of
the trained one, which is steadier and sharper than the last step's weights.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kepkreator.classsets import get_class_set
from kepkreator.training.common import (
    DataChoice, announce_start, check_bundle_out, check_resume, command_line, completed_epochs,
    environment, epoch_batches, keras_verbosity, require_every_class, reseed_each_epoch,
    save_grid, stop_on_divergence, to_model_input, training_data, write_json)
from kepkreator.training.continuation import boost_missed, check_cover_boost, warm_start
from kepkreator.training.modes import PCA_DIMS, split_into_modes


@dataclass
class GANHParams(DataChoice):
    generator_preset: str = "default"
    discriminator_preset: str = "default"
    latent_dim: int | None = None  # preset overrides
    embed_dim: int | None = None
    channels: int | None = None
    batch_norm: bool | None = None
    epochs: int = 20
    batch_size: int = 128
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    beta_1: float = 0.5
    aux_weight: float = 1.0
    diff_augment: bool = False  # translate + cut out what D sees (real and fake): for small data
    # Classic shifts/rotations/zoom on the real images themselves: unlike DiffAugment this leaks
    # into what G learns, on purpose — a small set's generator then also covers its variants.
    real_augment: bool = False
    # Mode seeking (Mao et al. 2019): rewards G for mapping two latents of the same class to
    # different images, against a conditional GAN's habit of dropping a class's rarer styles.
    mode_seeking: float = 0.0
    # A generator bundle to start from (e.g. default:letters for a small digit set): every layer
    # whose weight shapes match is copied, the rest (the label embedding when the class sets
    # differ) starts fresh. Strokes learnt on plenty of data, classes learnt on the small set.
    init_from: str = ""
    # The real images a generator misses (training/continuation.py) occur this many times in
    # each epoch, so the training is pushed towards the styles that generator lacks.
    cover_boost: int = 1
    # Whose misses: this generator bundle (e.g. a mixture, so a new component learns what the
    # components before it miss: AdaGAN), else init_from.
    cover_of: str = ""
    # Class splitting (training/modes.py): k-means every class into this many modes and condition
    # on the mode, so that no way of writing a class (a letter's capital or small form) is dropped.
    modes_per_class: int = 1
    ema_decay: float = 0.999
    seed: int = 0
    split_seed: int = 0
    per_class: int = 0  # train on only this many real samples of each class (0 = all)
    subset_seed: int = 0
    max_train_samples: int = 0
    validator: str = ""  # bundle used to measure the result for the card; optional
    eval_per_class: int = 1000
    jit_compile: bool = True
    workdir: str = ""
    verbose: int | str = "auto"  # live bar on a terminal, one line per epoch in logs
    command: str = ""


def diff_augment(images, seed_generator, shift: int = 3, cutout: int = 14):
    """DiffAugment (Zhao et al. 2020) with translation and cutout, differentiable and XLA-friendly.

    The discriminator sees the same random transformations of real and generated images, so it
    cannot memorise a small training set and the generator gets gradients through them.
    Translation is a product with per-sample one-hot shift matrices; the fill is background (-1).
    """
    import keras
    import tensorflow as tf
    batch, size = tf.shape(images)[0], images.shape[1]
    x = images[..., 0] + 1.0  # background 0, so that shifted-in pixels are background
    dy, dx = (keras.random.randint((batch, 1), -shift, shift + 1, seed=seed_generator)
              for _ in range(2))
    index = tf.range(size)[None, :]
    rows = tf.one_hot(index + dy, size)  # rows[b, i, k] = 1 where k = i + dy[b]
    cols = tf.one_hot(index + dx, size)
    x = tf.einsum("bik,bkl,bjl->bij", rows, x, cols)
    cy, cx = (keras.random.randint((batch, 1), 0, size, seed=seed_generator) for _ in range(2))
    inside = lambda centre: tf.abs(index - centre) < cutout // 2  # noqa: E731
    keep = 1.0 - tf.cast(inside(cy)[:, :, None] & inside(cx)[:, None, :], x.dtype)
    return (x * keep - 1.0)[..., None]


def mode_seeking_spread(images, latents):
    """Mean image distance per latent distance over the pairs (i, i + n//2): near zero when G
    maps different latents of a class to the same picture (a dropped mode)."""
    import tensorflow as tf
    half = tf.shape(images)[0] // 2
    gap = lambda x, axes: tf.reduce_mean(tf.abs(x[:half] - x[half:2 * half]), axes)
    return tf.reduce_mean(gap(images, [1, 2, 3]) / gap(latents, 1))


def _make_gan_class():
    import keras
    import tensorflow as tf

    class ConditionalGAN(keras.Model):
        def __init__(self, generator, discriminator, ema_generator, num_classes, latent_dim,
                     aux_weight, ema_decay, seed, augment=False, mode_seeking=0.0,
                     pairs_share_exemplar=False):
            super().__init__()
            self.generator, self.discriminator = generator, discriminator
            self.ema_generator = ema_generator
            self.num_classes, self.latent_dim = num_classes, latent_dim
            self.aux_weight, self.ema_decay = aux_weight, ema_decay
            self.augment = augment
            self.mode_seeking = mode_seeking
            self.pairs_share_exemplar = pairs_share_exemplar
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.trackers = {name: keras.metrics.Mean(name=name) for name in
                             ("d_loss", "g_loss", "d_real_acc", "g_label_acc")}

        def compile(self, g_optimizer, d_optimizer, **kwargs):
            # No optimizer of Keras's own: its default (RMSprop) trained nothing, yet TensorBoard
            # logged its learning rate as the GAN's, and a resume warned about its state.
            super().compile(optimizer=None, **kwargs)
            self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
            # Built now so that BackupAndRestore can restore their state on resume.
            g_optimizer.build(self.generator.trainable_variables)
            d_optimizer.build(self.discriminator.trainable_variables)

        @property
        def metrics(self):
            return list(self.trackers.values())

        def build(self, input_shape=None):
            self.built = True

        def call(self, inputs, training=False):
            return self.generator(inputs, training=training)

        def train_step(self, data):
            real, labels = data
            batch = tf.shape(real)[0]
            z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
            fake_labels = tf.cast(keras.random.randint((batch, 1), 0, self.num_classes,
                                                       seed=self.seed_generator), "int32")
            labels = tf.reshape(tf.cast(labels, "int32"), (-1, 1))
            if self.mode_seeking:  # pairs (i, i + half) share a label, for the mode-seeking term
                half = batch // 2
                fake_labels = tf.concat([fake_labels[:half], fake_labels[:half],
                                         fake_labels[2 * half:]], 0)
                if self.pairs_share_exemplar:  # so a warp generator is rewarded for its warps
                    z = tf.concat([tf.concat([z[:half, :2], z[:half, :2], z[2 * half:, :2]], 0),
                                   z[:, 2:]], 1)
            ce = keras.losses.sparse_categorical_crossentropy
            with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
                fake = self.generator([z, fake_labels], training=True)
                spread = mode_seeking_spread(fake, z) if self.mode_seeking else None
                if self.augment:
                    real = diff_augment(real, self.seed_generator)
                    fake = diff_augment(fake, self.seed_generator)
                real_score, real_logits = self.discriminator([real, labels], training=True)
                fake_score, fake_logits = self.discriminator([fake, fake_labels], training=True)
                d_loss = (tf.reduce_mean(tf.nn.softplus(-real_score))
                          + tf.reduce_mean(tf.nn.softplus(fake_score))
                          + self.aux_weight * tf.reduce_mean(ce(labels, real_logits,
                                                                from_logits=True)))
                g_loss = (tf.reduce_mean(tf.nn.softplus(-fake_score))
                          + self.aux_weight * tf.reduce_mean(ce(fake_labels, fake_logits,
                                                                from_logits=True)))
                if spread is not None:
                    g_loss += self.mode_seeking / (spread + 1e-5)
            d_vars = self.discriminator.trainable_variables
            g_vars = self.generator.trainable_variables
            self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
            self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
            # Warm-up: early on the average follows the live weights closely.
            step = tf.cast(self.g_optimizer.iterations, "float32")
            decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
            for ema, live in zip(self.ema_generator.weights, self.generator.weights):
                ema.assign(decay * ema + (1.0 - decay) * live)
            hits = lambda logits, y: tf.cast(tf.equal(tf.argmax(logits, -1, output_type="int32"),
                                                      y[:, 0]), "float32")
            self.trackers["d_loss"].update_state(d_loss)
            self.trackers["g_loss"].update_state(g_loss)
            self.trackers["d_real_acc"].update_state(hits(real_logits, labels))
            self.trackers["g_label_acc"].update_state(hits(fake_logits, fake_labels))
            return {name: t.result() for name, t in self.trackers.items()}

    return ConditionalGAN


def _grid_callback(gan, num_labels, latent_dim, workdir: Path, per_row: int = 10):
    """One picture per epoch: a row per label (class or mode), fixed z per column, from the EMA
    generator."""
    import keras
    import tensorflow as tf

    from kepkreator.imageio import image_grid
    from kepkreator.models.bundle import from_model_range

    rng = np.random.default_rng(1234)
    z = np.tile(rng.standard_normal((per_row, latent_dim), dtype=np.float32), (num_labels, 1))
    labels = np.repeat(np.arange(num_labels), per_row).reshape(-1, 1).astype(np.int32)
    writer = tf.summary.create_file_writer(str(workdir / "tensorboard" / "samples"))

    class SampleGrid(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raw = gan.ema_generator.predict_on_batch([z, labels])
            images = from_model_range(raw[..., 0], "tanh")
            save_grid(workdir / "samples" / f"epoch_{epoch + 1:03d}.png", images, num_labels)
            with writer.as_default():
                grid = image_grid(images, num_labels, scale=2)
                tf.summary.image("samples", grid[None, ..., None], step=epoch + 1)
    return SampleGrid()


def build_gan(hp: GANHParams, exemplars=None):
    """The compiled conditional GAN of ``hp`` (generator, discriminator, EMA generator);
    ``exemplars`` (images, labels) are the training images a warp generator redraws."""
    import keras

    from kepkreator.models.networks import (GENERATOR_PRESETS, build_discriminator,
                                            build_generator, without_mode_choice)
    class_set = get_class_set(hp.class_set)
    num_labels = class_set.num_classes * hp.modes_per_class
    overrides = generator_overrides(hp)
    warp = GENERATOR_PRESETS.get(hp.generator_preset, {}).get("style") == "warp"
    if warp and exemplars is not None and len(exemplars[1]) > MAX_EXEMPLARS:
        from kepkreator.errors import KepKreatorError
        raise KepKreatorError(f"a warp generator stores its training images: {len(exemplars[1])}"
                              f" is more than {MAX_EXEMPLARS}; use --per-class or another preset")
    exemplars = exemplars if warp else None
    generator = build_generator(num_labels, hp.generator_preset, exemplars, **overrides)
    started_from = None
    if hp.init_from:
        from kepkreator.models.bundle import load_bundle
        source = load_bundle(hp.init_from, "generator")
        started_from = {"bundle": hp.init_from, "class_set": source.class_set.name,
                        "model_sha256": source.card.get("model_sha256"),
                        **warm_start(generator, without_mode_choice(source.model))}
    ema_generator = build_generator(num_labels, hp.generator_preset, exemplars, **overrides)
    ema_generator.set_weights(generator.get_weights())
    discriminator = build_discriminator(num_labels, hp.discriminator_preset)
    latent_dim = int(generator.inputs[0].shape[-1])
    gan = _make_gan_class()(generator, discriminator, ema_generator, num_labels,
                            latent_dim, hp.aux_weight, hp.ema_decay, hp.seed, hp.diff_augment,
                            hp.mode_seeking, pairs_share_exemplar=warp)
    gan.compile(keras.optimizers.Adam(hp.g_learning_rate, beta_1=hp.beta_1),
                keras.optimizers.Adam(hp.d_learning_rate, beta_1=hp.beta_1),
                jit_compile=hp.jit_compile)
    gan.build(None)  # sub-models are built; BackupAndRestore needs the wrapper marked so too
    gan.started_from = started_from
    return gan


MAX_EXEMPLARS = 20000  # 63 MB of float32 pixels inside a warp generator


def generator_overrides(hp: GANHParams) -> dict:
    return dict(latent_dim=hp.latent_dim, embed_dim=hp.embed_dim, channels=hp.channels,
                batch_norm=hp.batch_norm)


def gan_dataset(train, hp: GANHParams, labels=None, first_epoch: int = 0):
    """Batches of (image, label) for epochs ``first_epoch`` .. ``hp.epochs - 1`` (see
    ``epoch_batches``; fit with ``steps_per_epoch=gan_steps_per_epoch``); ``labels`` replaces
    the class labels (mode labels)."""
    import tensorflow as tf
    labels = train.labels if labels is None else labels
    return epoch_batches(to_model_input(train.images), labels, hp.batch_size, hp.seed,
                         first_epoch, hp.epochs, drop_remainder=True,
                         augment=hp.real_augment).prefetch(tf.data.AUTOTUNE)


def gan_steps_per_epoch(train, hp: GANHParams) -> int:
    """Full batches only; a set smaller than one batch is refused, not trained for no steps."""
    from kepkreator.errors import KepKreatorError
    if len(train) < hp.batch_size:
        raise KepKreatorError(f"--batch-size {hp.batch_size} is more than the {len(train):,} "
                              "training images: no full batch to train on")
    return len(train) // hp.batch_size


def generator_card(hp: GANHParams, gan, data_info: dict, mode_shares=None) -> dict:
    from kepkreator.models.networks import GENERATOR_PRESETS
    class_set = get_class_set(hp.class_set)
    overrides = generator_overrides(hp)
    return {
        "kind": "generator", "name": Path(hp.out).name, "class_set": class_set.name,
        "labels": list(class_set.chars),
        "signature": {"inputs": ["z", "label"], "latent_dim": gan.latent_dim,
                      "label_encoding": "int", "label_shape": [1], "label_dtype": "int32",
                      "label_offset": 0, "output_range": "tanh", "orientation": "upright"},
        "architecture": {"generator_preset": hp.generator_preset,
                         "preset_params": {**GENERATOR_PRESETS[hp.generator_preset],
                                           **{k: v for k, v in overrides.items()
                                              if v is not None}},
                         "discriminator_preset": hp.discriminator_preset,
                         "parameters": int(gan.ema_generator.count_params()),
                         "conditioning": "projection discriminator + auxiliary classifier",
                         "weights": f"EMA of generator weights, decay {hp.ema_decay}",
                         # A warp generator carries its training images: share it as you would
                         # share them.
                         "exemplars": (data_info.get("train_samples") if GENERATOR_PRESETS[
                             hp.generator_preset]["style"] == "warp" else None),
                         "modes": None if mode_shares is None else {
                             "per_class": hp.modes_per_class,
                             "found_by": f"k-means of each class's training images in a "
                                         f"{PCA_DIMS}-dimensional PCA of the pixels",
                             "drawn_by": "angle of (z[0], z[1]) against each class's shares",
                             "shares": np.round(mode_shares, 4).tolist()}},
        "training": {"hparams": asdict(hp) | {"command": command_line(hp.command)},
                     "data": data_info, "epochs": hp.epochs, "seed": hp.seed,
                     "started_from": getattr(gan, "started_from", None),
                     "environment": environment()},
        "metrics": {},
    }


def train_gan(hp: GANHParams, callbacks=()) -> Path:
    """Train, optionally measure with a validator, and write a generator bundle to ``hp.out``.

    ``callbacks`` are extra Keras callbacks (timers, early stopping) added to the built-in ones.
    """
    import keras

    from kepkreator.models.bundle import load_validator_for
    from kepkreator.models.writing import write_bundle
    from kepkreator.models.networks import check_presets, with_mode_choice

    keras.utils.set_random_seed(hp.seed)
    class_set = get_class_set(hp.class_set)
    check_presets(generator=hp.generator_preset, discriminator=hp.discriminator_preset)
    check_bundle_out(hp.out)
    if hp.validator:  # one that cannot score this class set fails now, not after the training
        load_validator_for(hp.validator, class_set)
    check_cover_boost(hp)
    train, evaluation, data_info = training_data(hp)
    require_every_class(train)
    if hp.modes_per_class > 1:  # a mode of one image, or none, is a copy or a dead label
        require_every_class(train, 2 * hp.modes_per_class,
                            f" to split into --modes-per-class {hp.modes_per_class}",
                            "give more data or fewer modes")
    mode_labels, mode_shares = (split_into_modes(
        train.images, train.labels, class_set.num_classes, hp.modes_per_class, hp.seed)
        if hp.modes_per_class > 1 else (None, None))
    # A generator to start from that does not fit fails here, before any training.
    gan = build_gan(hp, (train.images, train.labels if mode_labels is None else mode_labels))
    shown, shown_labels = train, mode_labels
    if hp.cover_boost > 1:
        rows, data_info["cover_boost"] = boost_missed(hp, train)
        shown = train.subset(rows)
        shown_labels = None if mode_labels is None else mode_labels[rows]
    steps_per_epoch = gan_steps_per_epoch(shown, hp)
    workdir = Path(hp.workdir or f"{hp.out}.work")
    workdir.mkdir(parents=True, exist_ok=True)
    check_resume(hp, workdir)
    announce_start(hp, workdir, len(train))
    started = time.time()
    # The dataset shuffles itself (seeded); shuffle=False only stops Keras warning that it cannot.
    history = gan.fit(gan_dataset(shown, hp, shown_labels, completed_epochs(workdir)),
                      epochs=hp.epochs, steps_per_epoch=steps_per_epoch, shuffle=False,
                      verbose=keras_verbosity(hp.verbose), callbacks=[
        stop_on_divergence(workdir),
        keras.callbacks.BackupAndRestore(str(workdir / "backup"), delete_checkpoint=False),
        reseed_each_epoch(),
        keras.callbacks.TensorBoard(str(workdir / "tensorboard")),
        _grid_callback(gan, gan.num_classes, gan.latent_dim, workdir), *callbacks])
    seconds = time.time() - started
    epochs_run = len(history.epoch)

    card = generator_card(hp, gan, data_info, mode_shares)
    card["training"].update(
        epochs_this_run=epochs_run, seconds_this_run=round(seconds, 1),
        seconds_per_epoch=round(seconds / max(epochs_run, 1), 1),
        final_losses={k: float(v[-1]) for k, v in history.history.items()})
    exported = (gan.ema_generator if mode_shares is None
                else with_mode_choice(gan.ema_generator, mode_shares))
    path = write_bundle(hp.out, exported, card)
    if hp.validator:
        from kepkreator.evaluate import evaluate_generator, record_in_card
        held_out = evaluation is not None and len(evaluation) > 0
        report = evaluate_generator(path, hp.validator, per_class=hp.eval_per_class,
                                    seed=hp.seed, real=evaluation,
                                    train=train if held_out else None)  # copying check
        record_in_card(path, report)
        write_json(workdir / "metrics.json", report)
    return path
