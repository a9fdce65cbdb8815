"""A mixture of generators as one bundle: each sample is its chosen component's, the mix is the
same at every latent scale, bad mixtures are refused, and the pipeline runs it unchanged."""
import json

import numpy as np
import pytest

from kepkreator.models.bundle import load_bundle
from kepkreator.models.mixture import CHOICE_DIMS
from kepkreator.models.writing import write_bundle
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import make_tiny_bundles, tiny_spec


@pytest.fixture(scope="module")
def two_generators(tiny, tmp_path_factory):
    """The tiny generator and a copy with other weights, as bundles."""
    root = tmp_path_factory.mktemp("components")
    other = load_bundle(tiny[0], "generator")
    other.model.set_weights([w + 0.3 for w in other.model.get_weights()])
    card = {k: v for k, v in other.card.items() if k not in ("format", "model_file",
                                                             "model_sha256")}
    return str(tiny[0]), str(write_bundle(root / "other", other.model, card))


@pytest.fixture(scope="module")
def mixture(two_generators, tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "mixture"
    result = run_cli("mix-generators", *two_generators, "--shares", "0.25,0.75", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_each_sample_is_its_chosen_components(mixture, two_generators):
    mixed = load_bundle(mixture, "generator")
    parts = [load_bundle(ref, "generator") for ref in two_generators]
    assert mixed.latent_dim == parts[0].latent_dim + CHOICE_DIMS
    components = mixed.card["architecture"]["mixture"]["components"]
    assert [c["share"] for c in components] == [0.25, 0.75]
    assert components[1]["model_sha256"] == parts[1].card["model_sha256"]
    labels = np.arange(4000) % 10
    for scale in (1.0, 3.0):  # the share is the same at any latent scale
        z = mixed.sample_latent(np.random.default_rng(0), len(labels), scale)
        images = mixed.generate(z, labels)
        first = np.arctan2(z[:, -1], z[:, -2]) < -np.pi / 2  # the first quarter of the circle
        assert abs(first.mean() - 0.25) < 0.03
        for chosen, part in ((first, parts[0]), (~first, parts[1])):
            np.testing.assert_array_equal(images[chosen],
                                          part.generate(z[chosen, :-CHOICE_DIMS], labels[chosen]))
        assert (parts[0].generate(z[:, :-CHOICE_DIMS], labels)[~first] != images[~first]).any()


def test_the_pipeline_runs_a_mixture_with_exact_counts(mixture, tiny, tmp_path):
    from pipeline.run import run
    spec = tiny_spec(tmp_path / "spec.yaml", (mixture, tiny[1]), counts={"2": 11, "7": 4})
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    assert not result.failed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = np.sum([shard["class_counts"] for shard in manifest["shards"]], axis=0)
    assert counts.tolist() == [0, 0, 11, 0, 0, 0, 0, 4, 0, 0]


def test_bad_mixtures_are_one_line_and_write_nothing(two_generators, tmp_path):
    letters = make_tiny_bundles(tmp_path / "letters", "letters", 26,
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ")[0]
    out = tmp_path / "out"
    for args, message in [
            ((two_generators[0],), "a mixture needs at least two generators"),
            ((*two_generators, "--shares", "0.5"), "--shares needs 2 positive numbers that sum"),
            ((*two_generators, "--shares", "a,b"), "--shares 'a,b': give numbers"),
            ((two_generators[0], letters), "generator class set 'letters' differs from")]:
        assert_one_line_error(run_cli("mix-generators", *args, "--out", out), message)
        assert not out.exists()
