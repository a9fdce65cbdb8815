"""Import a folder-per-class tree of photos or scans, the way EMNIST was made from NIST forms.

Any size, colour or polarity goes in; 28x28 uint8 white ink on black comes out: find the ink,
crop to its bounding box, pad to a square keeping the aspect ratio, add a margin, resize, and
stretch the contrast. Images with too little ink are skipped and counted, never guessed at.
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
