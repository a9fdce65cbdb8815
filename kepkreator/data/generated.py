"""Datasets written by ``kepkreator generate``, read back as data (the ``dataset@DIR`` source).

Only complete, untouched datasets: the manifest is written last, so a directory without one (a
failed or running job) is refused rather than read in part, and every shard read is checked
against the manifest's sha256. The Parquet shards are read (Hugging Face layout); a dataset
written as TFRecord only is read from its TFRecord shards. Images come back upright whatever
orientation the dataset was written in, labels as indices of the dataset's own class set.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import DataError, KepKreatorError

MANIFEST = "manifest.json"


def read_generated_manifest(directory: str | Path) -> dict:
    """The manifest of a complete dataset, or a one-line DataError saying why there is none."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise DataError(f"not a directory: {directory}")
    if not path.is_file():
        raise DataError(f"{directory} has no {MANIFEST}: not a complete KepKreator dataset")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"malformed {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise DataError(f"{path} does not mark the dataset complete")
    return manifest


def manifest_splits(manifest: dict) -> dict[str, dict]:
    """{split: {"records": n, ...}} of a manifest; a format-1 manifest held one split, named
    by its "split" key, and its shards name none."""
    if "splits" in manifest:
        return manifest["splits"]
    return {manifest["split"]: {"records": manifest["records"]}}


def shard_split(manifest: dict, shard: dict) -> str:
    return shard.get("split", manifest.get("split"))


def load_generated(directory: str | Path,
                   split: str | None = None) -> tuple[np.ndarray, np.ndarray, ClassSet]:
    """Images (n, 28, 28) uint8 upright, label indices into the dataset's class set, the set.

    ``split``: which split to read; None reads the only one and refuses to guess among several.
    """
    directory = Path(directory)
    manifest = read_generated_manifest(directory)
    try:
        class_set = get_class_set(manifest["class_set"])
        splits = manifest_splits(manifest)
        if split is None:
            if len(splits) > 1:
                raise DataError(f"{directory} holds splits {', '.join(splits)}: name one, e.g. "
                                f"dataset:{next(iter(splits))}@{directory}")
            split = next(iter(splits))
        if split not in splits:
            raise DataError(f"{directory} has no split {split!r} (it has "
                            f"{', '.join(splits)})")
        shards = [shard["files"] for shard in manifest["shards"]
                  if shard_split(manifest, shard) == split]
        expected = int(splits[split]["records"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{directory / MANIFEST} is not a dataset manifest: {exc}") from None
    except DataError:
        raise
    except KepKreatorError as exc:
        raise DataError(f"{directory / MANIFEST} is not a dataset manifest: {exc}") from None
    fmt = "parquet" if all("parquet" in files for files in shards) else "tfrecord"
    images, labels = [], []
    for files in shards:
        info = files.get(fmt)
        if info is None:
            raise DataError(f"{directory} has shards in neither Parquet nor TFRecord")
        data = _read_checked(directory, info)
        imgs, labs = (_parquet_rows(data, class_set, directory) if fmt == "parquet"
                      else _tfrecord_rows(data))
        images.append(imgs)
        labels.append(labs)
    images = np.concatenate(images) if images else np.zeros((0, 28, 28), np.uint8)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if len(labels) != expected:
        raise DataError(f"{directory} holds {len(labels)} records, its manifest says {expected}")
    if manifest.get("orientation") == "emnist":
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return images, class_set.check_indices(labels), class_set


def _read_checked(directory: Path, info: dict) -> bytes:
    path = directory / info["path"]
    try:
        data = path.read_bytes()
    except OSError:
        raise DataError(f"{directory}: shard {info['path']} is missing") from None
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise DataError(f"{directory}: shard {info['path']} differs from the manifest (sha256)")
    return data


def _parquet_rows(data: bytes, class_set: ClassSet, directory: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kepkreator.imageio import decode_png
    table = pq.read_table(pa.BufferReader(data), columns=["image", "label"])
    features = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}") or b"{}")
    names = features.get("info", {}).get("features", {}).get("label", {}).get("names")
    if names is not None and names != list(class_set.chars):
        raise DataError(f"{directory} has labels {''.join(names)} in its Parquet files, not "
                        f"those of its manifest's class set {class_set.name!r}")
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    images = np.stack([decode_png(b) for b in pngs]) if pngs else np.zeros((0, 28, 28), np.uint8)
    return images, table.column("label").to_numpy().astype(np.int64)


def _tfrecord_rows(data: bytes):
    """tf.train.Example {image: PNG, label: int64} records; framing CRCs are left to the sha256."""
    from tensorflow.core.example import example_pb2

    from kepkreator.imageio import decode_png
    images, labels, pos = [], [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        record = data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4
        example = example_pb2.Example.FromString(record)
        features = example.features.feature
        images.append(decode_png(features["image"].bytes_list.value[0]))
        labels.append(features["label"].int64_list.value[0])
    return (np.stack(images) if images else np.zeros((0, 28, 28), np.uint8),
            np.asarray(labels, np.int64))
