"""Handwriting in, real or generated, as (images uint8 (n,28,28) upright white-on-black, labels).

A *source* is a string, so the CLI, cards and tests all name data the same way:

- ``mnist:train@DIR``, ``emnist-byclass:test@DIR``, ``emnist-letters:train@DIR`` — IDX files in DIR
  (partial splits ``<family>-<split>-<a>-to-<b>-...`` are concatenated in index order);
- ``folder@DIR`` — one sub-folder per character, any image format (see ``folders.py``);
- ``dataset@DIR`` — a complete dataset written by ``kepkreator generate`` (see ``generated.py``);
  ``dataset:validation@DIR`` reads one split of a dataset that has several.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set, remap
from kepkreator.data.folders import load_class_folders
from kepkreator.data.generated import load_generated
from kepkreator.data.idx import FAMILY_CLASS_SETS, load_idx_split, read_idx, write_idx
from kepkreator.data.splits import deduplicate, hash_split, per_class_subset
from kepkreator.errors import DataError
from kepkreator.paths import not_local

__all__ = ["Dataset", "load_sources", "parse_source", "hash_split", "per_class_subset", "deduplicate", "read_idx",
           "write_idx", "load_idx_split", "load_class_folders", "load_generated"]


@dataclass
class Dataset:
    images: np.ndarray
    labels: np.ndarray
    class_set: ClassSet
    provenance: list[dict] = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    def subset(self, mask_or_index) -> "Dataset":
        return Dataset(self.images[mask_or_index], self.labels[mask_or_index], self.class_set,
                       self.provenance)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.class_set.num_classes)


def parse_source(source: str) -> tuple[str, str | None, str]:
    """'family:split@dir' -> (family, split, dir); 'folder@dir' -> ('folder', None, dir);
    'dataset@dir' -> ('dataset', None, dir): the only split; 'dataset:test@dir' names one."""
    head, sep, directory = source.partition("@")
    if not sep or not directory:
        raise DataError(f"data source {source!r} should look like mnist:train@DIR, folder@DIR "
                        f"or dataset@DIR")
    if not_local(directory):
        raise DataError(f"data source {source!r}: {not_local(directory)}")
    if head in ("folder", "dataset"):
        return head, None, directory
    family, sep, split = head.partition(":")
    if family == "dataset":
        if not split:
            raise DataError(f"data source {source!r} names no split (e.g. "
                            f"dataset:train@{directory}, or dataset@{directory})")
        return family, split, directory
    if not sep or not split:
        raise DataError(f"data source {source!r} lacks a split (e.g. {head}:train@{directory})")
    if family not in FAMILY_CLASS_SETS:
        raise DataError(f"unknown data family {family!r} in {source!r} "
                        f"(known: folder, dataset, {', '.join(FAMILY_CLASS_SETS)})")
    return family, split, directory


def load_sources(sources: list[str], class_set: str | ClassSet, dedupe: bool = True) -> Dataset:
    """Load, remap into ``class_set`` (dropping classes it lacks) and de-duplicate across sources."""
    class_set = get_class_set(class_set)
    if not sources:
        raise DataError("no data sources given")
    images, labels, provenance = [], [], []
    for source in sources:
        family, split, directory = parse_source(source)
        if family == "folder":
            imgs, labs, report = load_class_folders(directory, class_set)
            provenance.append({"source": source, "loaded": len(labs),
                               "skipped": len(report.skipped)})
            if report.skipped:  # counted in the card too, but a user should hear it now
                path, reason = next(iter(report.skipped.items()))
                unreadable = sum(r.startswith("unreadable") for r in report.skipped.values())
                print(f"note: {source}: skipped {len(report.skipped)} of "
                      f"{len(report.skipped) + len(labs)} images ({unreadable} unreadable, "
                      f"{len(report.skipped) - unreadable} without usable ink), e.g. {path}: "
                      f"{reason}", file=sys.stderr)
        else:
            imgs, labs, native = (load_generated(directory, split) if family == "dataset"
                                  else load_idx_split(directory, family, split))
            labs, keep = remap(labs, native, class_set)
            imgs = imgs[keep]
            provenance.append({"source": source, "loaded": int(keep.size), "kept": int(keep.sum())})
        images.append(imgs)
        labels.append(labs)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(labels) == 0:
        raise DataError(f"none of the sources has samples of class set {class_set.name!r}")
    if dedupe:
        images, labels, dropped = deduplicate(images, labels)
        provenance.append({"duplicates_dropped": int(dropped)})
    return Dataset(images, labels, class_set, provenance)
