"""A generated dataset as its readers meet it: pyarrow, pandas, tf.data, TFDS, Hugging Face,
KepKreator's own dataset@ source and inspect, which refuse a folder that is not what its
manifest says."""
import io
import json
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.run import run
from tests.conftest import assert_one_line_error, run_cli
from tests.pipeline_fixtures import tiny_spec


def test_a_dataset_reads_back_as_a_data_source(tiny_dataset, tiny, tmp_path):
    """``dataset@DIR`` feeds a generated dataset to training and evaluation like real data:
    the same images whichever format and orientation it was written in, and only when the
    manifest says it is complete and its shards are the ones it names."""
    from kepkreator.data import load_sources
    from kepkreator.errors import DataError
    from kepkreator.imageio import decode_png
    out, _ = tiny_dataset
    data = load_sources([f"dataset@{out}"], "digits", dedupe=False)
    table = pq.read_table(out / "data")
    assert data.labels.tolist() == table.column("label").to_pylist()
    assert np.array_equal(data.images[5], decode_png(table.column("image")[5]["bytes"].as_py()))
    assert data.provenance[0] == {"source": f"dataset@{out}", "loaded": 35, "kept": 35}
    with pytest.raises(DataError, match="none of the sources has samples of class set 'letters'"):
        load_sources([f"dataset@{out}"], "letters")
    # Written transposed, TFRecord only: read back upright, the same images.
    spec = tiny_spec(tmp_path / "spec.yaml", tiny, counts={"0": 9, "3": 21, "9": 5},
                     orientation="emnist", formats=["tfrecord"])
    other = run(["--spec", str(spec), "--out", str(tmp_path / "emnist")]).out
    again = load_sources([f"dataset@{other}"], "digits", dedupe=False)
    assert np.array_equal(again.images, data.images) and np.array_equal(again.labels, data.labels)
    # Into a wider class set by character: digits keep their characters in 'balanced'.
    balanced = load_sources([f"dataset@{out}"], "balanced", dedupe=False)
    assert [balanced.class_set.chars[i] for i in balanced.labels] == [
        data.class_set.chars[i] for i in data.labels]
    # Incomplete or altered: refused, with the reason.
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json: not a complete KepKreator dataset"):
        load_sources([f"dataset@{broken}"], "digits")
    shutil.copy(out / "manifest.json", broken / "manifest.json")
    shard = sorted((broken / "data").glob("*.parquet"))[1]
    original = shard.read_bytes()
    shard.write_bytes(original[:-10])
    with pytest.raises(DataError, match="does not verify against its manifest: data/train-"):
        load_sources([f"dataset@{broken}"], "digits")
    assert_one_line_error(run_cli("evaluate", "--validator", tiny[1], "--real",
                                  f"dataset@{broken}"), "the manifest says")
    shard.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, other bytes
    with pytest.raises(DataError, match="differs from the manifest"):
        load_sources([f"dataset@{broken}"], "digits")
    shard.write_bytes(original)
    (broken / "data" / "train-00003-of-00003.parquet").write_bytes(original)  # one too many
    assert_one_line_error(run_cli("evaluate", "--validator", tiny[1], "--real",
                                  f"dataset@{broken}"), "unlisted file data/train-00003-of-")
    # An earlier format's manifest checksums no reader metadata: refused, with what to do.
    old = tmp_path / "format2"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.update(format="kepkreator-dataset/2")
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="written by an earlier KepKreator.*generate it again"):
        load_sources([f"dataset@{old}"], "digits")


def test_evaluate_reads_a_generated_dataset(tiny_dataset, tiny, tmp_path):
    out, _ = tiny_dataset
    result = run_cli("evaluate", "--validator", tiny[1], "--real", f"dataset@{out}",
                     "--json-out", tmp_path / "v.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["real"]["samples"] == 35


def test_parquet_with_pyarrow_pandas_and_hf_metadata(tiny_dataset):
    out, _ = tiny_dataset
    table = pq.read_table(out / "data")
    assert table.num_rows == 35
    assert table.schema.names == ["image", "label", "label_name", "confidence", "sample_id",
                                  "split"]
    hf = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["image"]["_type"] == "Image" and hf["label"]["names"] == list("0123456789")
    frame = table.to_pandas()
    assert frame["label"].value_counts().to_dict() == {3: 21, 0: 9, 9: 5}
    assert (frame["label_name"] == frame["label"].astype(str)).all()
    assert frame["sample_id"].is_unique and set(frame["split"]) == {"train"}
    image = np.asarray(Image.open(io.BytesIO(frame["image"][0]["bytes"])))
    assert image.shape == (28, 28) and image.dtype == np.uint8 and frame["image"][0]["path"] is None


def test_tfrecord_with_tf_data(tiny_dataset):
    import tensorflow as tf
    out, _ = tiny_dataset
    files = sorted(str(p) for p in out.glob("kepkreator_digits-train.tfrecord-*"))
    assert [p.rsplit("/", 1)[-1] for p in files] == [
        f"kepkreator_digits-train.tfrecord-0000{i}-of-00003" for i in range(3)]
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)).map(
        lambda e: (tf.io.decode_png(e["image"], channels=1), e["label"]))
    labels, shapes = [], set()
    for image, label in ds:
        labels.append(int(label))
        shapes.add(tuple(image.shape))
    assert sorted(labels) == sorted([0] * 9 + [3] * 21 + [9] * 5) and shapes == {(28, 28, 1)}


def test_tfds_builder_from_directory(tiny_dataset):
    import tensorflow_datasets as tfds
    out, _ = tiny_dataset
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.splits["train"].num_examples == 35
    assert builder.info.features["label"].names == list("0123456789")
    examples = list(builder.as_dataset(split="train", as_supervised=True).as_numpy_iterator())
    assert len(examples) == 35 and examples[0][0].shape == (28, 28, 1)


def test_hugging_face_datasets(tiny_dataset):
    import datasets
    out, _ = tiny_dataset
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 35 and ds.features["label"].names == list("0123456789")
    assert ds[0]["image"].size == (28, 28)  # decoded to a PIL image by the Image feature
    from_card = datasets.load_dataset(str(out), split="train")  # README.md's configs
    assert len(from_card) == 35


def test_inspect_verifies_and_detects_tampering(tiny_dataset, tmp_path):
    out, _ = tiny_dataset
    result = run_cli("inspect", out)
    assert result.returncode == 0, result.stderr
    assert "verified: 12 files match their sha256 in manifest.json (6 shards, 6 metadata)" in \
        result.stdout
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = next(copy.glob("data/*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    assert_one_line_error(run_cli("inspect", copy), "sha256 mismatch")
    (copy / "manifest.json").unlink()
    assert_one_line_error(run_cli("inspect", copy), "not a complete KepKreator dataset")


def _edit_manifest(change):
    def edit(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _edit(name, old, new):
    def edit(folder):
        (folder / name).write_text((folder / name).read_text().replace(old, new))
    return edit


def _shard_path(path):
    def change(manifest):
        manifest["shards"][0]["files"]["parquet"]["path"] = path
    return change


@pytest.mark.parametrize("tamper, problem", [
    # A shard pandas and Hugging Face would read when they glob data/.
    (lambda f: shutil.copy(f / "data" / "train-00000-of-00003.parquet",
                           f / "data" / "train-00004-of-00004.parquet"),
     "unlisted file data/train-00004-of-00004.parquet"),
    (lambda f: (f / "notes.txt").write_text("mine"), "unlisted file notes.txt"),
    (_edit("features.json", '"numClasses": "10"', '"numClasses": "11"'),
     "sha256 mismatch in features.json"),
    (_edit("metrics.json", '"accepted": 35', '"accepted": 36'), "sha256 mismatch in metrics.json"),
    (lambda f: (f / "metrics.json").write_text("{not json"), "metrics.json has 9 bytes"),
    (lambda f: (f / "README.md").unlink(), "missing README.md"),
    (lambda f: ((f / "dataset_info.json").unlink(),
                (f / "dataset_info.json").symlink_to(f / "features.json")),
     "dataset_info.json is a symbolic link"),
    (_edit_manifest(lambda m: m["metadata"].pop("label.labels.txt")),
     "unlisted file label.labels.txt"),
    (_edit_manifest(_shard_path("/etc/passwd")),
     "shards[0].files.parquet must be {path: a relative path inside the dataset"),
    (_edit_manifest(_shard_path("../job/out/data/train-00000-of-00003.parquet")),
     "shards[0].files.parquet must be {path: a relative path inside the dataset"),
    (_edit_manifest(lambda m: m["metadata"].update({"/etc/passwd": m["metadata"]["README.md"]})),
     "metadata '/etc/passwd' must be a relative path inside the dataset"),
    (lambda f: (f / "manifest.json").write_text('{"complete": true}'),
     "format must be kepkreator-dataset/3, not None"),
    (_edit_manifest(lambda m: m.pop("splits")), "lacks 'splits'"),
    (_edit_manifest(lambda m: m.update(records="35")), "records must be a whole number"),
    (_edit_manifest(lambda m: m["shards"][0].update(records=12)),
     "split 'train' has 35 records, its shards 36"),
    (lambda f: (f / "manifest.json").write_text("{oops"), "malformed"),
])
def test_inspect_verifies_the_folder_not_a_list(tiny_dataset, tmp_path, tamper, problem):
    """Each tampered folder is one line and status 2, naming what is wrong; dataset@ (evaluate
    --real, training data) refuses it the same way."""
    from kepkreator.data import load_sources
    from kepkreator.errors import DataError
    out, _ = tiny_dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    tamper(copy)
    result = run_cli("inspect", copy)
    assert_one_line_error(result, problem)
    assert result.returncode == 2
    with pytest.raises(DataError, match=re.escape(problem)):
        load_sources([f"dataset@{copy}"], "digits")
