"""Batch PNG codec for small grayscale images, and image grids.

PNG is what Hugging Face's Image feature and TFDS's Image feature store. A 28x28 greyscale PNG is
simple enough to write directly: filter-0 scanlines for the whole batch are laid out with one
numpy operation and each image costs one zlib call — several times faster than a PIL round trip
per image, and byte-stable across platforms for a given zlib level.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png_batch(images: np.ndarray, level: int = 6) -> list[bytes]:
    """(n, h, w) uint8 -> n PNG files (8-bit greyscale)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, h, w = images.shape
    header = _SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    rows = np.zeros((n, h, w + 1), np.uint8)  # leading 0 per scanline: filter type "None"
    rows[:, :, 1:] = images
    return [header + _chunk(b"IDAT", zlib.compress(rows[i].tobytes(), level)) + _IEND
            for i in range(n)]


def image_grid(images: np.ndarray, rows: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """(rows*cols, h, w) uint8 -> one uint8 picture, row-major, thin grey gutters, upscaled."""
    n, h, w = images.shape
    cols = int(np.ceil(n / rows))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 64, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid


def grid_png(images: np.ndarray, rows: int, scale: int = 2) -> bytes:
    """A sample grid (one row per class, by convention) as PNG bytes."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(image_grid(images, rows, scale=scale)).save(buffer, "PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"))
