"""Downstream evaluation pieces: subsets, reading pipeline output back, the reference classifier."""
import numpy as np
import pytest

import json

from kepkreator.data import Dataset, load_sources
from kepkreator.cas import ReferenceTraining, train_and_test
from kepkreator.downstream import concat, per_class_subset, read_dataset
from kepkreator.study_report import markdown_table, summarise
from kepkreator.errors import DataError
from pipeline.run import run
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import class_folders, make_tiny_bundles, small_mnist, write_spec


def test_per_class_subset_is_exact_and_reproducible():
    from kepkreator.classsets import get_class_set
    labels = np.repeat(np.arange(10), 30)
    data = Dataset(np.arange(300 * 784, dtype=np.uint32).reshape(300, 28, 28).astype(np.uint8),
                   labels, get_class_set("digits"))
    a, b = per_class_subset(data, 7, seed=1), per_class_subset(data, 7, seed=1)
    assert (np.bincount(a.labels) == 7).all() and np.array_equal(a.images, b.images)
    assert not np.array_equal(per_class_subset(data, 7, seed=2).images, a.images)
    with pytest.raises(DataError, match="fewer than the 31"):
        per_class_subset(data, 31, seed=0)


def test_pipeline_output_trains_the_reference_classifier(tmp_path, mnist_dir):
    gen, val = make_tiny_bundles(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator=str(gen),
                      validator=str(val), counts={"per_class": 20}, min_confidence=0)
    out = run(["--spec", str(spec), "--out", str(tmp_path / "synthetic")]).out
    synthetic = read_dataset(out, "digits")
    assert len(synthetic) == 200 and (synthetic.class_counts() == 20).all()
    with pytest.raises(DataError, match="not class set 'letters'"):
        read_dataset(out, "letters")
    real = per_class_subset(load_sources([f"mnist:train@{mnist_dir}"], "digits"), 30, seed=0)
    test = per_class_subset(load_sources([f"mnist:test@{mnist_dir}"], "digits"), 20, seed=0)
    quick = ReferenceTraining(steps=40, batch_size=32)
    runs = {"c": [train_and_test(real, test, seed=s, schedule=quick) for s in (0, 1)],
            "d": [train_and_test(concat(real, synthetic), test, seed=0, schedule=quick)]}
    assert runs["c"][0]["accuracy"] > 0.3  # 300 real digits already teach something
    assert runs["d"][0]["train_samples"] == 500 and set(runs["d"][0]["per_class"]) == set("0123456789")
    summary = summarise(runs)
    assert summary["c"]["seeds"] == 2 and "| c |" in markdown_table(summary)


def test_a_study_of_many_classifiers_reads_no_retracing_warning():
    """A study trains dozens of reference classifiers in one process; Keras' predict traced each
    one's test pass anew and TensorFlow warned of a retracing loop in every tune-sampling and
    downstream log. The free-batch compiled call gives the same predictions without it."""
    import logging

    import keras

    from kepkreator.classsets import get_class_set
    from kepkreator.cas import build_reference_classifier
    from kepkreator.models.bundle import predict_in_batches
    rng = np.random.default_rng(0)
    digits = get_class_set("digits")
    train = Dataset(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), np.arange(64) % 10, digits)
    test = Dataset(rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), np.arange(30) % 10, digits)
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        runs = [train_and_test(train, test, seed=s, schedule=ReferenceTraining(steps=10,
                                                                               batch_size=16))
                for s in range(6)]
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert [r["test_samples"] for r in runs] == [30] * 6
    assert not [m for m in messages if "retracing" in m]
    strong = train_and_test(train, test, seed=0, schedule=ReferenceTraining(
        steps=4, batch_size=16, classifier="convnet4"))
    assert strong["classifier"] == "convnet4" and runs[0]["classifier"] == "lenet"
    convs = lambda m: sum(type(l).__name__ == "Conv2D" for l in m.layers)
    assert convs(build_reference_classifier(10, "convnet4")) == 4
    assert convs(build_reference_classifier(10)) == 2
    keras.utils.set_random_seed(0)
    model = build_reference_classifier(10)
    x = rng.uniform(-1, 1, (70, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(predict_in_batches(model, x, batch_size=32),
                               model.predict(x, batch_size=32, verbose=0), atol=1e-6)


def test_downstream_command_runs_every_setting_and_resumes(tmp_path, mnist_dir):
    small = small_mnist(tmp_path / "mnist", mnist_dir)
    gen, val = make_tiny_bundles(tmp_path)
    card = json.loads((gen / "card.json").read_text())  # as if tune-sampling had chosen 2.5
    (gen / "card.json").write_text(json.dumps({**card, "sampling": {"latent_scale": 2.5}}))
    study = tmp_path / "study"
    args = ["downstream", "--class-set", "digits", "--data", f"mnist:train@{small}",
            "--eval-data", f"mnist:test@{small}", "--out", study, "--seeds", "0,1",
            "--per-class", 10, "--synthetic-per-class", 15, "--steps", 8,
            "--generator", gen, "--validator", val, "--min-confidence", 0,
            "--subset-validator-epochs", 1, "--subset-gan-epochs", 1,
            "--subset-gan-batch-size", 16, "--subset-presets", "tiny,tiny,tiny", "--update-card"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    report = json.loads((study / "downstream.json").read_text())
    settings = report["settings"]
    assert list(settings) == ["a", "b", "c", "c_aug", "d", "d_aug", "e", "e_aug"]
    assert all(row["seeds"] == 2 for row in settings.values())
    assert settings["a"]["train_samples"] == settings["b"]["train_samples"] == 400
    assert settings["c"]["train_samples"] == 100
    assert settings["d"]["train_samples"] == settings["e"]["train_samples"] == 100 + 150
    assert settings["d_aug"]["train_samples"] == 100 + 150
    for plain, augmented in (("c", "c_aug"), ("d", "d_aug"), ("e", "e_aug")):
        assert settings[augmented]["runs"][0]["augment"] and not settings[plain]["runs"][0]["augment"]
    assert report["test_samples"] == 200 and len(report["checks"]) == 3
    # Each generator at its own card's scale: the subset-only one has no choice, so 1.
    assert report["latent_scales"] == {"b_d": 2.5, "e": 1.0}
    # The synthetic data went through the pipeline and was read back from its Parquet output.
    for name in ("synthetic-shipped", "synthetic-subset"):
        assert (study / name / "manifest.json").is_file() and list((study / name / "data").glob("*.parquet"))
    # The subset-only generator saw the subset only.
    card = json.loads((study / "subset-models" / "generator" / "card.json").read_text())
    assert card["training"]["data"]["train_samples"] == 100 and card["training"]["hparams"]["diff_augment"]
    recorded = json.loads((gen / "card.json").read_text())["metrics"]["downstream"]
    assert recorded["settings"]["b"]["accuracy_mean"] == settings["b"]["accuracy_mean"]
    assert "| e_aug |" in first.stdout and "## Per class" in (study / "downstream.md").read_text()

    stamps = {f: f.stat().st_mtime_ns for f in (study / "runs").glob("*.json")}
    assert len(stamps) == 16
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "reusing the finished dataset" in again.stderr
    assert {f: f.stat().st_mtime_ns for f in (study / "runs").glob("*.json")} == stamps
    # A subset dataset from a pipeline that did not record its latent scale cannot be reused.
    manifest_path = study / "synthetic-subset" / "manifest.json"
    recorded_manifest = manifest_path.read_text()
    legacy = json.loads(recorded_manifest)
    del legacy["spec"]["latent_scale"]
    manifest_path.write_text(json.dumps(legacy))
    assert_one_line_error(run_cli(*args), "did not record its latent scale")
    manifest_path.write_text(recorded_manifest)
    # Another protocol in the same directory would silently mix results: refused by name.
    other = [a if a != 8 else 9 for a in args]
    assert_one_line_error(run_cli(*other), "holds a study with other training")
    # So would other weights under the same generator path (default:NAME changes with releases).
    import keras
    from kepkreator.models.networks import build_generator
    keras.utils.set_random_seed(8)
    build_generator(10, "tiny").save(gen / "model.keras")
    assert_one_line_error(run_cli(*args), "holds a study with other model_sha256")


def test_a_study_pipeline_ignores_the_command_line_it_runs_under(tmp_path, tiny, monkeypatch,
                                                                 caplog):
    """The studies' pipeline options were parsed from sys.argv: each `kepkreator downstream`
    logged a dozen Beam warnings about its own arguments, and an argument Beam knows would have
    changed how the study's data was made."""
    import logging
    import sys

    from kepkreator.cli.studies import generate_with_pipeline
    gen, val = tiny
    monkeypatch.setattr(sys, "argv", ["kepkreator", "downstream", "--steps", "5",
                                      "--runner", "NoSuchRunner"])
    spec = {"class_set": "digits", "generator": str(gen), "validator": str(val),
            "counts": {"per_class": 2}, "seed": 0, "min_confidence": 0}
    with caplog.at_level(logging.WARNING):
        out = generate_with_pipeline(spec, tmp_path / "set")
    assert not [r for r in caplog.records if "nparseable" in r.getMessage()]
    assert len(read_dataset(out, "digits").labels) == 20


def test_ceiling_control_adds_other_real_images_and_says_when_there_are_too_few(tmp_path,
                                                                             mnist_dir):
    from kepkreator.downstream import DownstreamConfig, other_real
    small = small_mnist(tmp_path / "mnist", mnist_dir)
    train = load_sources([f"mnist:train@{small}"], "digits")
    cfg = DownstreamConfig(class_set="digits", data=[], out="", per_class=10,
                           synthetic_per_class=15)
    extra = other_real(train, cfg)
    subset = per_class_subset(train, 10, seed=0)
    assert list(extra.class_counts()) == [15] * 10
    assert not {im.tobytes() for im in extra.images} & {im.tobytes() for im in subset.images}
    study = tmp_path / "study"

    def args(out, extra_per_class):
        return ["downstream", "--class-set", "digits", "--data", f"mnist:train@{small}",
                "--eval-data", f"mnist:test@{small}", "--out", out, "--seeds", "0",
                "--per-class", 10, "--synthetic-per-class", extra_per_class, "--steps", 8,
                "--settings", "c_aug,ceiling_aug"]
    result = run_cli(*args(study, 15))
    assert result.returncode == 0, result.stderr
    settings = json.loads((study / "downstream.json").read_text())["settings"]
    assert settings["ceiling_aug"]["train_samples"] == 250
    assert settings["ceiling_aug"]["runs"][0]["augment"]
    assert "real images in place of the synthetic ones (ceiling_aug) gain" in result.stdout
    # 40 per class in the small set: 10 in the subset, 30 others.
    assert_one_line_error(run_cli(*args(tmp_path / "s2", 31)),
                          "ceiling_aug needs 31 real images per class beyond the subset")


def test_d_aug_alone_generates_from_the_shipped_generator_and_no_subset_models(tmp_path,
                                                                              mnist_dir):
    small = small_mnist(tmp_path / "mnist", mnist_dir)
    gen, val = make_tiny_bundles(tmp_path)
    study = tmp_path / "study"
    # Paths relative to the working directory, as a user types them: the pipeline's spec file
    # lands inside the study, and reads relative bundle paths from there.
    result = run_cli("downstream", "--class-set", "digits", "--data", f"mnist:train@{small}",
                     "--eval-data", f"mnist:test@{small}", "--out", "study", "--seeds", "0",
                     "--per-class", 10, "--synthetic-per-class", 15, "--steps", 8,
                     "--generator", gen.relative_to(tmp_path), "--validator",
                     val.relative_to(tmp_path), "--min-confidence", 0,
                     "--settings", "d_aug", "--update-card", "--card-key", "downstream_stacked",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((study / "downstream.json").read_text())
    row = report["settings"]["d_aug"]
    assert row["train_samples"] == 100 + 150 and row["runs"][0]["augment"]
    assert report["latent_scales"] == {"b_d": 1.0}
    assert (study / "synthetic-shipped" / "manifest.json").is_file()
    assert not (study / "subset-models").exists()
    metrics = json.loads((gen / "card.json").read_text())["metrics"]
    assert "downstream" not in metrics  # a partial study kept apart from the full one
    assert metrics["downstream_stacked"]["settings"]["d_aug"]["accuracy_mean"] == row["accuracy_mean"]

    # b alone draws the very set d_aug drew: b's figure does not depend on the other settings
    # (the pipeline lays out its work by the counts). Another --generation-seed draws other data.
    def study_b(out, *extra):
        done = run_cli("downstream", "--class-set", "digits", "--data", f"mnist:train@{small}",
                       "--eval-data", f"mnist:test@{small}", "--out", out, "--seeds", "0",
                       "--per-class", 10, "--synthetic-per-class", 15, "--steps", 8,
                       "--generator", gen, "--validator", val, "--min-confidence", 0,
                       "--settings", "b", *extra)
        assert done.returncode == 0, done.stderr
        return {f.name: f.read_bytes() for f in (out / "synthetic-shipped" / "data").iterdir()}
    shipped = {f.name: f.read_bytes() for f in (study / "synthetic-shipped" / "data").iterdir()}
    assert study_b(tmp_path / "b-alone") == shipped
    assert study_b(tmp_path / "b-seed1", "--generation-seed", 1) != shipped


def test_b_can_be_drawn_behind_the_realism_filter(tmp_path, mnist_dir):
    """--realism filters the shipped generator's set as a spec's realism key does, and is part
    of the study's protocol: the same folder refuses a run without it."""
    small = small_mnist(tmp_path / "mnist", mnist_dir)
    args = ["downstream", "--class-set", "digits", "--data", f"mnist:train@{small}",
            "--eval-data", f"mnist:test@{small}", "--out", tmp_path / "study", "--seeds", "0",
            "--steps", 8, "--settings", "b", "--min-confidence", 0.5, "--per-class", 10,
            "--synthetic-per-class", 15]
    result = run_cli(*args, "--realism", 0.8)
    assert result.returncode == 0, result.stderr
    shipped = tmp_path / "study" / "synthetic-shipped"
    assert json.loads((shipped / "manifest.json").read_text())["spec"]["realism"] == 0.8
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["passed_realism"] < metrics["generated"]
    assert json.loads((tmp_path / "study" / "study.json").read_text())["realism"] == 0.8
    assert_one_line_error(run_cli(*args), "realism")


def test_downstream_rejects_unknown_settings_in_one_line(tmp_path, mnist_dir):
    result = run_cli("downstream", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--eval-data", f"mnist:test@{mnist_dir}", "--out", tmp_path / "s",
                     "--settings", "a,z")
    assert_one_line_error(result, "unknown setting(s) z")


def test_probe_e_job_runs_on_validation_data_only(tmp_path, mnist_dir):
    """experiments/probe_e.py: the README's (e) probes, runnable; its validation set is never the subset."""
    import subprocess
    import sys

    from experiments.probe_e import validation_split
    from tests.conftest import ROOT
    train = load_sources([f"mnist:train@{mnist_dir}"], "digits")
    subset, validation = validation_split(train, 20, 0, size=500)
    assert len(subset) == 200 and len(validation) == 500
    seen = {img.tobytes() for img in subset.images}
    assert not any(img.tobytes() in seen for img in validation.images)

    gen, val = make_tiny_bundles(tmp_path)
    probe = [sys.executable, "-m", "experiments.probe_e", str(gen), str(val), "--data", str(mnist_dir),
             "--steps", "5", "--validation-size", "100", "--no-augment"]
    result = subprocess.run(probe + ["--per-class", "3,6", "--min-confidence", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "validation" in line]
    assert [line.split(" per class")[0] for line in lines] == ["3", "6"]
    strict = subprocess.run(probe + ["--per-class", "3", "--min-confidence", "1"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert_one_line_error(strict, "too few samples pass min_confidence")


def test_studies_recorded_before_newer_options_still_resume(tmp_path):
    from kepkreator.downstream import DownstreamConfig, _check_same_study, _record_study
    cfg = DownstreamConfig(class_set="digits", data=["mnist:train@x"], out=str(tmp_path))
    _record_study(tmp_path, _check_same_study(cfg, tmp_path))
    recorded = json.loads((tmp_path / "study.json").read_text())
    assert "reserve_holdout" not in recorded and "subset_modes_per_class" not in recorded
    assert "realism" not in recorded
    _check_same_study(cfg, tmp_path)  # same protocol: resumes
    cfg.reserve_holdout = 0.1
    with pytest.raises(DataError, match="reserve_holdout"):
        _check_same_study(cfg, tmp_path)
    cfg.reserve_holdout, cfg.subset_modes_per_class = 0.0, 2
    with pytest.raises(DataError, match="subset_modes_per_class"):
        _check_same_study(cfg, tmp_path)


@pytest.mark.parametrize("option, message", [
    (("--settings", "e", "--subset-presets", "default,nope,default"),
     "unknown generator preset 'nope'"),
    (("--settings", "a,,b"), "unknown setting(s) '' (known: a, b,"),
    # Read back into memory: an unbounded count would end in an out-of-memory kill.
    (("--synthetic-per-class", "100001"), "100001 is not in the range 1<=x<=100000"),
    # The cap per class is not enough with 62 classes: 6.2M images, 19 GB as float32.
    (("--per-class", "5", "--settings", "c,e"),
     "--per-class 5 gives at most 50 subset images, fewer than --subset-gan-batch-size 64"),
    (("--class-set", "byclass", "--synthetic-per-class", "20000"),
     "--synthetic-per-class 20000 x 62 classes is 1,240,000 images, more than the 1,000,000"),
])
def test_a_bad_study_option_is_refused_before_data_and_out(tmp_path, option, message):
    """An unknown subset preset surfaced only when the subset models were trained, after the
    study had recorded itself."""
    result = run_cli("downstream", "--class-set", "digits", "--data",
                     f"mnist:train@{tmp_path}/none", "--holdout", "0.1", "--out",
                     tmp_path / "study", *option)
    assert_one_line_error(result, message)
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("command", ["downstream", "tune-sampling"])
@pytest.mark.parametrize("bundle, message", [
    (("--generator", "default:letters"), "is a letters generator bundle, the study needs a digits "
                                         "generator"),
    (("--validator", "default:digits"), ""),  # the right one: refused only for the data below
    (("--validator", "default:letters"), "is a letters validator bundle, the study needs a "
                                         "digits validator"),
])
def test_a_bundle_of_another_class_set_is_refused_before_out_exists(tmp_path, command, bundle,
                                                                    message):
    """It used to be found only when the pipeline ran, after --out held a study record."""
    result = run_cli(command, "--class-set", "digits", "--data", f"mnist:train@{tmp_path}/none",
                     "--holdout", "0.1", "--out", tmp_path / "study", *bundle)
    assert_one_line_error(result, message or "data directory not found")
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("command", ["downstream", "tune-sampling"])
def test_a_folder_without_an_earlier_study_is_refused_and_left_alone(tmp_path, command):
    """Studies write runs, datasets and reports into --out; a user's folder gets none of them.
    Refused before any data is read: the data path here does not exist."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    args = [command, "--class-set", "digits", "--data", f"mnist:train@{tmp_path / 'nowhere'}",
            "--holdout", "0.1", "--out", folder]
    assert_one_line_error(run_cli(*args), "is not empty and holds no earlier study to resume")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"
    (folder / "notes.txt").unlink()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    args[args.index(folder)] = a_file
    assert_one_line_error(run_cli(*args), "is a file")
    assert a_file.read_text() == "x"


def test_data_a_study_cannot_use_is_refused_before_out_exists(tmp_path):
    """A subset larger than the data, or eval data that is the training data, was refused only
    after the study had recorded itself in --out; the second said 'class 0 has 0 samples'."""
    data = class_folders(tmp_path / "data", "0123456789", 12)
    common = ["downstream", "--class-set", "digits", "--data", data, "--out", tmp_path / "study",
              "--settings", "a"]
    assert_one_line_error(run_cli(*common, "--eval-data", data),
                          f"every image of {data} is also in {data}: nothing is left to train on")
    assert_one_line_error(run_cli(*common, "--holdout", "0.2"),
                          "fewer than the 200 per class asked for")
    assert not (tmp_path / "study").exists()


def test_the_cas_target_says_how_far_b_is_below_a():
    from kepkreator.study_report import check_targets, markdown_table
    row = lambda acc: {"accuracy_mean": acc, "accuracy_spread": 0.0, "description": "",
                       "train_samples": 10, "seeds": 1, "runs": [{"accuracy": acc}]}
    (missed,) = check_targets({"a": row(0.9894), "b": row(0.9835)})
    assert not missed["met"] and missed["value_pp"] == pytest.approx(0.59)
    table = markdown_table({"a": row(0.9894), "b": row(0.9835)}, [missed])
    assert "(b) at most 0.3 pp below (a): 0.59 pp below — MISSED" in table
    assert "(98.94–98.94, 1 seed) |" in table
    (met,) = check_targets({"a": row(0.9894), "b": row(0.9870)})
    assert met["met"] and met["value_pp"] == pytest.approx(0.24)
    # 0.9947 - 0.9917 is 0.0030000000000000027 in floating point: exactly 0.30 pp meets the target.
    (boundary,) = check_targets({"a": row((0.9946 + 0.9948) / 2), "b": row((0.9918 + 0.9916) / 2)})
    assert boundary["met"] and boundary["value_pp"] == 0.3
    (over,) = check_targets({"a": row(0.99475), "b": row(0.9917)})
    assert not over["met"] and over["value_pp"] == pytest.approx(0.305)
