"""Quality figures a user can trust: an independent judge in every report, fidelity and
diversity against real images, the realism filter, and safe sampling with the filter off.
The shipped digits models at small counts; figures recomputed from the written files."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kepkreator.errors import BundleError
from kepkreator.manifold import FIGURES, ReferenceBank
from kepkreator.models.bundle import load_bundle
from pipeline.run import run
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.pipeline_fixtures import class_folders, tiny_spec, write_spec


def shipped_spec(path, **fields):
    base = {"class_set": "digits", "generator": "default:digits", "validator": "default:digits",
            "counts": {"per_class": 40}, "seed": 5, "shards": 2, "unit_size": 64}
    return write_spec(path, **{**base, **fields})


def images_and_labels(out):
    table = pq.read_table(Path(out) / "data")
    images = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in
                       table.column("image").combine_chunks().field("bytes").to_pylist()])
    return images, table.column("label").to_numpy()


@pytest.fixture(scope="module")
def defaults_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("defaults")
    result = run(["--spec", str(shipped_spec(root / "s.yaml")), "--out", str(root / "out")])
    assert not result.failed
    return root / "out", result


def test_the_judge_reports_on_what_was_kept_and_a_recount_agrees(defaults_run):
    out, result = defaults_run
    metrics = json.loads((out / "metrics.json").read_text())
    judge = load_bundle("default:digits", "judge")
    images, labels = images_and_labels(out)
    agreed = judge.probabilities(images).argmax(1) == labels
    assert metrics["judge"]["agreement_accepted"] == pytest.approx(agreed.mean())
    for c in range(10):
        assert metrics["per_class"][str(c)]["judge_agreement_accepted"] == pytest.approx(
            agreed[labels == c].mean())
    assert 0 < metrics["judge"]["agreement_generated"] < metrics["judge"]["agreement_accepted"]
    # The validator's agreement with what it kept itself is 1 by construction: not offered.
    assert "accepted_samples" not in metrics and "agreement" not in \
        metrics["accepted_samples_validator_scores"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bundles"]["judge"]["ref"] == "default:digits"
    assert manifest["spec"]["judge"] == "default:digits"
    card = (out / "README.md").read_text()
    assert "An independent judge (`default:digits`" in card
    assert f"{100 * metrics['judge']['agreement_accepted']:.2f}% of the labels kept" in card


def test_the_cards_second_validator_filters_beside_the_first(defaults_run):
    """The digits card names a second validator: a kept sample is one both give its label at
    the threshold, and each filter's passes are counted alone."""
    out, result = defaults_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["second_validator"] == "default:digits"
    assert manifest["bundles"]["second_validator"]["name"] == "second_validator"
    threshold = manifest["spec"]["min_confidence"]
    images, labels = images_and_labels(out)
    for role in ("validator", "second_validator"):
        probs = load_bundle("default:digits", role).probabilities(images)
        assert (probs.argmax(1) == labels).all() and (probs.max(1) >= threshold).all(), role
    metrics = result.metrics
    assert metrics["passed_filter"] <= min(metrics["passed_confidence"],
                                           metrics["passed_second_validator"])
    assert metrics["passed_second_validator"] < metrics["generated"]
    assert "and the second validator" in (out / "README.md").read_text()


def test_second_validator_none_and_a_threshold_of_0_switch_it_off(tmp_path):
    none = run(["--spec", str(shipped_spec(tmp_path / "n.yaml", second_validator="none")),
                "--out", str(tmp_path / "n")])
    assert "second_validator" not in none.manifest["bundles"]
    assert none.metrics["passed_second_validator"] == none.metrics["generated"]
    off = run(["--spec", str(shipped_spec(tmp_path / "o.yaml", min_confidence=0)),
               "--out", str(tmp_path / "o")])
    assert off.metrics["passed_filter"] == off.metrics["generated"]


def test_fidelity_and_diversity_are_measured_against_real_images(defaults_run):
    out, _ = defaults_run
    metrics = json.loads((out / "metrics.json").read_text())
    fidelity = metrics["fidelity"]
    judge = load_bundle("default:digits", "judge")
    assert fidelity["real_vs_real"] == {k: judge.card["reference"]["yardstick"][k]
                                        for k in FIGURES}
    # Recomputed from the shards: the first 40 per class by sample id are all there are, one
    # draw short of the bank's M.
    images, labels = images_and_labels(out)
    _, features = judge.scores(images)
    again = judge.reference_bank().compare(features, labels,
                                           chunk=judge.card["reference"]["per_class"])
    assert fidelity["draws_per_class"] == 1
    for key in FIGURES:
        assert fidelity[key] == pytest.approx(again[key], abs=1e-6), key
        assert metrics["per_class"]["3"][key] == pytest.approx(again["per_class"][3][key]), key
    card = (out / "README.md").read_text()
    assert f"precision {fidelity['precision']:.3f}, recall {fidelity['recall']:.3f}" in card


def test_the_summary_shows_the_judge_not_the_validators_self_agreement(tmp_path):
    result = run_cli("generate", "--spec", shipped_spec(tmp_path / "s.yaml"), "--out",
                     tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "independent judge agrees with" in result.stdout
    assert "kept vs real (judge features, 400 per class): precision" in result.stdout
    assert "real vs real (as many other real images): precision 0.950" in result.stdout
    assert " accepted: agreement" not in result.stdout


def test_with_every_filter_off_the_card_scale_is_not_used(tmp_path):
    """The digits card samples at a widened scale for filtered runs; unfiltered, a widened
    draw handed users about 1 malformed digit in 10. A threshold the spec names itself gets the
    scale the card's scan found best at that threshold."""
    sampling = load_bundle("default:digits", "generator").card["sampling"]
    scanned = {(r["min_confidence"], r["latent_scale"]): r for r in sampling["scan"]}
    best_at_09 = max((r for (t, _), r in scanned.items() if t == 0.9
                      and r["judge_agreement"] >= sampling["fidelity_floor"]["judge_agreement"]),
                     key=lambda r: r["cas_mean"])["latent_scale"]
    for name, fields, scale in (("off", {"min_confidence": 0}, 1.0),
                                ("card", {}, sampling["latent_scale"]),
                                ("named", {"min_confidence": 0.9}, best_at_09),
                                ("chosen", {"min_confidence": 0, "latent_scale": 2}, 2.0)):
        result = run(["--spec", str(shipped_spec(tmp_path / f"{name}.yaml", **fields)),
                      "--out", str(tmp_path / name)])
        assert result.manifest["spec"]["latent_scale"] == scale, name


def test_the_realism_filter_keeps_only_samples_inside_the_real_manifold(tmp_path):
    spec = shipped_spec(tmp_path / "s.yaml", realism=0.8, min_confidence=0.5)
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    assert not result.failed and result.manifest["records"] == 400
    metrics = result.metrics
    assert metrics["passed_realism"] < metrics["generated"]
    assert metrics["passed_filter"] <= min(metrics["passed_realism"],
                                           metrics["passed_confidence"])
    validator = load_bundle("default:digits", "validator")
    images, labels = images_and_labels(tmp_path / "out")
    _, features = validator.scores(images)
    assert validator.reference_bank().inside(features, labels, 0.8).all()
    again = run(["--spec", str(spec), "--out", str(tmp_path / "again")])
    assert [f["sha256"] for s in again.manifest["shards"] for f in s["files"].values()] == \
        [f["sha256"] for s in result.manifest["shards"] for f in s["files"].values()]


@pytest.mark.parametrize("fields, message", [
    ({"realism": "on"}, "realism needs a reference bank in the validator"),
    ({"realism": -1}, "realism must be off, on or a radius scale in (0, 10], got -1"),
    ({"judge": 3}, "judge must be a bundle, default or none, got 3"),
    ({"judge": "default:letters"}, "judge class set 'letters' differs from the spec's 'digits'"),
    ({"second_validator": 3}, "second_validator must be a bundle, default or none, got 3"),
    ({"second_validator": str(ROOT / "kepkreator/assets/letters/validator")},
     "second_validator class set 'letters' differs from the spec's 'digits'"),
    ({"second_validator": "no/such/bundle"}, "bundle not found"),
])
def test_bad_judge_or_realism_is_one_line(tiny, tmp_path, fields, message):
    spec = tiny_spec(tmp_path / "s.yaml", tiny, **fields)
    assert_one_line_error(run_cli("generate", "--spec", spec, "--out", tmp_path / "o"), message)
    assert not (tmp_path / "o").exists()


def test_judge_none_measures_nothing(tiny, tmp_path):
    result = run(["--spec", str(tiny_spec(tmp_path / "s.yaml", tiny, judge="none")),
                  "--out", str(tmp_path / "out")])
    assert "judge" not in result.metrics and "judge" not in result.manifest["bundles"]
    assert "No independent judge measured these samples" in (tmp_path / "out" /
                                                              "README.md").read_text()


def test_precision_and_recall_tell_fidelity_from_diversity():
    """Other draws of the real distribution score like real data; samples collapsed onto one
    real image are all inside the manifold (precision) but reach almost none of it (recall);
    samples off the manifold score 0 on all four."""
    rng = np.random.default_rng(0)
    real, labels = rng.normal(size=(800, 6)), np.repeat([0, 1], 400)
    bank = ReferenceBank.build(real[::2], labels[::2])
    other = bank.compare(real[1::2], labels[1::2])
    assert all(0.85 < other[k] for k in ("precision", "recall", "coverage"))
    collapsed = bank.compare(real[0] + rng.normal(scale=0.01, size=(400, 6)), labels[1::2])
    assert collapsed["precision"] == 1 and collapsed["recall"] < 0.05
    assert collapsed["coverage"] < 0.1
    far = bank.compare(real[1::2] + 100, labels[1::2])
    assert all(far[k] == 0 for k in FIGURES)
    assert set(other["per_class"]) == {0, 1} and other["per_class"][1]["samples"] == 200
    # Too few samples of a class for their own k-NN radii: no recall there, the rest as before.
    few = bank.compare(real[1:8:2], labels[1:8:2])
    assert few["recall"] is None and few["per_class"][0]["recall"] is None
    assert few["per_class"][0]["samples"] == 4 and few["density"] is not None


def test_draws_of_m_samples_are_averaged_and_a_short_class_is_one_draw():
    """Every figure depends on the sample size, so samples are compared in draws of the bank's
    M: each class's figures are the mean over its disjoint draws, in order."""
    rng = np.random.default_rng(1)
    real, labels = rng.normal(size=(400, 6)), np.repeat([0, 1], 200)
    bank = ReferenceBank.build(real, labels)
    samples = rng.normal(size=(500, 6))
    sample_labels = np.array([0] * 300 + [1] * 150 + [0] * 50)  # class 0: 350, class 1: 150
    report = bank.compare(samples, sample_labels, chunk=100)
    zeros, ones = samples[sample_labels == 0], samples[sample_labels == 1]
    draws = [bank.compare(zeros[i:i + 100], np.zeros(100, int)) for i in (0, 100, 200)]
    for key in FIGURES:
        assert report["per_class"][0][key] == pytest.approx(np.mean([d[key] for d in draws]))
    assert report["per_class"][0]["draws"] == 3 and report["per_class"][0]["samples"] == 300
    assert report["per_class"][1]["draws"] == 1 and report["per_class"][1]["samples"] == 100
    one = bank.compare(ones[:100], np.ones(100, int))
    assert report["per_class"][1]["precision"] == pytest.approx(one["precision"])
    short = bank.compare(samples[:30], np.zeros(30, int), chunk=100)
    assert short["per_class"][0]["draws"] == 1 and short["per_class"][0]["samples"] == 30


def test_the_pipeline_averages_draws_of_the_judges_m(tiny, tmp_path):
    judge = tmp_path / "judge"
    shutil.copytree(tiny[1], judge)
    source = class_folders(tmp_path / "real", "0123456789", 40)
    assert run_cli("reference", judge, "--data", source, "--per-class", 20).returncode == 0
    spec = tiny_spec(tmp_path / "s.yaml", tiny, judge=str(judge), counts={"per_class": 50})
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    fidelity = result.metrics["fidelity"]
    assert fidelity["samples_per_class"] == 20 and fidelity["draws_per_class"] == 2
    images, labels = images_and_labels(tmp_path / "out")
    # By sample id: the pipeline measures each class's first accepted samples in that order.
    order = np.argsort(pq.read_table(tmp_path / "out" / "data").column("sample_id").to_numpy())
    images, labels = images[order], labels[order]
    first = np.concatenate([np.flatnonzero(labels == c)[:40] for c in range(10)])
    loaded = load_bundle(judge, "judge")
    again = loaded.reference_bank().compare(loaded.scores(images[first])[1], labels[first],
                                            chunk=20)
    for key in FIGURES:
        assert fidelity[key] == pytest.approx(again[key], abs=1e-6), key
    assert "mean of 2 draws of 20 per class" in (tmp_path / "out" / "README.md").read_text()


def test_a_reference_bank_is_built_from_real_images_and_checked_at_load(tiny, tmp_path):
    validator = tmp_path / "validator"
    shutil.copytree(tiny[1], validator)
    source = class_folders(tmp_path / "real", "0123456789", 60)
    result = run_cli("reference", validator, "--data", source, "--per-class", 25)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reference bank: 25 real images per class (k=5); yardstick")
    card = json.loads((validator / "card.json").read_text())
    assert card["reference"]["data"] == {"sources": [source]}
    bank = load_bundle(validator, "validator").reference_bank()
    assert isinstance(bank, ReferenceBank) and len(bank.labels) == 250
    (validator / "reference.npz").write_bytes(b"not the bank")
    with pytest.raises(BundleError, match="not the reference bank its card describes"):
        load_bundle(validator, "validator").reference_bank()
    assert_one_line_error(run_cli("reference", validator, "--data", source, "--per-class", 31),
                          "needs 62 images of each class")


def test_evaluate_reports_the_judge_and_fidelity(tmp_path):
    result = run_cli("evaluate", "--generator", "default:digits", "--validator",
                     "default:digits", "-n", 500, "--json-out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "judge, accepted  agreement" in result.stdout
    assert "(validator and second validator confidence >= 0.99:" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())["judged"]
    assert report["judge"] == "default:digits" and report["real_vs_real"]["density"] > 0.9
    assert report["real_vs_real"]["precision"] > 0.9 and 0 < report["accepted"]["recall"] <= 1
    assert "judge, real vs real: precision 0.950  recall 0.947" in result.stdout
    assert report["accepted"]["samples"] < report["generated"]["samples"] == 500


def test_evaluate_keeps_what_the_pipeline_keeps_with_the_filter_off():
    """A threshold of 0 turns both validators' test off in evaluate as in the pipeline: the
    judge's 'accepted' figures then describe every sample, not those the validator agrees with."""
    from kepkreator.evaluate import evaluate_generator
    report = evaluate_generator("default:digits", "default:digits", per_class=30, seed=1,
                                latent_scale=2.0, judge_ref="default:digits", min_confidence=0)
    judged = report["judged"]
    assert report["second_validator"] == "default:digits"
    assert judged["accepted"]["samples"] == judged["generated"]["samples"] == 300
