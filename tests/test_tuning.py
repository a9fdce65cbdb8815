"""`kepkreator tune`: Keras Tuner over the GAN, scored by the validator, best trial as a bundle."""
import csv
import json

import numpy as np
import pytest

from kepkreator.models.bundle import load_bundle
from kepkreator.tuning import OBJECTIVES, trial_metrics
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import class_folders, make_tiny_bundles

TINY = ["--max-train-samples", 128, "--eval-per-class", 8, "--search-space", "tiny",
        "--presets", "tiny,tiny"]


def _read_rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_two_trial_random_search_minimises_wcis_and_exports_the_best(tmp_path, mnist_dir):
    _, validator = make_tiny_bundles(tmp_path)
    out = tmp_path / "search"
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--eval-data", f"mnist:test@{mnist_dir}", "--out", out, "--objective", "wcis",
                     "--trials", 2, "--epochs", 1, "--validator", validator, *TINY)
    assert result.returncode == 0, result.stderr
    rows = _read_rows(out)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert rows[0]["latent_dim"] and rows[0]["g_learning_rate"] and rows[0]["frechet"]
    # Minimised: the best (first) row has the lowest WCIS, and it is the exported bundle.
    assert float(rows[0]["wcis"]) <= float(rows[1]["wcis"])
    best = load_bundle(out / "best", "generator")
    tuning = best.card["training"]["tuning"]
    assert tuning["trial_id"] == rows[0]["trial_id"] and tuning["direction"] == "min"
    assert best.card["metrics"]["evaluation"]["generated"]["wcis"] == pytest.approx(
        float(rows[0]["wcis"]))
    assert best.card["signature"]["latent_dim"] == int(rows[0]["latent_dim"])
    assert best.generate(np.zeros((3, int(rows[0]["latent_dim"])), np.float32),
                         np.array([0, 1, 2])).shape == (3, 28, 28)
    assert "| trial_id |" in (out / "results.md").read_text() and "wcis ↓" in result.stdout
    # Keras Tuner's progress goes to stderr; stdout is the results table and the best bundle.
    assert "Running Trial" in result.stderr and "Running Trial" not in result.stdout
    # Resuming under another objective would rank the old trials' WCIS as agreement; refused.
    again = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                    "--eval-data", f"mnist:test@{mnist_dir}", "--out", out, "--objective",
                    "agreement", "--trials", 3, "--epochs", 1, "--validator", validator, *TINY)
    assert_one_line_error(again, "holds a search with other settings (objective 'wcis' -> "
                                 "'agreement')", "give another --out")
    assert len(_read_rows(out)) == 2


def test_hyperband_continues_promoted_trials(tmp_path, mnist_dir):
    out = tmp_path / "search"
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--out", out, "--algorithm", "hyperband", "--trials", 4, "--epochs", 3,
                     *TINY)
    assert result.returncode == 0, result.stderr
    rows = _read_rows(out)
    promoted = [r for r in rows if r["continues"]]
    assert len(rows) == 4 and promoted and promoted[0]["epochs"] == "3"
    parent = next(r for r in rows if r["trial_id"] == promoted[0]["continues"])
    assert all(parent[k] == promoted[0][k] for k in ("latent_dim", "channels", "batch_size"))
    card = json.loads((out / "search" / f"trial_{promoted[0]['trial_id']}" / "generator" /
                       "card.json").read_text())
    assert card["training"]["tuning"]["initial_epoch"] == 1


def test_directions_and_degenerate_scores():
    assert OBJECTIVES == {"agreement": "max", "bcis": "max", "wcis": "min", "frechet": "min"}
    report = {"generated": {"agreement": 0.5, "bcis": float("nan"), "wcis": float("nan"),
                            "is": 2.0}, "frechet_distance": 3.0}
    metrics = trial_metrics(report)
    assert metrics["bcis"] == -1e9 and metrics["wcis"] == 1e9 and metrics["frechet"] == 3.0


def test_frechet_without_real_data_is_a_one_line_error(tmp_path, mnist_dir):
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--out", tmp_path / "s", "--objective", "frechet", *TINY)
    assert_one_line_error(result, "objective frechet needs real data")
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--out", tmp_path / "s", "--objective", "loss")
    assert_one_line_error(result, "--objective")


def test_fewer_images_than_the_largest_batch_are_refused_before_any_trial(tmp_path, mnist_dir):
    """Each trial used to fail on its own, with Keras Tuner's traceback, then 'no trial
    completed'."""
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{mnist_dir}",
                     "--per-class", "2", "--out", tmp_path / "s", "--trials", "1")
    assert_one_line_error(result, "20 training images are fewer than the search space's "
                                  "largest batch size, 256")
    assert not (tmp_path / "s").exists()


def test_a_folder_without_an_earlier_search_is_refused_and_left_alone(tmp_path):
    """The search writes out/search and replaces out/best, so --out must be new, empty or an
    earlier search; checked before any data is read (the data path here does not exist)."""
    mine = tmp_path / "mine"
    (mine / "best").mkdir(parents=True)
    (mine / "best" / "notes.txt").write_text("keep me")
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{tmp_path / 'no'}",
                     "--out", mine, *TINY)
    assert_one_line_error(result, "is not empty and holds no earlier search to resume")
    assert (mine / "best" / "notes.txt").read_text() == "keep me"


def test_an_unknown_preset_is_refused_before_any_trial(tmp_path):
    """It used to fail every trial, each with Keras Tuner's traceback, then 'no trial
    completed'; the data path here does not exist, so the refusal comes first."""
    result = run_cli("tune", "--class-set", "digits", "--data", f"mnist:train@{tmp_path}/none",
                     "--holdout", "0.1", "--out", tmp_path / "search", "--presets", "tiny,nope")
    assert_one_line_error(result, "unknown discriminator preset 'nope'")
    assert not (tmp_path / "search").exists()


def test_a_class_without_training_images_is_refused_before_any_trial(tmp_path):
    data = class_folders(tmp_path / "data", "01", 40)
    result = run_cli("tune", "--class-set", "digits", "--data", data, "--out", tmp_path / "search",
                     "--trials", 1, "--epochs", 1, *TINY)
    assert_one_line_error(result, "8 of the 10 classes of 'digits' have no training images")
    assert not (tmp_path / "search").exists()
