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
import os
import re
import struct
from pathlib import Path, PurePosixPath

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import DataError, KepKreatorError
from kepkreator.models.card import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FAMILY = "kepkreator-dataset/"
MANIFEST_FORMAT = MANIFEST_FAMILY + "3"  # /3: reader metadata checksummed; /2: splits; /1: one
# What formats /1 and /2 wrote beside their shards, unlisted: --overwrite may still remove them.
LEGACY_METADATA = ("features.json", "dataset_info.json", "label.labels.txt", "README.md",
                   "metrics.json", "samples.png")
FORMATS = ("parquet", "tfrecord")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def list_tree(root: Path) -> tuple[list[str], list[str]]:
    """(files, symbolic links) under ``root`` as relative paths, links never followed. An empty
    folder other than data/ counts as a file: something is there that no manifest lists."""
    files, links = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_symlink():
            links.append(entry.name)
        elif entry.is_dir(follow_symlinks=False):
            inner_files, inner_links = list_tree(Path(entry.path))
            files += [f"{entry.name}/{f}" for f in inner_files]
            links += [f"{entry.name}/{f}" for f in inner_links]
            if not inner_files and not inner_links and entry.name != "data":
                files.append(entry.name + "/")
        else:
            files.append(entry.name)
    return files, links


def manifest_files(text: bytes) -> set[str]:
    """The files a manifest of this tool claims, itself included; none if it is not one."""
    try:
        manifest = json.loads(text)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return set()
    if not (isinstance(manifest, dict)
            and str(manifest.get("format", "")).startswith(MANIFEST_FAMILY)):
        return set()
    files = {MANIFEST}
    try:
        for shard in manifest["shards"]:
            files |= {info["path"] for info in shard["files"].values()}
        files |= (set(manifest["metadata"]) if manifest["format"] == MANIFEST_FORMAT
                  else set(LEGACY_METADATA))
    except (KeyError, TypeError, AttributeError):
        return {MANIFEST}  # ours, but what it lists cannot be trusted
    return {f for f in files if isinstance(f, str)}


def read_generated_manifest(directory: str | Path) -> dict:
    """The manifest of a complete dataset, checked field by field, or a one-line DataError
    saying why there is none."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise DataError(f"not a directory: {directory}")
    if path.is_symlink() or not path.is_file():
        lock = directory / ".kepkreator.lock"
        raise DataError(f"{directory} has no {MANIFEST}: not a complete KepKreator dataset"
                        + (" (a run is writing it, or was stopped)" if lock.exists() else ""))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"malformed {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise DataError(f"{path} does not mark the dataset complete")
    check_manifest(manifest, path)
    return manifest


def _relative_inside(path) -> bool:
    return (isinstance(path, str) and bool(path) and not PurePosixPath(path).is_absolute()
            and "\\" not in path and ".." not in PurePosixPath(path).parts
            and "." not in PurePosixPath(path).parts and not path.endswith("/"))


def _file_record(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("sha256"), str)
            and bool(_SHA256.fullmatch(value["sha256"])) and _whole(value.get("bytes")))


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest: dict, where) -> None:
    """Every field the readers and ``inspect`` rely on, with its type; shard and metadata paths
    relative and inside the folder; the counts adding up. A DataError names the first fault."""
    def fault(message):
        raise DataError(f"{where}: {message}")

    fmt = manifest.get("format")
    if fmt != MANIFEST_FORMAT:
        if isinstance(fmt, str) and fmt.startswith(MANIFEST_FAMILY):
            fault(f"format {fmt} was written by an earlier KepKreator, whose manifest does not "
                  "checksum the reader metadata; generate it again (the same spec and seed "
                  "give the same shards)")
        fault(f"format must be {MANIFEST_FORMAT}, not {fmt!r}")
    for key, kind in (("name", str), ("class_set", str), ("orientation", str), ("splits", dict),
                      ("shards", list), ("formats", list), ("counts", dict), ("metadata", dict)):
        if key not in manifest:
            fault(f"lacks {key!r}")
        if not isinstance(manifest[key], kind):
            fault(f"{key} must be a {kind.__name__}, not {type(manifest[key]).__name__}")
    if not _whole(manifest.get("records")):
        fault("records must be a whole number")
    try:
        get_class_set(manifest["class_set"])
    except KepKreatorError as exc:
        fault(str(exc))
    if manifest["orientation"] not in ("upright", "emnist"):
        fault(f"orientation must be upright or emnist, not {manifest['orientation']!r}")
    if not manifest["formats"] or any(f not in FORMATS for f in manifest["formats"]):
        fault(f"formats must name some of {', '.join(FORMATS)}")
    for split, row in manifest["splits"].items():
        if not isinstance(row, dict) or not _whole(row.get("records")):
            fault(f"splits.{split}.records must be a whole number")
    records = {split: 0 for split in manifest["splits"]}
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict) or shard.get("split") not in records:
            fault(f"shards[{i}] names no split of the manifest")
        if not _whole(shard.get("records")) or not _whole(shard.get("index")):
            fault(f"shards[{i}] needs whole-number records and index")
        files = shard.get("files")
        if not isinstance(files, dict) or set(files) != set(manifest["formats"]):
            fault(f"shards[{i}].files must hold one file per format "
                  f"({', '.join(manifest['formats'])})")
        for name, info in files.items():
            if not _file_record(info) or not _relative_inside(info.get("path")):
                fault(f"shards[{i}].files.{name} must be {{path: a relative path inside the "
                      "dataset, sha256, bytes}")
        records[shard["split"]] += shard["records"]
    for split, n in records.items():
        if n != manifest["splits"][split]["records"]:
            fault(f"split {split!r} has {manifest['splits'][split]['records']} records, its "
                  f"shards {n}")
    if sum(records.values()) != manifest["records"]:
        fault(f"records is {manifest['records']}, the shards hold {sum(records.values())}")
    for name, info in manifest["metadata"].items():
        if not _relative_inside(name) or name == MANIFEST or not _file_record(info):
            fault(f"metadata {name!r} must be a relative path inside the dataset with sha256 "
                  "and bytes")


def listed_files(manifest: dict) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} of every file a (checked) manifest lists."""
    out = {info["path"]: info for shard in manifest["shards"] for info in shard["files"].values()}
    out.update(manifest["metadata"])
    return out


def verify_folder(directory: str | Path, hash_shards: bool = True) -> tuple[dict, list[str]]:
    """The manifest and every problem with the folder: a listed file missing, not a plain file,
    of another size or sha256; any file or link the manifest does not list. ``hash_shards``
    False leaves the shards' sha256 to a reader that hashes what it reads anyway."""
    directory = Path(directory)
    manifest = read_generated_manifest(directory)
    listed, problems = listed_files(manifest), []
    shards = {info["path"] for shard in manifest["shards"] for info in shard["files"].values()}
    for rel, info in listed.items():
        path = directory / rel
        if path.is_symlink():
            problems.append(f"{rel} is a symbolic link")
        elif not path.is_file():
            problems.append(f"missing {rel}")
        elif path.stat().st_size != info["bytes"]:
            problems.append(f"{rel} has {path.stat().st_size} bytes, the manifest says "
                            f"{info['bytes']}")
        elif (hash_shards or rel not in shards) and sha256_file(path) != info["sha256"]:
            problems.append(f"sha256 mismatch in {rel}")
    files, links = list_tree(directory)
    problems += [f"unlisted file {rel}" for rel in files if rel not in listed and rel != MANIFEST]
    problems += [f"{rel} is a symbolic link" for rel in links if rel not in listed]
    return manifest, problems


def load_generated(directory: str | Path,
                   split: str | None = None) -> tuple[np.ndarray, np.ndarray, ClassSet]:
    """Images (n, 28, 28) uint8 upright, label indices into the dataset's class set, the set.

    ``split``: which split to read; None reads the only one and refuses to guess among several.
    The folder is checked as ``kepkreator inspect`` checks it first; the shards' sha256 as
    they are read.
    """
    directory = Path(directory)
    manifest, problems = verify_folder(directory, hash_shards=False)
    if problems:
        raise DataError(f"{directory} does not verify against its manifest: "
                        f"{'; '.join(problems[:3])}")
    class_set = get_class_set(manifest["class_set"])
    splits = manifest["splits"]
    if split is None:
        if len(splits) > 1:
            raise DataError(f"{directory} holds splits {', '.join(splits)}: name one, e.g. "
                            f"dataset:{next(iter(splits))}@{directory}")
        split = next(iter(splits))
    if split not in splits:
        raise DataError(f"{directory} has no split {split!r} (it has {', '.join(splits)})")
    shards = [shard["files"] for shard in manifest["shards"] if shard["split"] == split]
    fmt = "parquet" if "parquet" in manifest["formats"] else "tfrecord"
    images, labels = [], []
    for files in shards:
        data = _read_checked(directory, files[fmt])
        imgs, labs = (_parquet_rows(data, class_set, directory) if fmt == "parquet"
                      else _tfrecord_rows(data))
        images.append(imgs)
        labels.append(labs)
    images = np.concatenate(images) if images else np.zeros((0, 28, 28), np.uint8)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    expected = splits[split]["records"]
    if len(labels) != expected:
        raise DataError(f"{directory} holds {len(labels)} records, its manifest says {expected}")
    if manifest["orientation"] == "emnist":
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
    from kepkreator.data.schema import hf_label_names
    table = pq.read_table(pa.BufferReader(data), columns=["image", "label"])
    names = hf_label_names(table.schema.metadata)
    if names is not None and names != list(class_set.chars):
        raise DataError(f"{directory} has labels {''.join(names)} in its Parquet files, not "
                        f"those of its manifest's class set {class_set.name!r}")
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    images = np.stack([decode_png(b) for b in pngs]) if pngs else np.zeros((0, 28, 28), np.uint8)
    return images, table.column("label").to_numpy().astype(np.int64)


def _tfrecord_rows(data: bytes):
    """tf.train.Example {image: PNG, label: int64} records; framing CRCs are left to the sha256."""
    from kepkreator.data.schema import parse_example
    from kepkreator.imageio import decode_png
    images, labels, pos = [], [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        record = data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4
        values = parse_example(record)
        images.append(decode_png(values["image"]))
        labels.append(values["label"])
    return (np.stack(images) if images else np.zeros((0, 28, 28), np.uint8),
            np.asarray(labels, np.int64))
