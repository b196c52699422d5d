"""Atomic file output: a reader never sees a half-written file.

Data is written to a temporary file in the destination folder and moved into place
with :func:`os.replace`, which is atomic on POSIX and Windows for files on one volume.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    The temporary file keeps the destination's suffixes (``.nii.gz`` stays
    ``.nii.gz``) so that writers choosing a format by extension still work. On an
    exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions of a normal file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w",
                encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` when the block ends."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that ``path`` can become an output folder.

    Returns the path. Raises :class:`~CTMuscleBoneLib.errors.InputError` when it names
    an existing file, or when no folder can be created there (nearest existing parent
    not a folder or not writable).
    """
    from .errors import InputError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output path {out} is a file: an existing file is never "
                         "replaced; give a folder (it is created when absent).")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"The output folder {out} cannot be created: {probe} is a file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"The output folder {out} cannot be written: no write permission "
                         f"on {probe}.")
    return out


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder; its files move into ``path`` only on success.

    A run that fails (or is interrupted) leaves no partial output: the staging folder
    (a hidden sibling of ``path``) is removed and ``path`` is as it was. On success
    every entry of the staging folder replaces the entry of the same name in ``path``
    (created when absent); other files already in ``path`` are kept.
    """
    import shutil

    out = check_output_dir(path)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    try:
        yield stage
        if not out.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(stage, 0o777 & ~umask)
            os.replace(stage, out)
            return
        for entry in sorted(stage.iterdir()):
            dest = out / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
        stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
