"""MNIST / EMNIST gzip-IDX files, any split, including partial splits named by index range.

Arrays come back **upright** (row-major, as MNIST stores them): EMNIST's transposed storage is
undone here, once, so nothing downstream needs to know about it.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from kepkreator.classsets import ClassSet, get_class_set
from kepkreator.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Which class set an EMNIST/MNIST file family is numbered in.
FAMILY_CLASS_SETS = {"mnist": "digits", "emnist-digits": "digits", "emnist-mnist": "digits",
                     "emnist-letters": "letters", "emnist-balanced": "balanced",
                     "emnist-bymerge": "balanced", "emnist-byclass": "byclass"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) and check its header against its size."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"not an IDX file (bad magic number): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"truncated IDX header: {path}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"IDX file {path} has {len(raw)} bytes, its header promises {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def _split_files(directory: Path, family: str, split: str) -> list[tuple[Path, Path]]:
    """Image/label file pairs of one split, partial ranges in index order."""
    if family == "mnist":
        stems = {"train": "train", "test": "t10k"}
        if split not in stems:
            raise DataError(f"MNIST has splits train and test, not {split!r}")
        prefix = rf"{stems[split]}"
    else:
        prefix = rf"{re.escape(family)}-{re.escape(split)}"
    pattern = re.compile(prefix + r"(?:-(\d+)-to-(\d+))?-images[-.]idx3-ubyte(?:\.gz)?$")
    found = []
    for image_file in sorted(directory.iterdir()) if directory.is_dir() else []:
        match = pattern.match(image_file.name)
        if match:
            label_name = image_file.name.replace("-images", "-labels").replace(
                ".images", ".labels").replace("idx3", "idx1")
            start = int(match.group(1)) if match.group(1) else 0
            found.append((start, image_file, image_file.with_name(label_name)))
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory}")
    if not found:
        raise DataError(f"no {family} {split} IDX files in {directory}")
    return [(img, lab) for _, img, lab in sorted(found)]


def load_idx_split(directory: str | Path, family: str, split: str
                   ) -> tuple[np.ndarray, np.ndarray, ClassSet]:
    """Images (n, 28, 28) uint8 upright, label indices into the family's class set, the set."""
    directory = Path(directory)
    if family not in FAMILY_CLASS_SETS:
        raise DataError(f"unknown IDX family {family!r} (known: {', '.join(FAMILY_CLASS_SETS)})")
    class_set = get_class_set(FAMILY_CLASS_SETS[family])
    images, labels = [], []
    for image_file, label_file in _split_files(directory, family, split):
        imgs, labs = read_idx(image_file), read_idx(label_file)
        if imgs.ndim != 3 or imgs.shape[1:] != (28, 28) or labs.ndim != 1:
            raise DataError(f"unexpected IDX shapes {imgs.shape} / {labs.shape} in {image_file}")
        if len(imgs) != len(labs):
            raise DataError(f"{image_file.name} has {len(imgs)} images but "
                            f"{label_file.name} has {len(labs)} labels")
        images.append(imgs)
        labels.append(labs.astype(np.int64))
    images = np.concatenate(images).astype(np.uint8)
    if family != "mnist":
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    ids = np.concatenate(labels)
    lookup = np.full(max(class_set.emnist_ids) + 1, -1, dtype=np.int64)
    lookup[list(class_set.emnist_ids)] = np.arange(class_set.num_classes)
    if ids.min() < 0 or ids.max() >= len(lookup) or (lookup[ids] < 0).any():
        raise DataError(f"{family} {split} labels fall outside {class_set.name!r} ids")
    return images, lookup[ids], class_set


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as gzip IDX (used for tests and EMNIST-orientation exports)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())
