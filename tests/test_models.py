import json
import shutil

import numpy as np
import pytest

from kepkreator.errors import BundleError, KepKreatorError
from kepkreator.models.bundle import import_model, load_bundle
from kepkreator.models.networks import build_discriminator, build_generator, build_validator
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
])
def test_card_that_does_not_match_its_model(tiny_generator_bundle, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_generator_bundle, bad)
    card = json.loads((bad / "card.json").read_text())
    change(card)
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


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
