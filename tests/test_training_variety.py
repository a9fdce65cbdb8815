"""The training options that widen what a GAN draws, each on a tiny real run: DiffAugment,
real augmentation, mode seeking, the minibatch spread, spectral normalisation, warm starts,
class splitting and the warp generator."""

import warnings

import numpy as np
import pytest
from PIL import Image

from kepkreator.models.bundle import load_bundle
from kepkreator.training.gan import GANHParams, train_gan


def test_diff_augment_shifts_whole_pixels_and_cuts_out_background():
    import keras
    import tensorflow as tf

    from kepkreator.training.gan import diff_augment
    x = -np.ones((64, 28, 28, 1), np.float32)
    x[:, 12:14, 12:14, 0] = 1.0
    seeds = keras.random.SeedGenerator(1)
    shifted = tf.function(lambda a: diff_augment(a, seeds, cutout=0), jit_compile=True)(x).numpy()
    # Translation only moves pixels (no blur), fills with background, and does vary per sample.
    assert set(np.unique(shifted)) == {-1.0, 1.0}
    assert ((shifted > 0).sum(axis=(1, 2, 3)) == 4).all()
    offsets = {tuple(np.argwhere(s[..., 0] > 0).min(0)) for s in shifted}
    assert len(offsets) > 5 and all(9 <= r <= 15 and 9 <= c <= 15 for r, c in offsets)
    cut = diff_augment(tf.ones((64, 28, 28, 1)), seeds, shift=0).numpy()
    assert ((cut == -1).sum(axis=(1, 2, 3)) > 0).mean() > 0.9  # a square set to background


def test_real_augment_changes_what_the_gan_sees_and_only_then(mnist_dir, tmp_path):
    from kepkreator.data import load_sources
    from kepkreator.training.gan import gan_dataset
    data = load_sources([f"mnist:test@{mnist_dir}"], "digits").subset(np.arange(64))
    hp = GANHParams(class_set="digits", data=[], out=str(tmp_path), batch_size=64)
    plain = next(iter(gan_dataset(data, hp)))[0].numpy()
    hp.real_augment, hp.epochs = True, 2
    widened = [np.concatenate([x.numpy() for x, _ in gan_dataset(data, hp)]) for _ in range(2)]
    # Same images in the same order (the order is seeded), moved.
    assert widened[0].shape == (128, 28, 28, 1) and widened[0].min() >= -1.0001
    assert np.abs(widened[0][:64] - plain).mean() > 0.01
    assert np.abs(widened[0].mean() - plain.mean()) < 0.05  # ink moved, not invented
    # Each epoch differently, but an epoch the same in every run: a resumed run repeats it.
    assert np.abs(widened[0][:64] - widened[0][64:]).mean() > 0.01
    np.testing.assert_array_equal(widened[0], widened[1])


def test_mode_seeking_spread_sees_a_dropped_mode():
    from kepkreator.training.gan import mode_seeking_spread
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 4)).astype("float32")
    one = np.tile(rng.uniform(-1, 1, (1, 28, 28, 1)).astype("float32"), (8, 1, 1, 1))
    varied = rng.uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
    assert float(mode_seeking_spread(one, z)) == 0.0  # every latent -> the same picture
    assert float(mode_seeking_spread(varied, z)) > 0.1
    assert float(mode_seeking_spread(varied * 0.5, z)) == pytest.approx(
        0.5 * float(mode_seeking_spread(varied, z)), rel=1e-5)


def test_minibatch_spread_tells_a_collapsed_batch_from_a_varied_one():
    from kepkreator.models.networks import MinibatchStdDev, build_discriminator
    rng = np.random.default_rng(0)
    collapsed = np.tile(rng.uniform(-1, 1, (1, 7, 7, 3)), (8, 1, 1, 1)).astype("float32")
    varied = rng.uniform(-1, 1, (8, 7, 7, 3)).astype("float32")
    spread = lambda x: np.asarray(MinibatchStdDev(4)(x))[..., -1]
    assert spread(collapsed).shape == (8, 7, 7) and spread(collapsed).max() < 1e-3
    assert spread(varied).min() > 0.3  # uniform on [-1, 1]: std about 0.58
    # Each group of 4 gets its own spread: a varied group beside a collapsed one.
    mixed = np.concatenate([collapsed[:4], varied[:4]])
    mixed = mixed.reshape(4, 2, 7, 7, 3).transpose(1, 0, 2, 3, 4).reshape(8, 7, 7, 3)
    assert len(np.unique(spread(mixed).round(4))) == 2
    score, _ = build_discriminator(10, "diverse")([varied[:, :, :, :1].repeat(4, 1).repeat(4, 2)[
        :, :28, :28], np.zeros((8, 1), "int32")])
    assert score.shape == (8, 1)


def test_mode_seeking_changes_what_the_generator_learns(mnist_dir, tmp_path):
    def once(name, weight):
        hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"],
                        out=str(tmp_path / name), generator_preset="tiny",
                        discriminator_preset="tiny", epochs=1, batch_size=64,
                        max_train_samples=256, verbose=0, jit_compile=False, mode_seeking=weight,
                        ema_decay=0.0)  # the bundle holds the live generator
        return load_bundle(train_gan(hp))
    plain, again, seeking = once("plain", 0.0), once("again", 0.0), once("seeking", 0.5)
    assert seeking.card["training"]["hparams"]["mode_seeking"] == 0.5
    z = plain.sample_latent(np.random.default_rng(0), 16)
    labels = np.arange(16) % 10
    # Training is deterministic, so any difference is the term's doing.
    np.testing.assert_array_equal(plain.generate(z, labels), again.generate(z, labels))
    assert (plain.generate(z, labels) != seeking.generate(z, labels)).any()


def test_warm_start_copies_every_layer_but_a_new_class_sets_embedding(mnist_dir, tmp_path):
    from kepkreator.errors import KepKreatorError
    from kepkreator.models.networks import build_generator
    from kepkreator.training.continuation import warm_start
    letters = build_generator(26, "tiny")
    digits = build_generator(10, "tiny")
    report = warm_start(digits, letters)
    assert report["fresh_layers"] == ["label_embedding"] and report["copied_layers"] >= 3
    for target, origin in zip(digits.layers, letters.layers):
        if target.weights and target.name != "label_embedding":
            for a, b in zip(target.get_weights(), origin.get_weights()):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(KepKreatorError, match="shares no layer shapes|weighted layers"):
        warm_start(build_generator(10, "default"), letters)

    from kepkreator.models.writing import write_bundle
    source = write_bundle(tmp_path / "letters", letters, {
        "kind": "generator", "name": "letters", "class_set": "letters",
        "signature": {"inputs": ["z", "label"], "latent_dim": int(letters.inputs[0].shape[-1]),
                      "label_encoding": "int", "output_range": "tanh"}})
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "g"),
                    generator_preset="tiny", discriminator_preset="tiny", epochs=1, batch_size=64,
                    max_train_samples=128, verbose=0, jit_compile=False, init_from=str(source))
    started = load_bundle(train_gan(hp)).card["training"]["started_from"]
    assert started["class_set"] == "letters" and started["fresh_layers"] == ["label_embedding"]


def test_augmented_training_is_reproducible(mnist_dir):
    """c_aug and e_aug are seeded settings: the same seed must give the same classifier."""
    from kepkreator.data import load_sources
    from kepkreator.cas import ReferenceTraining, train_and_test
    from kepkreator.downstream import per_class_subset
    train = per_class_subset(load_sources([f"mnist:train@{mnist_dir}"], "digits"), 30, 0)
    test = load_sources([f"mnist:test@{mnist_dir}"], "digits").subset(np.arange(1000))
    schedule = ReferenceTraining(steps=40)
    runs = [train_and_test(train, test, 0, augment=True, schedule=schedule) for _ in range(2)]
    assert runs[0]["accuracy"] == runs[1]["accuracy"]
    assert runs[0]["per_class"] == runs[1]["per_class"]


def _two_styles(count_a, count_b, rng):
    """28x28 images of one class written two ways: a horizontal bar or a vertical one."""
    images = np.zeros((count_a + count_b, 28, 28), np.uint8)
    for i in range(count_a + count_b):
        at = rng.integers(12, 17)  # a wobble of a few pixels, as in handwriting
        if i < count_a:
            images[i, at - 4:at + 4, 4:24] = 255
        else:
            images[i, 4:24, at - 4:at + 4] = 255
    return images


def test_split_into_modes_finds_each_way_of_writing_a_class():
    from kepkreator.training.modes import split_into_modes
    rng = np.random.default_rng(0)
    images = np.concatenate([_two_styles(30, 10, rng), _two_styles(12, 28, rng)])
    labels = np.repeat([0, 1], 40)
    modes, shares = split_into_modes(images, labels, 2, 2, seed=0)
    # Class 0: 30 horizontal (the larger mode, 0) and 10 vertical; class 1 the other way round.
    np.testing.assert_array_equal(modes, np.concatenate([np.repeat([0, 1], [30, 10]),
                                                         np.repeat([3, 2], [12, 28])]))
    np.testing.assert_allclose(shares, [[0.75, 0.25], [0.7, 0.3]])
    again, _ = split_into_modes(images, labels, 2, 2, seed=0)
    np.testing.assert_array_equal(modes, again)


def test_mode_choice_draws_modes_in_their_shares_at_any_latent_scale():
    from kepkreator.models.networks import ModeChoice
    choice = ModeChoice([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    z = np.random.default_rng(0).standard_normal((20000, 8)).astype(np.float32)
    for scale in (1.0, 3.0):
        modes = np.asarray(choice([z * scale, np.zeros((20000, 1), np.int32)]))[:, 0]
        np.testing.assert_allclose(np.bincount(modes, minlength=3) / 20000, [0.5, 0.3, 0.2],
                                   atol=0.015)
    other = np.asarray(choice([z[:100], np.ones((100, 1), np.int32)]))[:, 0]
    assert set(other) == {5}  # class 1 has one mode with a share: 1 * 3 + 2


def test_gan_with_modes_exports_a_generator_that_takes_classes(mnist_dir, tmp_path):
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "g"),
                    generator_preset="tiny", discriminator_preset="tiny", epochs=1, batch_size=64,
                    max_train_samples=640, modes_per_class=3, verbose=0, jit_compile=False)
    generator = load_bundle(train_gan(hp))
    modes = generator.card["architecture"]["modes"]
    assert modes["per_class"] == 3 and np.allclose(np.sum(modes["shares"], 1), 1, atol=1e-3)
    inner = generator.model.get_layer("generator")
    assert inner.get_layer("label_embedding").input_dim == 30  # trained on 10 x 3 mode labels
    z = generator.sample_latent(np.random.default_rng(0), 600, 2.0)
    labels = np.arange(600) % 10
    images = generator.generate(z, labels)
    assert images.shape == (600, 28, 28) and images.dtype == np.uint8
    # The wrapper is the inner generator fed the mode label it picked, nothing more.
    mode_labels = np.asarray(generator.model.get_layer("mode_choice")([z, labels[:, None]]))
    assert set(np.unique(mode_labels // 3)) == set(range(10))
    direct = inner.predict_on_batch([z, mode_labels.astype(np.int32)])
    np.testing.assert_array_equal(images, generator.postprocess(direct))
    grid = Image.open(tmp_path / "g.work" / "samples" / "epoch_001.png")
    assert grid.height > 30 * 28  # one row per mode
    # A later GAN can start from it: the wrapper is looked through.
    hp2 = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "h"),
                     generator_preset="tiny", discriminator_preset="tiny", epochs=1, batch_size=64,
                     max_train_samples=128, verbose=0, jit_compile=False,
                     init_from=str(tmp_path / "g"))
    started = load_bundle(train_gan(hp2)).card["training"]["started_from"]
    assert started["fresh_layers"] == ["label_embedding"]


def test_warp_generator_redraws_its_own_images_of_the_asked_class(mnist_dir, tmp_path):
    from kepkreator.data import load_sources
    from kepkreator.training.gan import MAX_EXEMPLARS
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "w"),
                    generator_preset="warp-tiny", discriminator_preset="tiny", epochs=1,
                    batch_size=32, per_class=8, mode_seeking=0.05, diff_augment=True,
                    verbose=0, jit_compile=False, command="pytest")
    bundle = load_bundle(train_gan(hp))
    assert bundle.card["architecture"]["exemplars"] == 80
    train = load_sources([f"mnist:train@{mnist_dir}"], "digits")
    from kepkreator.data import per_class_subset
    subset = train.subset(per_class_subset(train.labels, 10, 8, 0))
    labels = np.arange(200) % 10
    images = bundle.generate(bundle.sample_latent(np.random.default_rng(0), 200), labels)
    gaps = np.abs(images[:, None].astype(float) - subset.images[None].astype(float)).mean((2, 3))
    assert (subset.labels[gaps.argmin(1)] == labels).mean() > 0.9  # a warp of one of its own
    assert len({im.tobytes() for im in images}) > 150
    with pytest.raises(Exception, match="stores its training images"):
        train_gan(GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"],
                             out=str(tmp_path / "big"), generator_preset="warp-tiny",
                             max_train_samples=MAX_EXEMPLARS + 10, epochs=1, verbose=0))


def test_the_spectral_discriminator_keeps_each_layer_at_unit_gain(mnist_dir, tmp_path):
    from kepkreator.models.networks import build_discriminator
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
    labels = np.zeros((8, 1), "int32")
    discriminator = build_discriminator(10, "spectral")
    assert not any(layer.__class__.__name__ == "Dropout" for layer in discriminator.layers)
    for _ in range(30):  # one power-iteration step per training call
        discriminator([images, labels], training=True)
    wrapped = [layer for layer in discriminator.layers
               if layer.__class__.__name__ == "SpectralNormalization"]
    assert len(wrapped) == 3  # both convolutions and the feature layer
    for layer in wrapped:
        kernel = np.asarray(layer.layer.kernel)
        top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        assert top == pytest.approx(1.0, abs=0.02), layer.name
    # It trains (compiled, as the shipped recipe runs) and resumes from its checkpoint, power
    # iteration state included.
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "g"),
                    generator_preset="tiny", discriminator_preset="spectral", epochs=1,
                    batch_size=64, max_train_samples=128, verbose=0)
    assert load_bundle(train_gan(hp)).card["architecture"]["discriminator_preset"] == "spectral"
    hp.epochs = 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card = load_bundle(train_gan(hp)).card
    assert card["training"]["epochs_this_run"] == 1 and card["training"]["epochs"] == 2
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
