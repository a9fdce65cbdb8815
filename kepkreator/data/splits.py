"""De-duplication and reproducible train/test splits.

The split is decided by a hash of each image's bytes, so it does not depend on load order, on
which sources were combined, or on a global random state: the same image always lands on the
same side, and a duplicate can never straddle train and test.
"""
from __future__ import annotations

import hashlib

import numpy as np

from kepkreator.errors import DataError


def image_hashes(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat],
                    dtype="S8")


def deduplicate(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the first copy of each distinct image; returns (images, labels, dropped count)."""
    _, first = np.unique(image_hashes(images), return_index=True)
    first.sort()
    return images[first], labels[first], len(images) - len(first)


def hash_split(images: np.ndarray, test_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of test samples, stable under reordering and de-duplication."""
    salt = seed.to_bytes(8, "little", signed=True)
    flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
    buckets = np.array([int.from_bytes(hashlib.blake2b(salt + row.tobytes(), digest_size=4)
                                       .digest(), "little") for row in flat], dtype=np.uint64)
    return buckets < np.uint64(int(test_fraction * 2**32))


def per_class_subset(labels: np.ndarray, num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of every class, chosen reproducibly from ``seed``.

    Low-data experiments (issue: honest augmentation gains) need the very same subset in the
    trainers and in the downstream study, so it is a function of (labels, seed) alone.
    """
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"class {c} has {len(members)} samples, fewer than the {per_class} "
                            "per class asked for")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))
