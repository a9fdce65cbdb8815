"""The one registry of class sets: ordered labels, their characters and EMNIST ids, remapping.

A model's output index ``i`` always means ``class_set.chars[i]``; datasets store that index as
``label`` (0..C-1, as Hugging Face ClassLabel and TFDS expect). ``emnist_ids`` keep the official
numbering (``letters`` counts 1..26) for reading and writing EMNIST-style files.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from kepkreator.errors import KepKreatorError

_DIGITS = string.digits
_UPPER = string.ascii_uppercase
_LOWER = string.ascii_lowercase
# EMNIST balanced and bymerge share one mapping: the lowercase letters that look unlike their
# capital keep a class of their own, the rest are merged into the capital.
_BALANCED_LOWER = "abdefghnqrt"


@dataclass(frozen=True)
class ClassSet:
    name: str
    chars: tuple[str, ...]
    emnist_ids: tuple[int, ...]
    case_merged: frozenset[str] = frozenset()  # characters whose class also holds the other case
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.chars)

    def index_of(self, char: str) -> int:
        """Index of a character; case-merged classes also accept the other case."""
        if char in self._index:
            return self._index[char]
        for candidate in (char.upper(), char.lower()):
            if candidate in self.case_merged and candidate in self._index:
                return self._index[candidate]
        raise KepKreatorError(
            f"class {char!r} is not in class set {self.name!r} ({''.join(self.chars)})")

    def index_of_emnist_id(self, emnist_id: int) -> int:
        try:
            return self.emnist_ids.index(int(emnist_id))
        except ValueError:
            raise KepKreatorError(
                f"EMNIST id {emnist_id} is not in class set {self.name!r}") from None

    def check_indices(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0]
            raise KepKreatorError(
                f"label {int(bad)} is out of range for class set {self.name!r} "
                f"(0..{self.num_classes - 1})")
        return labels

    @property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def to_json(self) -> dict:
        return {"name": self.name, "labels": list(self.chars), "emnist_ids": list(self.emnist_ids)}


def _make(name, chars, first_id=0, merged="", description=""):
    chars = tuple(chars)
    return ClassSet(name, chars, tuple(range(first_id, first_id + len(chars))),
                    frozenset(merged), description)


_UPPER_MERGED_IN_BALANCED = "".join(c for c in _UPPER if c.lower() not in _BALANCED_LOWER)
CLASS_SETS: dict[str, ClassSet] = {
    cs.name: cs for cs in [
        _make("digits", _DIGITS, description="MNIST / EMNIST digits, 0-9"),
        _make("letters", _UPPER, first_id=1, merged=_UPPER,
              description="EMNIST letters: 26 classes A-Z, upper and lower case merged, ids 1-26"),
        _make("letters52", _UPPER + _LOWER, description="A-Z and a-z, case-sensitive"),
        _make("balanced", _DIGITS + _UPPER + _BALANCED_LOWER, merged=_UPPER_MERGED_IN_BALANCED,
              description="EMNIST balanced / bymerge: 47 classes, similar-looking cases merged"),
        _make("byclass", _DIGITS + _UPPER + _LOWER, description="EMNIST byclass: 62 classes"),
    ]
}


def get_class_set(name: str | ClassSet) -> ClassSet:
    if isinstance(name, ClassSet):
        return name
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KepKreatorError(
            f"unknown class set {name!r} (known: {', '.join(CLASS_SETS)})") from None


def remap_table(source: ClassSet, target: ClassSet) -> np.ndarray:
    """Index table source -> target, -1 where a source class has no place in the target.

    Characters map to themselves; folding case is allowed only into a case-merged target class,
    so byclass 'a' becomes letters 'A', but balanced 'C' (which holds c and C) does not become
    letters52 'C'.
    """
    table = np.full(source.num_classes, -1, dtype=np.int64)
    for i, char in enumerate(source.chars):
        if char in source.case_merged and char not in target.case_merged and (
                char.swapcase() in target.chars):
            continue  # a merged source class cannot be split into two target classes
        try:
            table[i] = target.index_of(char)
        except KepKreatorError:
            pass
    return table


def remap(labels: np.ndarray, source: ClassSet, target: ClassSet) -> tuple[np.ndarray, np.ndarray]:
    """Remap label indices; returns (new_labels, keep_mask) where unmapped samples are dropped."""
    mapped = remap_table(source, target)[source.check_indices(labels)]
    keep = mapped >= 0
    return mapped[keep], keep
