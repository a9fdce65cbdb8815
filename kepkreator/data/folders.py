"""Import a folder-per-class tree of photos or scans, the way EMNIST was made from NIST forms.

Any size, colour or polarity goes in; 28x28 uint8 white ink on black comes out: find the ink,
drop small specks that touch the image edge, crop to the ink's bounding box, pad to a square
keeping the aspect ratio, add a margin, resize, and stretch the contrast. Images with too little
ink are skipped and counted, never guessed at.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kepkreator.classsets import ClassSet
from kepkreator.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_INK_EXTENT = 3  # pixels: a smaller ink box (e.g. a 1x2 crop) carries no character
# An ink blob touching the image edge and smaller than this share of the largest blob is a cut
# line, a paper edge or a neighbour's stroke, not part of the character: kept, such a speck in a
# corner stretches the crop and shrinks the character to a fraction of the 28x28 frame.
EDGE_SPECK_SHARE = 0.25
COMPONENT_GRID = 128  # blobs are found on the mask pooled to at most this many pixels a side


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels of a small boolean mask (1..n; 0 is background)."""
    labels = np.zeros(mask.shape, np.int32)
    height, width = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        count += 1
        labels[y, x] = count
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                    if mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        stack.append((ny, nx))
    return labels, count


def character_region(mask: np.ndarray) -> np.ndarray:
    """Where ink belongs to the character: everywhere but the small blobs of ``mask`` that touch
    the image edge (see EDGE_SPECK_SHARE), and their faint halo with them.

    Blobs are found on a max-pooled copy, so a large photo costs what a 128x128 one does and
    strokes stay connected; an i's dot or a separate crossbar does not touch the edge and stays.
    """
    step = max(1, -(-max(mask.shape) // COMPONENT_GRID))
    rows, cols = -(-mask.shape[0] // step), -(-mask.shape[1] // step)
    padded = np.zeros((rows * step, cols * step), bool)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    pooled = padded.reshape(rows, step, cols, step).any(axis=(1, 3))
    labels, count = _components(pooled)
    everywhere = np.ones(mask.shape, bool)
    if count < 2:
        return everywhere
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    on_edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    drop = [c for c in on_edge if c and sizes[c] < EDGE_SPECK_SHARE * sizes[1:].max()]
    if not drop:
        return everywhere
    keep = ~np.isin(labels, drop)
    return np.repeat(np.repeat(keep, step, axis=0), step, axis=1)[:mask.shape[0], :mask.shape[1]]


@dataclass
class ImportReport:
    imported: Counter = field(default_factory=Counter)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason


def to_emnist_style(image: Image.Image, size: int = 28, margin: float = 0.1) -> np.ndarray:
    """One image -> (size, size) uint8, white ink on black, ink box centred. Raises ValueError."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    if min(gray.shape) < MIN_INK_EXTENT:
        raise ValueError(f"image is only {gray.shape[1]}x{gray.shape[0]} px")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > gray.mean():  # light paper: ink is dark
        gray = 255.0 - gray
    background = np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    ink = np.clip(gray - background, 0, None)
    if ink.max() < 16:
        raise ValueError("no ink: the image has no contrast")
    ink = ink * character_region(ink > 0.35 * ink.max())
    mask = ink > 0.35 * ink.max()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if max(bottom - top, right - left) < MIN_INK_EXTENT:
        raise ValueError(f"ink box is only {right - left}x{bottom - top} px")
    crop = ink[top:bottom, left:right]
    side = int(round(max(crop.shape) * (1 + 2 * margin)))
    square = np.zeros((side, side), np.float32)
    y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC))
    resized = np.clip(resized, 0, None)
    return np.clip(resized * (255.0 / max(resized.max(), 1e-6)), 0, 255).astype(np.uint8)


def load_class_folders(root: str | Path, class_set: ClassSet
                       ) -> tuple[np.ndarray, np.ndarray, ImportReport]:
    """Read ``root/<char>/*`` into (images, label indices, report).

    Folder names are characters of the class set (case-sensitive; ``a`` goes to ``A`` only in a
    case-merged set). Unknown folder names are an error, so a typo never silently drops a class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    report = ImportReport()
    images, labels = [], []
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root} has no class folders")
    for folder in folders:
        label = class_set.index_of(folder.name)  # raises a one-line error for unknown names
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    images.append(to_emnist_style(img))
            except (UnidentifiedImageError, OSError) as exc:
                report.skipped[str(path)] = f"unreadable: {exc}"
                continue
            except ValueError as exc:
                report.skipped[str(path)] = str(exc)
                continue
            labels.append(label)
            report.imported[class_set.chars[label]] += 1
    if not images:
        raise DataError(f"no usable images under {root}")
    return np.stack(images), np.asarray(labels, np.int64), report
