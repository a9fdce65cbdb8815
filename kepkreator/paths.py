"""Everything but ``generate``'s output is a local path; a URL must be refused, not handed to
``Path``, which folds 'gs://b/x' into 'gs:/b/x': reads then report a missing file, and writes
quietly create a local folder named 'gs:'."""
from __future__ import annotations

import os


def remote_scheme(path: str | os.PathLike) -> str | None:
    """'gs' for 'gs://b/x'; None for a local path."""
    scheme, sep, _ = str(path).partition("://")
    return scheme if sep else None


def not_local(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be used here, or None where it can."""
    scheme = remote_scheme(path)
    if scheme is None:
        return None
    return (f"{path}: {scheme}:// paths are not read or written here, only local files and "
            "directories (copy the files first; only generate writes to gs://)")
