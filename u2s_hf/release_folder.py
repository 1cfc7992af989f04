"""Where a release is written: checked before any work, locked, built beside its target and moved into place.

A command may replace only what u2s wrote itself. A finished release folder holds MARKER (written last), so
`--overwrite` can tell an earlier release from anything else; a killed run leaves only a hidden `.NAME.tmp-*`
folder (marked PARTIAL) that the next run into the same place removes, never a target that looks complete.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .version import __version__

MARKER = ".u2s-release"
PARTIAL = ".u2s-partial"


class ReleaseError(ValueError):
    """The release folder cannot be written where asked; nothing was changed."""


class ReleaseFolder:
    """`with ReleaseFolder(out, protect=[src]) as folder:` check `out`, lock it, and give a temporary folder to
    write into; `folder.commit()` moves it into place. Leaving the block without commit removes the temporary folder.

    `protect` are paths that must never be replaced or written into (the source): `out` may not be one of them,
    contain one, or lie inside one. `overwrite` allows replacing an earlier u2s release, nothing else.
    """

    def __init__(self, out: str | os.PathLike, protect=(), overwrite: bool = False):
        self.out = Path(os.path.abspath(out))
        self.overwrite = overwrite
        self.protect = [Path(os.path.realpath(p)) for p in protect]
        self.tmp: Path | None = None
        self._lock_fd: int | None = None
        self._lock_path = self.out.parent / f".{self.out.name}.u2s-lock"
        self.check()

    def check(self) -> None:
        """Refuse, before any work, every `out` this run may not write (see the class docstring)."""
        out, real = self.out, Path(os.path.realpath(self.out))
        for protected in self.protect:
            if real == protected or protected.is_relative_to(real) or real.is_relative_to(protected):
                raise ReleaseError(f"--out {out} would overlap the source {protected}: choose a folder outside it")
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise ReleaseError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not self.overwrite:
                raise ReleaseError(f"{out} exists and is not empty (use --overwrite to replace an earlier u2s release)")
            if not is_release(out):
                raise ReleaseError(
                    f"{out} is not a u2s release (it has no {MARKER} marker): refusing to replace it; "
                    "move it away yourself or choose another --out"
                )
        parent = _existing_ancestor(out.parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReleaseError(f"cannot write in {parent} (permission denied)")

    def __enter__(self) -> ReleaseFolder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self.check()  # again, now that no other u2s run can change it
            self._remove_leftovers()
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
            (self.tmp / PARTIAL).write_text(f"{os.getpid()}\n")
        except BaseException:
            self._unlock()
            raise
        return self

    def commit(self) -> Path:
        """Mark the temporary folder as a finished release (marker last) and move it to `out`."""
        (self.tmp / PARTIAL).unlink()
        (self.tmp / MARKER).write_text(json.dumps({"u2s_hf": __version__, "created": time.time()}) + "\n")
        old = None
        if self.out.is_dir() and any(self.out.iterdir()):  # an earlier release (check() made sure)
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.replace(self.out, old / "release")
        elif self.out.is_dir():
            self.out.rmdir()  # empty: replacing it loses nothing
        os.replace(self.tmp, self.out)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old)
        return self.out

    def __exit__(self, *exc) -> None:
        try:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
        finally:
            self._unlock()

    def _lock(self) -> None:
        """One run per target. The lock file is removed on exit; a run that finds it replaced retries."""
        for _ in range(3):
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise ReleaseError(f"another u2s run is writing {self.out}; wait for it to finish") from None
                raise
            try:
                same = os.stat(self._lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
        raise ReleaseError(f"could not lock {self._lock_path}")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.unlink(self._lock_path)
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_leftovers(self) -> None:
        """Folders that killed runs into this target left behind (we hold the lock, so no live run owns them)."""
        for kind, mark in (("tmp", PARTIAL), ("tmp", MARKER), ("old", None)):
            for folder in self.out.parent.glob(f".{_glob_escape(self.out.name)}.{kind}-*"):
                inner = folder if mark else folder / "release"
                if folder.is_dir() and not folder.is_symlink() and (inner / (mark or MARKER)).is_file():
                    shutil.rmtree(folder)


def is_release(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
