"""Continuing a generator towards what it misses: the coverage test image by image, the
repeated rows, and `train gan --cover-boost` on a tiny real run."""

import numpy as np

from kepkreator.training.continuation import boosted_rows, missed_by
from tests.conftest import assert_one_line_error, run_cli


def test_missed_by_names_the_real_images_no_sample_reaches():
    rng = np.random.default_rng(0)
    # One class written two ways (two clusters); the samples reach only the first way.
    real = np.concatenate([rng.normal(0, 1, (40, 8)), rng.normal(12, 1, (20, 8))])
    samples = rng.normal(0, 1, (60, 8))
    missed = missed_by(real, np.zeros(60, int), samples, np.zeros(60, int))
    assert not missed[:40].mean() > 0.2 and missed[40:].all()
    # Another class's samples reach nothing of this one: misses are per class.
    other = missed_by(real, np.zeros(60, int), real + 0.01, np.ones(60, int))
    assert other.all()
    assert not missed_by(real, np.zeros(60, int), real, np.zeros(60, int)).any()


def test_boosted_rows_repeat_only_the_missed():
    missed = np.array([False, True, False, True])
    rows = boosted_rows(missed, 3)
    assert sorted(rows.tolist()) == [0, 1, 1, 1, 2, 3, 3, 3]
    assert boosted_rows(missed, 1).tolist() == [0, 1, 2, 3]


def test_cover_boost_needs_a_generator_to_start_from(mnist_dir, tmp_path, tiny):
    result = run_cli("train", "gan", "--class-set", "digits", "--data",
                     f"mnist:test@{mnist_dir}", "--out", str(tmp_path / "g"), "--cover-boost", "3",
                     "--validator", str(tiny[1]), "--epochs", "1")
    assert_one_line_error(result, "--cover-boost needs --cover-of or --init-from")
    assert not (tmp_path / "g").exists()


def boosted_tiny_gan(mnist_dir, out, tiny, **overrides):
    """A one-epoch tiny GAN on 300 MNIST digits, its misses found by the tiny validator."""
    from kepkreator.models.bundle import load_bundle
    from kepkreator.training.gan import GANHParams, train_gan
    hp = GANHParams(**{**dict(class_set="digits", data=[f"mnist:train@{mnist_dir}"],
                              out=str(out), generator_preset="tiny",
                              discriminator_preset="tiny", epochs=1, batch_size=64,
                              max_train_samples=300, verbose=0, jit_compile=False, seed=1,
                              init_from=str(tiny[0]), validator=str(tiny[1]),
                              eval_per_class=5), **overrides})
    return load_bundle(train_gan(hp))


def test_cover_boost_shows_the_missed_images_more_often(mnist_dir, tmp_path, tiny):
    plain = boosted_tiny_gan(mnist_dir, tmp_path / "plain", tiny, cover_boost=1)
    boosted = boosted_tiny_gan(mnist_dir, tmp_path / "boosted", tiny, cover_boost=4)
    account = boosted.card["training"]["data"]["cover_boost"]
    assert account["boost"] == 4 and account["of"] == 300
    # An untrained starting generator may miss every image; which ones is missed_by's test.
    assert 0 < account["missed"] == sum(account["missed_per_class"]) <= 300
    assert "cover_boost" not in plain.card["training"]["data"]
    assert account["images_per_epoch"] == 300 + 3 * account["missed"]
    z = plain.sample_latent(np.random.default_rng(0), 16)
    labels = np.arange(16) % 10
    assert (plain.generate(z, labels) != boosted.generate(z, labels)).any()


def test_cover_boost_with_class_splitting_keeps_each_image_in_its_mode(mnist_dir, tmp_path, tiny):
    bundle = boosted_tiny_gan(mnist_dir, tmp_path / "split", tiny, cover_boost=3,
                              modes_per_class=2)
    data = bundle.card["training"]["data"]
    assert data["cover_boost"]["images_per_epoch"] == 300 + 2 * data["cover_boost"]["missed"]
    assert bundle.card["architecture"]["modes"]["per_class"] == 2
    # The exported generator is still asked for classes, and draws each one.
    images = bundle.generate(bundle.sample_latent(np.random.default_rng(0), 20),
                             np.arange(20) % 10)
    assert images.shape[0] == 20 and np.isfinite(images).all()


def test_cover_of_boosts_another_generators_misses_from_scratch(mnist_dir, tmp_path, tiny):
    card = boosted_tiny_gan(mnist_dir, tmp_path / "new", tiny, init_from="",
                            cover_of=str(tiny[0]), cover_boost=2).card
    account = card["training"]["data"]["cover_boost"]
    assert account["generator"] == str(tiny[0]) and account["boost"] == 2
    assert account["images_per_epoch"] == 300 + account["missed"]
    assert not card["training"]["hparams"]["init_from"]


def test_cover_of_needs_a_boost_and_the_same_class_set(mnist_dir, tmp_path, tiny):
    base = ["train", "gan", "--class-set", "digits", "--data", f"mnist:test@{mnist_dir}",
            "--validator", str(tiny[1]), "--generator-preset", "tiny", "--discriminator-preset",
            "tiny", "--max-train-samples", "200", "--epochs", "1"]
    result = run_cli(*base, "--out", str(tmp_path / "a"), "--cover-of", str(tiny[0]))
    assert_one_line_error(result, "give --cover-boost 2 or more")
    result = run_cli(*base, "--out", str(tmp_path / "b"), "--cover-of", "default:letters",
                     "--cover-boost", "2")
    assert_one_line_error(result, "--cover-of class set 'letters' differs")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
