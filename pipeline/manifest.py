"""manifest.json: written last, it is what makes a directory a dataset.

It records the spec, the bundles (with their cards' sha256), the seed, package versions, the
counts per class and every shard with its record count and sha256. ``verify`` re-hashes the
shards, so ``kepkreator inspect`` can tell a complete, untouched dataset from anything else.
"""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from kepkreator.classsets import ClassSet
from kepkreator.data.generated import MANIFEST, read_generated_manifest
from kepkreator.errors import KepKreatorError
from kepkreator.models.bundle import sha256_file

MANIFEST_FORMAT = "kepkreator-dataset/2"  # /2: several splits (/1: one, named by "split")
PACKAGES = ("kepkreator", "apache-beam", "tensorflow-cpu", "tensorflow", "keras", "numpy",
            "pyarrow")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def write_manifest(out: str, payload: dict) -> dict:
    """Atomic locally (write + rename); an object store writes an object whole anyway."""
    from pipeline import fileio
    manifest = {"format": MANIFEST_FORMAT, **payload, "complete": True}
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    if fileio.is_local(out):
        tmp = Path(out) / (MANIFEST + ".tmp")
        tmp.write_bytes(text)
        tmp.replace(Path(out) / MANIFEST)
    else:
        fileio.write_bytes(fileio.join(out, MANIFEST), text)
    return manifest


def read_manifest(out: Path) -> dict:
    """The manifest of a complete dataset; the library's reader, so both refuse the same things."""
    return read_generated_manifest(out)


def verify(out: Path) -> list[str]:
    """Problems found re-hashing every shard against the manifest (empty list: all good)."""
    manifest, problems = read_manifest(out), []
    for shard in manifest["shards"]:
        for fmt, info in shard["files"].items():
            path = Path(out) / info["path"]
            if not path.is_file():
                problems.append(f"missing shard {info['path']}")
                continue
            if sha256_file(path) != info["sha256"]:
                problems.append(f"sha256 mismatch in {info['path']}")
    return problems


def dataset_class_counts(out: Path, class_set: ClassSet) -> np.ndarray:
    """Class histogram of a dataset made by this tool (its manifest, else its Parquet labels)."""
    out = Path(out)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        if manifest["class_set"] != class_set.name:
            raise KepKreatorError(f"{out} holds class set {manifest['class_set']!r}, not "
                                  f"{class_set.name!r}")
        hist = np.zeros(class_set.num_classes, np.int64)
        for char, n in manifest["counts"].items():
            hist[class_set.index_of(char)] = n
        return hist
    files = sorted(out.glob("**/*.parquet"))
    if not files:
        raise KepKreatorError(f"{out} has neither {MANIFEST} nor Parquet files")
    import pyarrow.parquet as pq
    labels = np.concatenate([pq.read_table(f, columns=["label"]).column("label").to_numpy()
                             for f in files])
    return np.bincount(class_set.check_indices(labels), minlength=class_set.num_classes)
