"""The run's hold on its output folder: one run at a time, and only its own files touched.

A folder is this tool's only where it holds a marker the tool wrote: a finished dataset's
manifest, or a run marker (``.kepkreator.lock``) written before anything else that lists every
file the run may publish. ``--overwrite`` deletes exactly what those list, never follows a
symbolic link, and refuses, before deleting anything, a folder that holds anything else.

The marker is also the lock: an exclusive ``flock`` on it, held for the whole run, so a second
run is refused while the first lives, and a marker left by a killed run (the kernel drops the
lock with its process) is taken over. Each run stages its files in a folder of its own
(``.kepkreator-staging-<run id>``); a file appears under its final name only by an atomic
rename of the complete file, and the manifest comes last.

On gs:// there is no file lock: the marker and the staging folder are written all the same,
but two runs started into one gs:// folder at once are not told apart (README, Guarantees).
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from kepkreator.data.generated import MANIFEST, list_tree, manifest_files
from kepkreator.errors import KepKreatorError
from pipeline import fileio

LOCK = ".kepkreator.lock"
STAGING_PREFIX = ".kepkreator-staging-"
MARKER_FORMAT = "kepkreator-run/1"
SHOWN = 5  # foreign files named in an error


def _read_marker(text: str) -> dict | None:
    try:
        marker = json.loads(text)
    except json.JSONDecodeError:
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def _holder(marker: dict | None) -> str:
    if not marker:
        return "a run that left no details"
    return (f"pid {marker.get('pid')} on {marker.get('host')}, started "
            f"{marker.get('started', '?')}")


def _marker_files(marker: dict | None) -> tuple[set[str], set[str]]:
    """Files and staging folders a marker claims."""
    if not marker:
        return set(), set()
    files = {f for f in marker.get("files", []) if isinstance(f, str)}
    staging = marker.get("staging")
    return files, ({staging} if isinstance(staging, str) and staging.startswith(STAGING_PREFIX)
                   and "/" not in staging else set())


class OutputFolder:
    """``with OutputFolder(out, planned, overwrite) as folder``: locked, cleared of this tool's
    earlier files, staged. ``folder.stage(rel)`` is where a file is written before
    ``folder.publish([rel, ...])`` renames it into place; ``folder.finish()`` after the
    manifest; leaving the block otherwise removes the staging folder and, if nothing was
    published, the marker."""

    def __init__(self, out: str, planned: list[str], overwrite: bool, note=None):
        self.out, self.planned, self.overwrite = out, list(planned), overwrite
        self.note = note or (lambda message: None)
        self.run_id = uuid.uuid4().hex[:12]
        self.staging_name = STAGING_PREFIX + self.run_id
        self.staging = fileio.join(out, self.staging_name)
        self.local = fileio.is_local(out)
        self._fd = None
        self._created_marker = False
        self.published: list[str] = []
        self.finished = self.keep_marker = False

    # -- taking the folder -----------------------------------------------------------------
    def __enter__(self):
        if self.local:
            self._take_local()
        else:
            self._take_remote()
        return self

    def _marker(self, state: str) -> bytes:
        return (json.dumps({
            "format": MARKER_FORMAT, "run_id": self.run_id, "state": state, "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "staging": self.staging_name, "files": sorted(set(self.planned) | {MANIFEST}),
        }, indent=1) + "\n").encode()

    def _take_local(self):
        root = Path(self.out)
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise KepKreatorError(f"output {self.out} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        lock = root / LOCK
        while True:
            existed = lock.exists() or lock.is_symlink()
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise KepKreatorError(f"{lock} is a symbolic link, not a run marker this "
                                          "tool wrote") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                marker = _read_marker(os.pread(fd, 1 << 16, 0).decode("utf-8", "replace"))
                os.close(fd)
                raise KepKreatorError(f"{self.out} is in use by another run ({_holder(marker)}); "
                                      "wait for it to finish, or choose another --out") from None
            # The holder before us may have unlinked the marker between our open and our lock.
            try:
                same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd, self._created_marker = fd, not existed
        try:
            previous = os.pread(fd, 1 << 20, 0).decode("utf-8", "replace")
            self._clear(root, _read_marker(previous) if previous else None, bool(previous))
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._marker("running"), 0)
            os.fsync(fd)
            (root / self.staging_name).mkdir()
        except BaseException:
            self._release(remove=self._created_marker)
            raise

    def _clear(self, root: Path, previous: dict | None, had_marker: bool) -> None:
        """Refuse a folder that is not empty (without --overwrite) or holds anything this tool
        did not write; with --overwrite, delete exactly what it did write."""
        files, links = list_tree(root)
        files = [f for f in files if f != LOCK]
        if (files or links) and not self.overwrite:
            what = ("holds the files of an interrupted or failed run" if had_marker
                    else "is not empty")
            raise KepKreatorError(f"output directory {self.out} {what} (use --overwrite)")
        if previous and previous.get("state") == "running":
            self.note(f"note: taking over {self.out} from an interrupted run "
                      f"({_holder(previous)}), which no longer holds it")
        if not files and not links:
            return
        owned, staging = _marker_files(previous)
        manifest = root / MANIFEST
        if manifest.is_file() and not manifest.is_symlink():
            owned |= manifest_files(manifest.read_bytes())
        foreign = [f"{link} (a symbolic link)" for link in links] + [
            f for f in files if f not in owned and f.split("/", 1)[0] not in staging]
        if foreign:
            shown = ", ".join(foreign[:SHOWN]) + (f" and {len(foreign) - SHOWN} more"
                                                  if len(foreign) > SHOWN else "")
            raise KepKreatorError(f"--overwrite refused: {self.out} holds files this tool did "
                                  f"not write: {shown}; nothing was deleted")
        # The manifest first: from this moment the old dataset no longer claims to be complete.
        for rel in sorted(set(files), key=lambda f: f != MANIFEST):
            if rel.split("/", 1)[0] in staging:
                continue
            (root / rel).unlink()
        for name in staging:
            if (root / name).is_dir() and not (root / name).is_symlink():
                shutil.rmtree(root / name)
        data = root / "data"  # the one folder the tool makes for files it lists
        if data.is_dir() and not data.is_symlink() and not any(data.iterdir()):
            data.rmdir()

    def _take_remote(self):
        fileio.check_credentials(self.out)
        existing = [p[len(self.out):].lstrip("/") for p in
                    fileio.list_files(fileio.join(self.out, "**"))]
        marker_path = fileio.join(self.out, LOCK)
        previous = None
        if LOCK in existing:
            previous = _read_marker(fileio.read_bytes(marker_path).decode("utf-8", "replace"))
        others = [f for f in existing if f != LOCK]
        if others or previous:
            if not self.overwrite:
                raise KepKreatorError(f"output directory {self.out} is not empty (use --overwrite)")
            owned, staging = _marker_files(previous)
            if MANIFEST in existing:
                owned |= manifest_files(fileio.read_bytes(fileio.join(self.out, MANIFEST)))
            foreign = [f for f in others if f not in owned and f.split("/", 1)[0] not in staging]
            if foreign:
                raise KepKreatorError(f"--overwrite refused: {self.out} holds files this tool "
                                      f"did not write: {', '.join(foreign[:SHOWN])}; nothing "
                                      "was deleted")
            if MANIFEST in others:
                fileio.delete([fileio.join(self.out, MANIFEST)])
            fileio.delete([fileio.join(self.out, f) for f in others if f != MANIFEST])
        fileio.write_bytes(marker_path, self._marker("running"))

    # -- writing ---------------------------------------------------------------------------
    @property
    def publish_root(self) -> str:
        """The staged files, under the relative names they are published with."""
        return fileio.join(self.staging, "publish")

    def stage(self, rel: str) -> str:
        """Where the file that will be published as ``rel`` is written first."""
        return fileio.join(self.publish_root, rel)

    def publish(self, rels: list[str]) -> None:
        """Rename staged, complete files to their final names (atomic on a local disk)."""
        for rel in rels:
            if rel not in self.planned and rel != MANIFEST:
                raise RuntimeError(f"{rel} is not among the files this run's marker lists")
            if self.local:
                target = Path(self.out) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.stage(rel), target)
            else:
                fileio.rename([self.stage(rel)], [fileio.join(self.out, rel)])
            self.published.append(rel)

    def finish(self) -> None:
        """The manifest is in place: the marker's job is done."""
        self.finished = True

    def fail(self) -> None:
        """A run that ends without a dataset keeps its marker (it lists what was published), so
        a later --overwrite knows these files as this tool's."""
        if self.local and self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, self._marker("failed"), 0)
        elif not self.local:
            fileio.write_bytes(fileio.join(self.out, LOCK), self._marker("failed"))
        self.keep_marker = True

    # -- letting go ------------------------------------------------------------------------
    def __exit__(self, *exc):
        if self.local:
            shutil.rmtree(Path(self.out) / self.staging_name, ignore_errors=True)
        else:
            fileio.delete(fileio.list_files(fileio.join(self.staging, "**")))
        # Nothing published, or a finished dataset: the folder needs no marker; otherwise it
        # stays, so that --overwrite may remove what this run left.
        remove = not self.keep_marker and (self.finished or not self.published)
        if self.local:
            self._release(remove=remove)
        elif remove:
            fileio.delete([fileio.join(self.out, LOCK)])
        return False

    def _release(self, remove: bool) -> None:
        if self._fd is None:
            return
        if remove:  # unlinked while still locked: a waiting run then sees a fresh file
            try:
                os.unlink(Path(self.out) / LOCK)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None
