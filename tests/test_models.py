import json
import re
import shutil

import numpy as np
import pytest

from kepkreator.errors import BundleError, KepKreatorError
from kepkreator.models.bundle import load_bundle
from kepkreator.models.writing import import_model
from kepkreator.models.card import sha256_file
from kepkreator.models.networks import (VALIDATOR_PRESETS, build_discriminator, build_generator,
                                        build_validator)
from tests.conftest import ROOT
from tests.pipeline_fixtures import make_tiny_bundles

@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory):
    return make_tiny_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def tiny_generator_bundle(tiny_bundles):
    return tiny_bundles[0]


@pytest.fixture(scope="module")
def tiny_validator_bundle(tiny_bundles):
    return tiny_bundles[1]


def test_network_shapes():
    import keras
    g = build_generator(26, "default")
    out = g.predict_on_batch([np.zeros((3, 64), np.float32), np.zeros((3, 1), np.int32)])
    assert out.shape == (3, 28, 28, 1) and np.abs(out).max() <= 1
    d = build_discriminator(26, "tiny")
    score, logits = d.predict_on_batch([out, np.zeros((3, 1), np.int32)])
    assert score.shape == (3, 1) and logits.shape == (3, 26)
    assert build_generator(10, "kepkreator-2023").inputs[0].shape[-1] == 96
    tiny = build_validator(10, "tiny")
    assert 5_000 < tiny.count_params() < 15_000  # the seed's ~11k-parameter validation CNN
    assert isinstance(build_validator(10).get_layer("features"), keras.layers.Layer)


@pytest.mark.parametrize("preset", sorted(VALIDATOR_PRESETS))
def test_every_validator_preset_classifies_and_names_its_features(preset):
    import keras
    model = build_validator(10, preset)
    probs = model.predict_on_batch(np.zeros((2, 28, 28, 1), np.float32))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert model.get_layer("features").output.shape[-1] == VALIDATOR_PRESETS[preset]["dense"] or \
        VALIDATOR_PRESETS[preset]["dense"] == 0
    convolutions = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert (not convolutions) == preset.startswith("mlp")  # the third kind of judge has none


def test_seed_preset_discriminator_uses_the_label():
    d = build_discriminator(10, "tiny")
    image = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    a, _ = d.predict_on_batch([image, np.array([[0], [0]], np.int32)])
    b, _ = d.predict_on_batch([image, np.array([[0], [7]], np.int32)])
    assert a[0] == pytest.approx(b[0]) and a[1] != pytest.approx(b[1])


def test_bundle_round_trip(tiny_generator_bundle, tiny_validator_bundle):
    gen = load_bundle(tiny_generator_bundle, "generator")
    val = load_bundle(tiny_validator_bundle, "validator")
    z = gen.sample_latent(np.random.default_rng(0), 4)
    images = gen.generate(z, np.array([0, 3, 5, 9]))
    assert images.shape == (4, 28, 28) and images.dtype == np.uint8
    probs = val.probabilities(images)
    assert probs.shape == (4, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert val.features(images).shape[0] == 4
    with pytest.raises(KepKreatorError, match="out of range"):
        gen.generate(z[:1], np.array([10]))
    with pytest.raises(BundleError, match="is a generator bundle, a validator is needed"):
        load_bundle(tiny_generator_bundle, "validator")


def test_features_compile_once_for_any_batch_size(tiny_validator_bundle):
    """Frechet distances read features in batches with a short last one; a model rebuilt per
    call and run per batch retraced each time and TensorFlow warned of a retracing loop."""
    import logging
    val = load_bundle(tiny_validator_bundle, "validator")
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        features = [val.features(images[:n], batch_size=4) for n in range(3, 13)]
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert [len(f) for f in features] == list(range(3, 13))
    assert np.allclose(features[-1][:3], features[0], atol=1e-5)
    assert not [m for m in messages if "retracing" in m]


def test_emnist_orientation_card_transposes(tiny_generator_bundle, tmp_path):
    flipped = tmp_path / "flipped"
    shutil.copytree(tiny_generator_bundle, flipped)
    card = json.loads((flipped / "card.json").read_text())
    card["signature"]["orientation"] = "emnist"
    (flipped / "card.json").write_text(json.dumps(card))
    z = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    upright = load_bundle(tiny_generator_bundle).generate(z, np.array([1, 2]))
    np.testing.assert_array_equal(load_bundle(flipped).generate(z, np.array([1, 2])),
                                  upright.transpose(0, 2, 1))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["signature"].update(latent_dim=17), "latent_dim 17"),
    (lambda c: c.update(class_set="letters", labels=list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")),
     "needs 26 labels, the model's label embedding takes 10"),
    (lambda c: c.update(class_set="letters"), "labels do not match"),
    (lambda c: c.update(class_set="klingon"), "unknown class set"),
    (lambda c: c.update(model_file="missing.keras"), "lacks its model file"),
    (lambda c: c["signature"].update(output_range="0-1"), "output_range"),
    (lambda c: c.pop("signature"), "lacks the key 'signature'"),
    # Every field is type-checked at load, in one line naming it.
    (lambda c: c["signature"].update(latent_dim="64; rm -rf /"),
     "signature.latent_dim must be a whole number of at least 1, not '64; rm -rf /'"),
    (lambda c: c["signature"].update(latent_dim=True), "signature.latent_dim must be"),
    (lambda c: c["signature"].update(label_offset=-1), "signature.label_offset must be"),
    (lambda c: c["signature"].update(inputs=["z", "z"]), "signature.inputs must be"),
    (lambda c: c["signature"].update(latnet_dim=3), "unknown key 'signature.latnet_dim'"),
    (lambda c: c.update(sampling={"latent_scale": "wide"}), "sampling.latent_scale must be"),
    (lambda c: c.update(sampling={"min_confidence": 2}), "sampling.min_confidence must be"),
    (lambda c: c.update(labels="0123456789"), "labels must be a list of strings"),
    (lambda c: c.update(kind="judge"), "kind must be one of generator, validator"),
    # The model file is a plain name inside the bundle, never a path out of it.
    (lambda c: c.update(model_file="/etc/passwd"), "model_file must be a plain file name"),
    (lambda c: c.update(model_file="../other/model.keras"), "model_file must be a plain file"),
    (lambda c: c.pop("model_sha256"), "lacks the key 'model_sha256'"),
    (lambda c: c.update(model_sha256="abc"), "model_sha256 must be 64 lower-case hex digits"),
])
def test_card_that_does_not_match_its_model(tiny_generator_bundle, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_generator_bundle, bad)
    card = json.loads((bad / "card.json").read_text())
    change(card)
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


def test_a_bundle_with_another_model_copied_in_is_refused(tmp_path):
    """The shipped digits card over the shipped letters model loaded and generated letters
    under the digits card's name and evidence."""
    from kepkreator.models.bundle import ASSETS
    swapped = tmp_path / "digits-generator"
    shutil.copytree(ASSETS / "digits" / "generator", swapped)
    shutil.copyfile(ASSETS / "letters" / "generator" / "model.keras", swapped / "model.keras")
    with pytest.raises(BundleError, match="model.keras is not the model its card describes"):
        load_bundle(swapped)


def test_validator_class_count_mismatch(tiny_validator_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_validator_bundle, bad)
    card = json.loads((bad / "card.json").read_text())
    card.update(class_set="letters")
    card.pop("labels")
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="model has 10 outputs, class set 'letters' has 26"):
        load_bundle(bad)


def test_corrupt_model_file_and_missing_bundle(tiny_validator_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_validator_bundle, bad)
    (bad / "model.keras").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="model.keras is not the model its card describes"):
        load_bundle(bad)
    card = json.loads((bad / "card.json").read_text())  # a card that vouches for the garbage
    card["model_sha256"] = sha256_file(bad / "model.keras")
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="cannot load model"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no shipped bundle 'default:klingon'"):
        load_bundle("default:klingon", "generator")


PEERS = [("KepKreator/num-model/generator.h5", "kepkreator-num-model", 96),
         ("KepKreator/letter-model-zs/generator.h5", "kepkreator-letter-model-zs", 64),
         ("KepKreator/letter-model-60/generator.h5", "kepkreator-letter-model-60", 100),
         ("KepKreator/validation_cnn.hdf5", "kepkreator-validation-cnn", None),
         ("MNIST-cGAN-Image-Generation/evaluation_model.h5", "luna-evaluation-model", None)]


@pytest.fixture(scope="module")
def peer_bundles(peers_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("peers")
    return {name: import_model(peers_dir / rel, ROOT / "jobs" / "peers" / f"{name}.card.json",
                               out / name) for rel, name, _ in PEERS}


@pytest.mark.parametrize("rel, name, latent", PEERS)
def test_peer_models_load_and_run(peer_bundles, rel, name, latent):
    bundle = load_bundle(peer_bundles[name])
    if latent:
        assert bundle.latent_dim == latent
        labels = np.arange(8) % bundle.class_set.num_classes
        images = bundle.generate(bundle.sample_latent(np.random.default_rng(0), 8), labels)
        assert images.shape == (8, 28, 28) and images.dtype == np.uint8
        assert images[:, 0, :].mean() < 40 and images.max() > 200  # white ink on black
    else:
        assert bundle.probabilities(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


def test_peer_digit_generator_is_label_blind(peer_bundles):
    """The finding that motivates this product: agreement at chance, BCIS ~1."""
    from kepkreator.evaluate import evaluate_generator
    report = evaluate_generator(peer_bundles["kepkreator-num-model"],
                                peer_bundles["kepkreator-validation-cnn"], per_class=100, seed=1234)
    assert report["generated"]["agreement"] < 0.2
    assert report["generated"]["bcis"] < 1.2
    assert report["generated"]["mean_confidence"] > 0.9


def test_import_model_rejects_a_mismatched_card(peers_dir, tmp_path):
    card = json.loads((ROOT / "jobs/peers/kepkreator-num-model.card.json").read_text())
    card["signature"]["latent_dim"] = 100
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="latent_dim 100"):
        import_model(peers_dir / "KepKreator/num-model/generator.h5", tmp_path / "card.json",
                     tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    # A card that is not a JSON object, or lacks a key, is named as the user's file.
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(BundleError, match="list.json: a card must be a JSON object, got list"):
        import_model(peers_dir / "KepKreator/num-model/generator.h5", tmp_path / "list.json",
                     tmp_path / "bundle")
    # A signature written twice, the second left half-edited, is not silently the second.
    text = json.dumps(card)
    (tmp_path / "twice.json").write_text(text[:-1] + ', "signature": {}}')
    with pytest.raises(BundleError, match="malformed card .*twice.json: key 'signature' is given "
                                          "twice"):
        import_model(peers_dir / "KepKreator/num-model/generator.h5", tmp_path / "twice.json",
                     tmp_path / "bundle")
    del card["kind"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=re.escape(f"{tmp_path / 'card.json'} lacks the key 'kind'")):
        import_model(peers_dir / "KepKreator/num-model/generator.h5", tmp_path / "card.json",
                     tmp_path / "bundle")
    # A directory that holds something is refused, and a failed import never removes it.
    card["kind"] = "generator"
    (tmp_path / "card.json").write_text(json.dumps(card))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="already exists and is not an empty directory"):
        import_model(peers_dir / "KepKreator/num-model/generator.h5", tmp_path / "card.json", mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "list.json", "mine",
                                                          "twice.json"]


@pytest.mark.parametrize("name, content, message", [
    ("broken.keras", b"PK\x03\x04 cut short", "not a .keras file (not a zip archive)"),
    ("broken.h5", b"not hdf5", "not an HDF5 file"),
    ("model.pt", b"torch", "unsupported format '.pt' (expected .keras, .h5, .hdf5)"),
])
def test_import_model_names_a_corrupt_or_foreign_file(tmp_path, name, content, message):
    """Keras calls a corrupt .keras file 'not found'; the user must hear what is wrong, about
    the file they passed, and find nothing half-imported."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BundleError) as caught:
        import_model(tmp_path / name, ROOT / "jobs/peers/kepkreator-num-model.card.json",
                     tmp_path / "bundle")
    assert str(caught.value) == f"cannot load model {tmp_path / name}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def _digit_bank(per_class=3):
    """Distinct synthetic images, one bright pixel each, so that a picked image names itself."""
    labels = np.repeat(np.arange(10), per_class)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i in range(len(labels)):
        images[i, 4 + i // 28 % 20, i % 28] = 255
    return images, labels


def test_exemplar_bank_picks_each_of_a_class_images_at_any_latent_scale():
    from kepkreator.models.networks import ExemplarBank
    images, labels = _digit_bank()
    bank = ExemplarBank(np.bincount(labels).tolist())
    bank.build(None)
    bank.set_weights([images.astype(np.float32) / 127.5 - 1])
    z = np.random.default_rng(0).standard_normal((3000, 4)).astype(np.float32)
    label = np.full((3000, 1), 7, np.int32)
    picked = np.asarray(bank([z, label]))[..., 0]
    hits = [(picked == images[i] / 127.5 - 1).all((1, 2)).mean() for i in range(len(labels))]
    assert sum(hits) == pytest.approx(1.0)  # every pick is one of the stored images ...
    assert all(0.28 < h < 0.39 for h in hits[21:24]) and sum(hits[21:24]) == 1  # ... of class 7
    again = np.asarray(bank([5 * z, label]))[..., 0]  # the angle of (z0, z1) decides, not the norm
    assert np.array_equal(picked, again)


def test_warp_image_moves_whole_pixels_and_changes_stroke_width():
    from kepkreator.models.networks import WarpImage
    image = -np.ones((1, 28, 28, 1), np.float32)
    image[0, 10:18, 12, 0] = 1.0  # a vertical stroke, one pixel wide
    warp = WarpImage(max_shift=4.0)
    field = np.zeros((1, 28, 28, 3), np.float32)
    assert np.allclose(np.asarray(warp([image, field])), image)
    field[..., 1] = -0.5  # sample two pixels to the left: the stroke moves two to the right
    moved = np.asarray(warp([image, field]))[0, ..., 0]
    assert np.allclose(moved[10:18, 14], 1) and np.allclose(moved[:, 12], -1)
    field[..., 1], field[..., 2] = 0, 1  # thicker: three pixels wide
    assert np.allclose(np.asarray(warp([image, field]))[0, 12, 11:14, 0], 1)
    field[..., 2] = -1  # thinner: a one-pixel stroke disappears
    assert np.allclose(np.asarray(warp([image, field])), -1)


def test_warp_generator_needs_its_images_and_saves_them(tmp_path):
    import keras

    from kepkreator.models.networks import CUSTOM_OBJECTS
    with pytest.raises(KepKreatorError, match="needs its training images"):
        build_generator(10, "warp-tiny")
    images, labels = _digit_bank()
    with pytest.raises(KepKreatorError, match="every class"):
        build_generator(11, "warp-tiny", (images, labels))
    g = build_generator(10, "warp-tiny", (images, labels))
    z = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    label = np.arange(6).reshape(-1, 1).astype(np.int32)
    out = g.predict_on_batch([z, label])
    g.save(tmp_path / "warp.keras")
    again = keras.saving.load_model(tmp_path / "warp.keras", custom_objects=CUSTOM_OBJECTS)
    assert np.allclose(again.predict_on_batch([z, label]), out, atol=1e-6)


def test_reports_name_shipped_bundles_portably(tiny_generator_bundle, tiny_validator_bundle):
    """Cards travel with the package: a shipped bundle is named default:SET, never by the
    absolute path of the machine that evaluated it."""
    from kepkreator.evaluate import evaluate_generator
    shipped = load_bundle("default:digits", "validator")
    assert shipped.path.is_absolute() and shipped.reference == "default:digits"
    mine = load_bundle(tiny_generator_bundle, "generator")
    assert mine.reference == str(tiny_generator_bundle)
    report = evaluate_generator(mine, load_bundle(tiny_validator_bundle, "validator"),
                                per_class=2)
    assert report["generator"] == str(tiny_generator_bundle)
    assert load_bundle(shipped.reference, "validator").path == shipped.path


def test_frechet_distance_compares_all_classes_whatever_the_sizes(mnist_dir):
    """3,000 samples (ordered by class) against 1,000 real digits (sorted by class here): the
    distance must compare like with like, not the first few classes of one with all of the other."""
    from kepkreator.data import load_sources
    from kepkreator.evaluate import evaluate_generator
    test = load_sources([f"mnist:test@{mnist_dir}"], "digits")
    sorted_real = test.subset(np.argsort(test.labels, kind="stable")[::10])
    report = evaluate_generator("default:digits", "default:digits", per_class=300, seed=0,
                                real=sorted_real, latent_scale=1.0)
    assert report["frechet_distance"] < 3  # 56.5 when the first 1,000 samples (0s–3s) were used


def test_real_data_of_some_classes_is_compared_with_samples_of_those(mnist_dir):
    """Real 0s and 1s against samples of all ten digits: the Frechet distance measured the eight
    missing classes (101.0, now 2.3), the BCIS ratio set ten classes' spread against two's (4.87)."""
    from kepkreator.data import load_sources
    from kepkreator.evaluate import evaluate_generator, format_table
    test = load_sources([f"mnist:test@{mnist_dir}"], "digits")
    zeros_and_ones = test.subset(np.flatnonzero(test.labels < 2)[:600])
    report = evaluate_generator("default:digits", "default:digits", per_class=300, seed=0,
                                real=zeros_and_ones, latent_scale=1.0)
    assert report["real_classes"] == "01"
    assert report["frechet_distance"] < 3
    assert report["generated_in_real_classes"]["bcis"] < 2.01 < report["generated"]["bcis"]
    assert 0.9 < report["bcis_ratio_generated_to_real"] < 1.1
    assert "real data has only the classes 01" in format_table(report)
