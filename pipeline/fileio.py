"""File access through Beam's FileSystems, so the same code writes to a local disk or to gs://.

The pipeline's outputs are written by workers; on Dataflow those have no shared local disk.
"""
from __future__ import annotations

import hashlib
import struct

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from kepkreator.errors import KepKreatorError
from kepkreator.paths import remote_scheme


def join(base: str, *parts: str) -> str:
    return FileSystems.join(str(base), *parts)


def is_local(path: str) -> bool:
    return remote_scheme(path) is None


def check_credentials(path: str) -> None:
    """Writing to gs:// needs credentials. Without them Beam retries for half a minute, logs
    tracebacks, connects anonymously and fails minutes later with a network or 401 error; the
    lookup it would make takes a fraction of a second here."""
    if remote_scheme(path) != "gs":
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    try:
        google.auth.default()
    except DefaultCredentialsError as exc:
        reason = str(exc).split(". ")[0].rstrip(".")
        raise KepKreatorError(
            f"cannot write to {path}: no Google Cloud credentials ({reason}); set "
            "GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default login'"
        ) from None


def write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def list_files(pattern: str) -> list[str]:
    return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)


def rename(sources: list[str], destinations: list[str]) -> None:
    FileSystems.rename(sources, destinations)


def delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


class HashingWriter:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, path: str):
        self._file = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self._hash.update(data)
        self.bytes += len(data)
        self._file.write(data)
        return len(data)

    def flush(self):
        pass

    def tell(self) -> int:
        return self.bytes

    def close(self):
        if not self.closed:
            self._file.close()
            self.closed = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc32c(length)) + record
            + struct.pack("<I", _masked_crc32c(record)))
