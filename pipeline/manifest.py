"""manifest.json: written last, it is what makes a directory a dataset.

It records the spec, the bundles (with their cards' and models' sha256), the seed, package
versions, the counts per class, every shard and every reader-metadata file with its sha256, so
``kepkreator inspect`` (``kepkreator.data.generated.verify_folder``) can tell a complete,
untouched dataset from anything else.
"""
from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

from kepkreator.classsets import ClassSet
from kepkreator.data.generated import MANIFEST, MANIFEST_FORMAT, read_generated_manifest
from kepkreator.errors import KepKreatorError

PACKAGES = ("kepkreator", "apache-beam", "tensorflow-cpu", "tensorflow", "jax", "jaxlib",
            "keras", "numpy", "pyarrow")
BACKEND_PACKAGES = {"tensorflow-cpu": "tensorflow", "tensorflow": "tensorflow", "jax": "jax",
                    "jaxlib": "jax"}


def package_versions() -> dict:
    """Versions of what ran, and the Keras backend: the same spec gives the same bytes on the
    same backend (backends differ in the last bits of a pixel now and then)."""
    from kepkreator.backend import choose_keras_backend
    backend = choose_keras_backend()
    versions = {"python": platform.python_version(), "keras_backend": backend}
    for name in PACKAGES:
        if name in BACKEND_PACKAGES and BACKEND_PACKAGES[name] != backend:
            continue  # installed, but not what ran the models
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def manifest_bytes(payload: dict) -> bytes:
    return (json.dumps({"format": MANIFEST_FORMAT, **payload, "complete": True}, indent=2)
            + "\n").encode()


def dataset_class_counts(out: Path, class_set: ClassSet) -> np.ndarray:
    """Class histogram of a dataset made by this tool (its manifest, else its Parquet labels)."""
    out = Path(out)
    if (out / MANIFEST).is_file():
        manifest = read_generated_manifest(out)
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
