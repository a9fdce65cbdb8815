"""Tiny real training runs: the same train_* functions the CLI calls, a few steps each."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kepkreator.models.bundle import load_bundle
from kepkreator.training.gan import GANHParams, train_gan
from kepkreator.training.validator import ValidatorHParams, train_validator
from tests.pipeline_fixtures import class_folders


@pytest.fixture(scope="module")
def tiny_validator(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "validator"
    return train_validator(ValidatorHParams(
        class_set="digits", data=[f"mnist:train@{mnist_dir}"], eval_data=[f"mnist:test@{mnist_dir}"],
        out=str(out), preset="tiny", epochs=1, batch_size=64, max_train_samples=2048, verbose=0,
        command="pytest"))


def test_validator_bundle_and_card(tiny_validator):
    card = json.loads((tiny_validator / "card.json").read_text())
    assert card["kind"] == "validator" and card["class_set"] == "digits"
    assert card["training"]["epochs"] == 1 and card["training"]["seed"] == 0
    assert card["training"]["data"]["eval_samples"] == 10000
    assert 0.3 < card["metrics"]["eval_accuracy"] <= 1.0  # learnt something in 32 steps
    assert len(card["metrics"]["eval_per_class_accuracy"]) == 10
    assert load_bundle(tiny_validator).probabilities(np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)
    assert list((tiny_validator.parent / "validator.work" / "tensorboard").rglob("events.out.*"))


def test_gan_trains_resumes_and_measures(mnist_dir, tiny_validator, tmp_path, recwarn):
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "gan"),
                    generator_preset="tiny", discriminator_preset="tiny", epochs=1, batch_size=64,
                    max_train_samples=640, validator=str(tiny_validator), eval_per_class=20,
                    eval_data=[f"mnist:test@{mnist_dir}"], verbose=0, jit_compile=False,
                    command="pytest")
    path = train_gan(hp)
    assert not [w for w in recwarn if "shuffle" in str(w.message)]  # no noise in a user's log
    card = json.loads((path / "card.json").read_text())
    assert card["training"]["epochs_this_run"] == 1
    evaluation = card["metrics"]["evaluation"]["generated"]
    assert evaluation["samples"] == 200 and len(evaluation["per_class"]) == 10
    copying = card["metrics"]["evaluation"]["copying"]  # against the 640 images it trained on
    assert copying["train_samples"] == 640 and copying["generated_compared"] == 200
    grid = Image.open(tmp_path / "gan.work" / "samples" / "epoch_001.png")
    assert grid.height > 10 * 28  # one row per class
    assert list((tmp_path / "gan.work" / "tensorboard").rglob("events.out.*"))

    # Keras's default optimizer trained nothing, yet its learning rate was logged as the GAN's.
    assert "epoch_learning_rate" not in _scalar_tags(tmp_path / "gan.work" / "tensorboard")

    hp.epochs = 2  # same workdir: resumes after epoch 1 and runs only the second
    card = json.loads((train_gan(hp) / "card.json").read_text())
    assert card["training"]["epochs_this_run"] == 1 and card["training"]["epochs"] == 2
    assert not [w for w in recwarn if "Skipping variable loading" in str(w.message)]
    assert (tmp_path / "gan.work" / "samples" / "epoch_002.png").exists()
    gen = load_bundle(path)
    images = gen.generate(gen.sample_latent(np.random.default_rng(0), 3), np.array([0, 1, 2]))
    assert images.shape == (3, 28, 28)


def _scalar_tags(logdir) -> set:
    import tensorflow as tf
    return {value.tag for events in Path(logdir).rglob("events.out.*")
            for event in tf.compat.v1.train.summary_iterator(str(events))
            for value in event.summary.value}


def test_a_run_says_what_it_trains_and_whether_it_resumes(tmp_path, capsys):
    """In a log Keras prints nothing until the first epoch ends, which takes minutes."""
    from kepkreator.training.common import announce_start
    hp = ValidatorHParams(class_set="digits", data=["mnist:train@x"], out="v", epochs=3,
                          verbose=2)
    announce_start(hp, tmp_path, 60000)
    assert capsys.readouterr().err == (f"training 3 epochs on 60,000 images; checkpoints and "
                                       f"TensorBoard logs in {tmp_path} (the same command "
                                       f"resumes)\n")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    announce_start(hp, tmp_path, 60000)
    assert capsys.readouterr().err.startswith("resuming after epoch 2 of 3 on 60,000 images")
    hp.epochs = 2
    announce_start(hp, tmp_path, 60000)
    assert capsys.readouterr().err.startswith("all 2 epochs are already trained")
    hp.verbose = 0  # tests and library callers that asked for silence get it
    announce_start(hp, tmp_path, 60000)
    assert capsys.readouterr().err == ""


def _stop_after_first_epoch():
    """Ends a run after its first epoch's checkpoint, as a killed run would."""
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True
    return Stop()


def _max_weight_difference(a, b) -> float:
    return max(float(np.abs(x - y).max())
               for x, y in zip(load_bundle(a).model.get_weights(),
                               load_bundle(b).model.get_weights()))


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(mnist_dir, tmp_path):
    """Data order, classic augmentation, the GAN's noise and DiffAugment, and dropout used to
    restart from the seed on resume, replaying epoch 1's draws; now each epoch's draws depend
    on (seed, epoch) alone. Every random path is on: real_augment, diff_augment, the default
    validator's dropout and augmentation."""
    common = dict(class_set="digits", data=[f"mnist:train@{mnist_dir}"], epochs=3,
                  batch_size=64, max_train_samples=256, verbose=0)

    def gan(name):
        return GANHParams(**common, out=str(tmp_path / name), generator_preset="tiny",
                          discriminator_preset="tiny", diff_augment=True, real_augment=True,
                          jit_compile=False, command="pytest")
    straight = train_gan(gan("straight"))
    train_gan(gan("resumed"), callbacks=[_stop_after_first_epoch()])
    assert json.loads((tmp_path / "resumed" / "card.json").read_text())[
        "training"]["epochs_this_run"] == 1
    resumed = train_gan(gan("resumed"))
    assert _max_weight_difference(straight, resumed) == 0.0

    def validator(name):
        return ValidatorHParams(**common, out=str(tmp_path / name), preset="default",
                                augment=True)
    straight = train_validator(validator("v-straight"))
    train_validator(validator("v-resumed"), callbacks=[_stop_after_first_epoch()])
    resumed = train_validator(validator("v-resumed"))
    assert _max_weight_difference(straight, resumed) == 0.0


def test_a_batch_larger_than_the_training_set_is_refused(mnist_dir, tmp_path):
    """It trained for no steps (Keras: 'Your input ran out of data') and saved the untrained
    generator as a bundle."""
    from kepkreator.errors import KepKreatorError
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], per_class=2,
                    out=str(tmp_path / "gan"), generator_preset="tiny",
                    discriminator_preset="tiny", batch_size=64, verbose=0)
    with pytest.raises(KepKreatorError, match="--batch-size 64 is more than the 20 training "
                                              "images: no full batch to train on"):
        train_gan(hp)
    assert not (tmp_path / "gan").exists() and not (tmp_path / "gan.work").exists()


def test_training_is_deterministic(mnist_dir, tmp_path, recwarn):
    def once(name):
        return train_validator(ValidatorHParams(
            class_set="digits", data=[f"mnist:test@{mnist_dir}"], out=str(tmp_path / name),
            preset="tiny", epochs=1, batch_size=64, max_train_samples=256, verbose=0))
    a, b = load_bundle(once("a")), load_bundle(once("b"))
    assert not [w for w in recwarn if "shuffle" in str(w.message)]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_evaluate_tells_a_generators_own_images_from_images_it_never_saw(mnist_dir, tmp_path):
    """The copying check, end to end: a warp generator redraws its 80 training images, so its
    samples lie nearer to those (the subset its card records, picked by default) than held-out
    real digits do, and no nearer than chance to 80 other digits it never saw."""
    from tests.conftest import assert_one_line_error, run_cli
    generator = train_gan(GANHParams(
        class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "w"),
        generator_preset="warp-tiny", discriminator_preset="tiny", epochs=1, batch_size=32,
        per_class=8, verbose=0, jit_compile=False, command="pytest"))
    common = ("evaluate", "--generator", generator, "--validator", "default:digits", "-n", "200",
              "--real", f"mnist:test@{mnist_dir}", "--train-data", f"mnist:train@{mnist_dir}")
    ratios = {}
    for name, extra in [("own", ()), ("unseen", ("--train-subset-seed", "1"))]:
        result = run_cli(*common, *extra, "--json-out", tmp_path / f"{name}.json")
        assert result.returncode == 0, result.stderr
        assert "near copies" in result.stdout
        copying = json.loads((tmp_path / f"{name}.json").read_text())["copying"]
        assert copying["train_samples"] == 80 and copying["real_compared"] == 10000
        ratios[name] = copying["distance_ratio"]
    assert ratios["own"] < 0.85 and ratios["unseen"] > 0.9
    assert_one_line_error(run_cli(*common[:5], "--train-data", f"mnist:train@{mnist_dir}"),
                          "--train-data needs --real")
    assert_one_line_error(run_cli(*common[:5], "--real", f"mnist:test@{mnist_dir}", "--train-data",
                                  f"mnist:test@{mnist_dir}", "--train-per-class", "0"),
                          "every real image is also a training image")


def test_a_validator_of_another_class_set_is_refused_before_training(tmp_path):
    """Measured only after training, the mismatch used to cost the whole run; the data path
    here does not exist, so the refusal comes before anything is read."""
    from kepkreator.errors import BundleError
    hp = GANHParams(class_set="digits", data=[f"folder@{tmp_path / 'none'}"],
                    out=str(tmp_path / "gan"), epochs=1, validator="default:letters")
    with pytest.raises(BundleError, match="validator class set 'letters' differs from 'digits'"):
        train_gan(hp)
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_gan_writes_no_bundle(mnist_dir, tmp_path):
    """A NaN learning rate stands in for any divergence: the run must end in an error, not in a
    bundle of NaN weights that generates black squares."""
    from kepkreator.errors import KepKreatorError
    hp = GANHParams(class_set="digits", data=[f"mnist:train@{mnist_dir}"], out=str(tmp_path / "g"),
                    generator_preset="tiny", discriminator_preset="tiny", epochs=2, batch_size=64,
                    max_train_samples=128, verbose=0, jit_compile=False,
                    d_learning_rate=float("nan"))
    with pytest.raises(KepKreatorError, match=r"training diverged: d_loss, .* in epoch 1; no "
                                              r"bundle written"):
        train_gan(hp)
    assert not (tmp_path / "g").exists()
    assert not (tmp_path / "g.work" / "backup").exists() or not any(
        (tmp_path / "g.work" / "backup").iterdir())


def test_a_workdir_resumes_only_under_its_own_settings(mnist_dir, tmp_path):
    """The checkpoint restores the optimizer's learning rate too: a resume with another one
    trained on with the old rate while the card recorded the new; another width was a
    traceback from the checkpoint loader."""
    from kepkreator.errors import KepKreatorError
    hp = ValidatorHParams(class_set="digits", data=[f"mnist:test@{mnist_dir}"],
                          out=str(tmp_path / "v"), preset="tiny", epochs=1, batch_size=64,
                          max_train_samples=256, verbose=0)
    train_validator(hp)
    hp.learning_rate = 0.5
    with pytest.raises(KepKreatorError, match=r"v.work holds a run with other settings "
                                              r"\(learning_rate 0.002 -> 0.5\)"):
        train_validator(hp)
    hp.learning_rate, hp.epochs, hp.out = 2e-3, 2, str(tmp_path / "v2")  # what may change
    hp.workdir = str(tmp_path / "v.work")
    card = load_bundle(train_validator(hp)).card
    assert card["training"]["hparams"]["epochs"] == 2


def test_a_workdir_from_before_a_new_setting_resumes_at_its_default(tmp_path):
    """A GAN workdir recorded before --cover-of existed refused to resume: the absent key read
    as a change of setting, though that run trained at the default."""
    from kepkreator.errors import KepKreatorError
    from kepkreator.training.common import check_resume
    hp = GANHParams(class_set="digits", data=["mnist:train@x"], out=str(tmp_path / "g"))
    check_resume(hp, tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())
    del record["cover_of"]
    (tmp_path / "run.json").write_text(json.dumps(record))
    check_resume(hp, tmp_path)
    hp.cover_of = "default:digits"
    with pytest.raises(KepKreatorError, match=r"cover_of '' -> 'default:digits'"):
        check_resume(hp, tmp_path)


@pytest.mark.parametrize("kind", ["validator", "gan"])
def test_training_refuses_an_out_folder_of_other_files(tmp_path, kind):
    """--out . wrote card.json and model.keras among whatever the working directory held."""
    from tests.conftest import assert_one_line_error, run_cli
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("train", kind, "--class-set", "digits", "--data", "mnist:train@/nowhere",
                     "--out", ".", cwd=tmp_path)
    assert_one_line_error(result, "--out . holds files but no model bundle (no card.json)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_class_without_training_images_is_refused(tmp_path):
    """Digits 3-9 missing: the GAN trained and shipped a 'digits' generator that drew noise for
    them, the validator one that never predicts them; each looked complete."""
    from kepkreator.errors import DataError
    data = class_folders(tmp_path / "data", "012", 12)
    missing = "7 of the 10 classes of 'digits' have no training images: 3, 4, 5, 6, 7, 8, 9"
    with pytest.raises(DataError, match=missing):
        train_gan(GANHParams(class_set="digits", data=[data], out=str(tmp_path / "g"),
                             epochs=1, batch_size=8, verbose=0))
    with pytest.raises(DataError, match=missing):
        train_validator(ValidatorHParams(class_set="digits", data=[data], out=str(tmp_path / "v"),
                                         epochs=1, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_class_splitting_needs_two_images_per_mode(tmp_path):
    """With fewer images than modes, k-means left modes empty (a label never trained) or of one
    image (a mode the GAN can only copy)."""
    from kepkreator.errors import DataError
    data = class_folders(tmp_path / "data", "0123456789", 5)
    hp = GANHParams(class_set="digits", data=[data], out=str(tmp_path / "g"), epochs=1,
                    batch_size=8, verbose=0, modes_per_class=3)
    with pytest.raises(DataError, match=r"10 of the 10 classes of 'digits' have fewer than 6 "
                                        r"training images to split into --modes-per-class 3: "
                                        r"0 \(5\), 1 \(5\), 2 \(5\).*9 \(5\); give more data or "
                                        r"fewer modes"):
        train_gan(hp)
    hp.modes_per_class, hp.generator_preset, hp.discriminator_preset = 2, "tiny", "tiny"
    hp.jit_compile = False
    assert load_bundle(train_gan(hp), "generator").card["class_set"] == "digits"
