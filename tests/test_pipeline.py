"""The generation pipeline on Beam's real local runner: exact counts, shards, splits, the
dataset card, byte-identical reruns and the sampling settings."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kepkreator.models.bundle import ASSETS
from kepkreator.data.generated import verify_folder
from pipeline.run import run
from tests.conftest import run_cli
from tests.pipeline_fixtures import tiny_spec, write_spec


def test_manifest_counts_and_files(tiny_dataset):
    out, result = tiny_dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["counts"] == {"0": 9, "3": 21, "9": 5}
    assert [s["records"] for s in manifest["shards"]] == [11, 12, 12]
    assert manifest["bundles"]["generator"]["card_sha256"]
    assert {"apache-beam", "numpy", "pyarrow", "keras"} <= set(manifest["versions"])
    for name in ("metrics.json", "samples.png", "features.json", "dataset_info.json", "README.md"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert verify_folder(out)[1] == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_class"]["3"]["requested"] == 21 and metrics["shortfall"] == 0
    assert Image.open(out / "samples.png").height > 3 * 28  # one row per class present


def test_every_shard_mixes_the_classes(tiny_dataset):
    """A reader taking one shard, or the first rows, must not get one class: units used to hold
    one class each and the shards came out in class blocks."""
    out, _ = tiny_dataset
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        counts = np.asarray(shard["class_counts"])
        assert (counts[[0, 3, 9]] > 0).all(), shard["class_counts"]
        labels = pq.read_table(out / shard["files"]["parquet"]["path"]).column("label").to_numpy()
        assert np.bincount(labels, minlength=10).tolist() == shard["class_counts"]
        assert (np.diff(labels) != 0).sum() >= 3  # classes alternate, not one block each


def test_dataset_card_describes_what_made_the_data(tiny_dataset):
    """README.md: HF front matter that still loads (above), and what a reader must know —
    the bundles, the filter, the per-class counts — taken from this run, not boilerplate."""
    import yaml
    out, _ = tiny_dataset
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert front["size_categories"] == ["n<1K"] and "synthetic" in front["tags"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bundles"]["generator"]["model_sha256"][:16] in text
    assert "The filter was off" in text  # min_confidence 0 in this job
    assert "its rows in random class order" in text
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 3 |")]
    assert rows and rows[0][1] == "21" and rows[0][2] == f"{metrics['per_class']['3']['generated']:,}"
    assert "What the generator's card measured" not in text  # the tiny bundle measured nothing


def test_dataset_card_carries_the_generators_evidence():
    from kepkreator.models.card import read_card
    from pipeline.datacard import generator_evidence, size_category
    card = read_card(ASSETS / "digits" / "generator")
    cas, copying = generator_evidence(card)
    settings = card["metrics"]["downstream"]["settings"]
    assert f"{100 * settings['b']['accuracy_mean']:.2f}% on real test data" in cas
    assert f"against {100 * settings['a']['accuracy_mean']:.2f}%" in cas
    assert f"{card['metrics']['evaluation']['copying']['distance_ratio']:.2f}×" in copying
    assert generator_evidence({"metrics": {}}) == []
    assert [size_category(n) for n in (999, 1000, 35_000, 10**8)] == [
        "n<1K", "1K<n<10K", "10K<n<100K", "100M<n<1B"]


def _hashes(out):
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    return [f["sha256"] for s in manifest["shards"] for f in s["files"].values()]


def _pixels(out, split):
    table = pq.read_table([str(p) for p in sorted((Path(out) / "data").glob(f"{split}-*.parquet"))])
    return {np.asarray(Image.open(io.BytesIO(b))).tobytes()
            for b in table.column("image").combine_chunks().field("bytes").to_pylist()}, \
        set(table.column("sample_id").to_pylist())


def test_splits_in_one_job_are_disjoint_and_every_reader_finds_them(tiny, tmp_path):
    """Train and validation from one job: each split from seeds of its own (no sample in two),
    the classes cut in proportion, and TFDS, HF, inspect and dataset:SPLIT@DIR all see both."""
    import datasets
    import tensorflow_datasets as tfds

    from kepkreator.data import load_sources
    from kepkreator.errors import DataError
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"0": 20, "3": 30},
                     split={"train": 0.8, "validation": 0.2})
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    out = tmp_path / "out"
    assert not result.failed
    manifest = result.manifest
    assert manifest["splits"] == {"train": {"records": 40, "counts": {"0": 16, "3": 24},
                                            "shards": 3},
                                  "validation": {"records": 10, "counts": {"0": 4, "3": 6},
                                                 "shards": 1}}
    assert manifest["spec"]["split"] == {"train": 0.8, "validation": 0.2}
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        *[f"train-0000{i}-of-00003.parquet" for i in range(3)], "validation-00000-of-00001.parquet"]
    assert (out / "kepkreator_digits-validation.tfrecord-00000-of-00001").is_file()
    assert verify_folder(out)[1] == []
    train_pixels, train_ids = _pixels(out, "train")
    val_pixels, val_ids = _pixels(out, "validation")
    assert len(train_ids) == 40 and len(val_ids) == 10
    assert len(train_pixels & val_pixels) == 0 and len(train_ids & val_ids) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"]["validation"] == {"requested": 10, "accepted": 10, "shortfall": 0,
                                               "shards": 1, "counts": {"0": 4, "3": 6}}
    card = (out / "README.md").read_text()
    assert "| class | samples | train | validation | generated |" in card
    assert "| 3 | 30 | 24 | 6 |" in card

    builder = tfds.builder_from_directory(str(out))
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 40, "validation": 10}
    assert len(list(builder.as_dataset(split="validation").as_numpy_iterator())) == 10
    assert len(datasets.load_dataset(str(out), split="validation")) == 10
    # pandas reads data/ as one table: the split column keeps the splits apart.
    import pandas as pd
    frame = pd.read_parquet(out / "data")
    assert frame.groupby("split").size().to_dict() == {"train": 40, "validation": 10}
    assert "splits `train` (40 samples, 3 shards), `validation` (10 samples, 1 shard)" in card

    validation = load_sources([f"dataset:validation@{out}"], "digits", dedupe=False)
    assert validation.class_counts()[[0, 3]].tolist() == [4, 6]
    with pytest.raises(DataError, match="holds splits train, validation: name one"):
        load_sources([f"dataset@{out}"], "digits")
    with pytest.raises(DataError, match="has no split 'test'"):
        load_sources([f"dataset:test@{out}"], "digits")
    shown = run_cli("inspect", out)
    assert shown.returncode == 0 and "splits train 40, validation 10" in shown.stdout

    # The same seed in a separate job named "validation" must not repeat the train samples.
    alone = tiny_spec(tmp_path / "alone.yaml", tiny, counts={"0": 20, "3": 30}, split="train")
    named = tiny_spec(tmp_path / "named.yaml", tiny, counts={"0": 20, "3": 30}, split="validation")
    run(["--spec", str(alone), "--out", str(tmp_path / "alone")])
    run(["--spec", str(named), "--out", str(tmp_path / "named")])
    repeated = _pixels(tmp_path / "alone", "train")[0] & _pixels(tmp_path / "named", "validation")[0]
    assert len(repeated) == 0


def test_determinism_in_process_and_multi_process(tiny_dataset, tiny, tmp_path):
    out, _ = tiny_dataset
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"0": 9, "3": 21, "9": 5})
    again = run(["--spec", str(spec), "--out", str(tmp_path / "again")])
    assert _hashes(again.out) == _hashes(out)
    result = run_cli("generate", "--spec", spec, "--out", tmp_path / "multi",
                     "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _hashes(tmp_path / "multi") == _hashes(out)
    other_seed = tiny_spec(tmp_path / "seed.yaml", tiny, counts={"0": 9, "3": 21, "9": 5}, seed=4)
    assert _hashes(run(["--spec", str(other_seed), "--out", str(tmp_path / "s4")]).out) != _hashes(out)


def test_top_up_rounds_reach_exact_counts(tiny, tmp_path):
    # An untrained validator agrees with the request ~1 time in 10: round 0 falls short and
    # later rounds must top up to the exact count.
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"1": 12, "2": 12}, min_confidence=0.01,
                     max_rounds=6, max_oversample=200)
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    metrics = result.metrics
    assert metrics["generated"] > 3 * metrics["accepted"]
    if result.failed:  # the untrained validator may never pick a class: then say so exactly
        assert "shortfall" in result.failed and not (tmp_path / "out" / "manifest.json").exists()
    else:
        assert result.manifest["counts"] == {"1": 12, "2": 12}


def test_emnist_orientation_transposes_images(tiny_dataset, tiny, tmp_path):
    out, _ = tiny_dataset
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"0": 9, "3": 21, "9": 5},
                     orientation="emnist", formats=["parquet"])
    flipped = Path(run(["--spec", str(spec), "--out", str(tmp_path / "out")]).out)
    decode = lambda t: np.stack([np.asarray(Image.open(io.BytesIO(b)))
                                 for b in t.column("image").combine_chunks().field("bytes").to_pylist()])
    upright = decode(pq.read_table(out / "data"))
    transposed = decode(pq.read_table(flipped / "data"))
    np.testing.assert_array_equal(transposed, upright.transpose(0, 2, 1))
    assert not list(flipped.glob("*.tfrecord-*"))


def _images(out):
    table = pq.read_table(Path(out) / "data")
    return np.stack([np.asarray(Image.open(io.BytesIO(b)))
                     for b in table.column("image").combine_chunks().field("bytes").to_pylist()])


def test_latent_scale_from_spec_or_generator_card(tiny_dataset, tiny, tmp_path):
    out, result = tiny_dataset
    assert result.manifest["spec"]["latent_scale"] == 1.0  # no card choice: the plain normal
    counts = {"0": 9, "3": 21, "9": 5}
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts=counts, latent_scale=2.5)
    wide = run(["--spec", str(spec), "--out", str(tmp_path / "wide")])
    assert wide.manifest["spec"]["latent_scale"] == 2.5
    assert np.abs(_images(wide.out).astype(int) - _images(out)).mean() > 1
    # A generator card may carry its own choice; the spec's key, when given, wins.
    gen = shutil.copytree(tiny[0], tmp_path / "gen")
    card = json.loads((gen / "card.json").read_text())
    (gen / "card.json").write_text(json.dumps({**card, "sampling": {"latent_scale": 2.5}}))
    # ... for filtered sampling (the untrained validator keeps few: shortfalls tolerated): a
    # widened draw is only safe behind a filter, so with every filter off the scale is 1.
    spec = tiny_spec(tmp_path / "card.yaml", (gen, tiny[1]), counts=counts, min_confidence=0.01)
    from_card = run(["--spec", str(spec), "--out", str(tmp_path / "from_card"),
                     "--shortfall_tolerance", "1"])
    assert from_card.manifest["spec"]["latent_scale"] == 2.5
    spec = tiny_spec(tmp_path / "card-off.yaml", (gen, tiny[1]), counts=counts)
    unfiltered = run(["--spec", str(spec), "--out", str(tmp_path / "unfiltered")])
    assert unfiltered.manifest["spec"]["latent_scale"] == 1.0
    np.testing.assert_array_equal(_images(unfiltered.out), _images(out))
    spec = tiny_spec(tmp_path / "override.yaml", (gen, tiny[1]), counts=counts, latent_scale=1)
    np.testing.assert_array_equal(_images(run(["--spec", str(spec), "--out",
                                               str(tmp_path / "override")]).out), _images(out))


@pytest.mark.skipif(not (ASSETS / "digits" / "generator" / "card.json").exists(),
                    reason="shipped digits bundles not built yet")
def test_shipped_digits_conditioned_filter(tmp_path):
    from kepkreator.models.bundle import load_bundle
    spec = write_spec(tmp_path / "spec.yaml", class_set="digits", generator="default:digits",
                      validator="default:digits", counts={"per_class": 40}, min_confidence=0.99,
                      shards=2)
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    assert not result.failed and result.manifest["counts"] == {str(d): 40 for d in range(10)}
    table = pq.read_table(tmp_path / "out" / "data")
    images = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in
                       table.column("image").combine_chunks().field("bytes").to_pylist()])
    probs = load_bundle("default:digits", "validator").probabilities(images)
    labels = table.column("label").to_numpy()
    assert (probs.argmax(1) == labels).all() and (probs.max(1) >= 0.99).all()
    np.testing.assert_allclose(probs.max(1), table.column("confidence").to_numpy(), atol=1e-5)


def test_per_class_threshold_on_the_shipped_letters(tmp_path):
    """I and l look alike, so the letters validator is rarely sure of an I: a lower bar for I
    alone keeps I's that a global 0.99 would reject, and holds every other class at 0.99."""
    spec = write_spec(tmp_path / "spec.yaml", class_set="letters", generator="default:letters",
                      validator="default:letters", counts={"I": 40, "A": 40}, shards=1,
                      min_confidence={"default": 0.99, "I": 0.5})
    result = run(["--spec", str(spec), "--out", str(tmp_path / "out")])
    assert not result.failed and result.manifest["counts"] == {"A": 40, "I": 40}
    assert result.manifest["spec"]["min_confidence"] == {"default": 0.99, "I": 0.5}
    frame = pq.read_table(tmp_path / "out" / "data").to_pandas()
    confidence = frame.groupby("label_name")["confidence"]
    assert confidence.min()["A"] >= 0.99 and confidence.min()["I"] >= 0.5
    assert confidence.min()["I"] < 0.99  # the I's a global 0.99 would have lost
    assert "validator confidence ≥ 0.99 (I: 0.5)" in (tmp_path / "out" / "README.md").read_text()
    # Without min_confidence the spec takes the threshold the generator card's CAS was measured
    # at (letters: 0.5), not the tool-wide 0.9 that cost letters users 1.9 pp of CAS.
    card = json.loads((ASSETS / "letters" / "generator" / "card.json").read_text())
    spec = write_spec(tmp_path / "card.yaml", class_set="letters", generator="default:letters",
                      validator="default:letters", counts={"I": 20}, shards=1)
    from_card = run(["--spec", str(spec), "--out", str(tmp_path / "from_card")])
    assert from_card.manifest["spec"]["min_confidence"] == card["sampling"]["min_confidence"] == 0.5
    kept = pq.read_table(tmp_path / "from_card" / "data").column("confidence").to_numpy()
    assert kept.min() >= 0.5 and kept.min() < 0.9


def test_balance_to_an_existing_dataset(tiny_dataset, tiny, tmp_path):
    out, _ = tiny_dataset
    spec = tiny_spec(tmp_path / "spec.yaml", tiny,
                     counts={"balance_to": {"labels": str(out), "target": 10}})
    result = run(["--spec", str(spec), "--out", str(tmp_path / "top")])
    expected = {str(d): 10 for d in range(10)}
    expected.update({"0": 1, "9": 5})
    del expected["3"]
    assert result.manifest["counts"] == expected
