"""Atomic file output: a reader never sees a half-written file.

Data is written to a temporary file in the destination folder and moved into place
with :func:`os.replace`, which is atomic on POSIX and Windows for files on one volume.

Outputs never destroy inputs or the user's own files:

* :func:`refuse_input_overwrite` refuses an output path that is an input of the run
  (compared as resolved paths), holds one (an output folder with an input inside) or
  lies inside an input folder (e.g. a DICOM series folder). Commands pass their inputs
  explicitly; the command-line loaders also note what they read with
  :func:`note_inputs`, and every write through this module checks those.
* :func:`staged_output_dir` replaces an entry of the output folder only by one of the
  same kind: a file by a file (an earlier run's ``results.json``); a folder by a folder
  only when it is empty or holds nothing but files this tool wrote there. The tool
  records the folders it writes, and their files, in :data:`OUTPUT_MANIFEST` (a hidden
  JSON file in the output folder); a folder it has no record of (the user's, or one
  written by a version before this rule) is never deleted: the run is refused with a
  message naming the path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

#: Hidden file in an output folder listing the sub-folders :func:`staged_output_dir`
#: wrote there and their files (relative paths): only those may be replaced by a rerun.
OUTPUT_MANIFEST = ".ctmusclebone-outputs.json"

#: Inputs read by the running command (resolved paths), noted by the command-line
#: loaders (:func:`note_inputs`); no write through this module replaces them.
_NOTED_INPUTS: set[Path] = set()


#: Files an operating system's file browser leaves in folders it shows (macOS Finder,
#: Windows Explorer); they are not user data, so a folder holding only these besides this
#: tool's own files may still be replaced by a rerun.
OS_METADATA_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"})


def _is_os_metadata(relative: str) -> bool:
    name = Path(relative).name
    return name in OS_METADATA_NAMES or name.startswith("._")


def note_inputs(*paths: str | os.PathLike[str] | None) -> None:
    """Note files or folders read as inputs of this process's run: no output written
    through this module (:func:`atomic_path`, :func:`staged_output_dir`) may replace or
    hold them. ``None`` and empty values are ignored."""
    for p in paths:
        if p is not None and str(p) != "":
            _NOTED_INPUTS.add(Path(p).resolve())


def noted_inputs() -> tuple[Path, ...]:
    """The inputs noted so far (:func:`note_inputs`)."""
    return tuple(sorted(_NOTED_INPUTS))


def clear_noted_inputs() -> None:
    """Forget the noted inputs (tests; a long-lived process starting a new run)."""
    _NOTED_INPUTS.clear()


def _named(exc: OSError, path: Path) -> OSError:
    """The same error naming the user's ``path`` instead of a hidden staging path."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where a new file or folder would be
    created)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _resolved(paths: Iterable[str | os.PathLike[str] | None]) -> list[Path]:
    return [Path(p).resolve() for p in paths if p is not None and str(p) != ""]


def refuse_input_overwrite(outputs: Iterable[str | os.PathLike[str]],
                           inputs: Iterable[str | os.PathLike[str] | None],
                           option: str = "--out") -> None:
    """Raise :class:`~CTMuscleBoneLib.errors.InputError` when an output would replace,
    hold or lie inside an input.

    Parameters
    ----------
    outputs : iterable of path-like
        Files or folders the run is about to write (or replace).
    inputs : iterable of path-like or None
        Files and folders the run reads; ``None`` entries are skipped.
    option : str
        The option that named the output, for the message.
    """
    from .errors import InputError

    ins = _resolved(inputs)
    for out in outputs:
        o = Path(out).resolve()
        for i in ins:
            if o == i:
                raise InputError(
                    f"The output {out} is an input of this run ({i}): an input is never "
                    f"overwritten. Choose another {option} (or move the input).")
            if o in i.parents:
                raise InputError(
                    f"Writing {out} would replace a folder that holds an input of this run "
                    f"({i}). Choose another {option}, or move the input out of {out}.")
            if i.is_dir() and i in o.parents:
                raise InputError(
                    f"The output {out} lies inside the input folder {i}: outputs are never "
                    f"written into an input. Choose another {option} outside {i}.")


def _check_file_destination(path: Path, option: str = "--out") -> None:
    """Refuse a file destination that is a folder or lies under a file (before work)."""
    from .errors import InputError

    if path.is_dir():
        raise InputError(f"{path} is a folder; an output file cannot replace it. Give a file "
                         f"name with {option} (or move the folder).")
    probe = _nearest_existing(path.parent)
    if probe.exists() and not probe.is_dir():
        raise InputError(f"Cannot write {path}: {probe} is a file, not a folder. Choose "
                         f"another {option}.")


def check_output_file(path: str | os.PathLike[str] | None,
                      inputs: Iterable[str | os.PathLike[str] | None] = (),
                      suffix: str | None = None, option: str = "--out",
                      also_suffixes: Iterable[str] = ()) -> Path:
    """Check, before any work, that ``path`` can become an output file.

    Parameters
    ----------
    path : path-like
        The file to write (e.g. a model JSON).
    inputs : iterable of path-like
        The run's inputs: ``path`` (and ``also``) must not be or hold any of them.
    suffix : str, optional
        Required ending (e.g. ``".json"``), case-insensitive.
    option : str
        The option that named it, for the messages.
    also_suffixes : iterable of str
        Suffixes of further files the run writes beside ``path`` (``".report.json"``:
        ``x.json`` -> ``x.report.json``); they must not be inputs either.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        Empty path, wrong suffix, a folder, a parent that is a file or not writable, an
        input of the run.
    """
    from .errors import InputError

    if path is None or str(path).strip() == "":
        raise InputError(f"{option} is empty: give the file to write"
                         + (f" (ending in {suffix})." if suffix else "."))
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{option} {out} is a folder; give the file to write"
                         + (f" (e.g. {out / ('model' + suffix)})." if suffix else "."))
    if suffix is not None and not out.name.lower().endswith(suffix.lower()):
        raise InputError(f"{option} {out}: the file to write must end in {suffix}.")
    _check_file_destination(out, option)
    also = [out.with_suffix(sfx) for sfx in also_suffixes]
    refuse_input_overwrite([out, *also], [*inputs, *noted_inputs()], option)
    probe = _nearest_existing(out.parent)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {out}: no write permission on {probe}. Choose "
                         f"another {option}.")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    The temporary file keeps the destination's suffixes (``.nii.gz`` stays
    ``.nii.gz``) so that writers choosing a format by extension still work. On an
    exception the temporary file is removed and ``path`` is untouched. An error of the
    file system names ``path`` (never the hidden temporary file); ``path`` naming an
    input of this run (:func:`note_inputs`), a folder, or lying under a file is refused
    with an :class:`~CTMuscleBoneLib.errors.InputError`.
    """
    path = Path(path)
    refuse_input_overwrite([path], noted_inputs())
    _check_file_destination(path)
    suffix = "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions of a normal file
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.filename is not None and \
                str(exc.filename) in (str(tmp_path), tmp):
            raise _named(exc, path) from None
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


def check_output_dir(path: str | os.PathLike[str],
                     inputs: Iterable[str | os.PathLike[str] | None] = (),
                     option: str = "--out", folders: Iterable[str] = ()) -> Path:
    """Check, before any work, that ``path`` can become an output folder.

    Returns the path. Raises :class:`~CTMuscleBoneLib.errors.InputError` when it is
    empty, names an existing file, when no folder can be created there (nearest existing
    parent not a folder or not writable), when it is, or lies inside, one of
    ``inputs`` (files and folders the run reads), or when one of the sub-folders the run
    will write (``folders``, e.g. ``segmentation``) exists as a file or holds files this
    tool did not write there: the same refusal as when the outputs are moved in
    (:func:`staged_output_dir`), but before a long run rather than after it.
    """
    from .errors import InputError

    if str(path).strip() == "":
        raise InputError(f"{option} is empty: give the output folder (it is created when "
                         "absent; '.' for the current folder).")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output path {out} is a file: an existing file is never "
                         "replaced; give a folder (it is created when absent).")
    probe = _nearest_existing(out)
    if probe.exists() and not probe.is_dir():
        raise InputError(f"The output folder {out} cannot be created: {probe} is a file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"The output folder {out} cannot be written: no write permission "
                         f"on {probe}.")
    ins = _resolved(inputs)
    resolved = out.resolve()
    for i in ins:
        if resolved == i or (i.is_dir() and i in resolved.parents):
            raise InputError(f"The output folder {out} is or lies inside the input {i}: "
                             f"outputs are never written into an input. Choose another "
                             f"{option}.")
    _check_sub_folders(out, folders)
    return out


def _check_sub_folders(out: Path, folders: Iterable[str]) -> None:
    """Refuse (InputError) a sub-folder of ``out`` the run will replace that is a file or
    holds files this tool did not write (see :func:`_check_replacements`)."""
    from .errors import InputError

    names = [f for f in folders if (out / f).exists() or (out / f).is_symlink()]
    if not names:
        return
    recorded = _read_manifest(out)
    for name in names:
        dest = out / name
        if dest.is_symlink() or not dest.is_dir():
            raise InputError(f"{dest} is {'a link' if dest.is_symlink() else 'a file'} where "
                             f"the output folder {name}/ goes; it is never replaced. Move it, "
                             "or choose another --out.")
        foreign = sorted(f for f in _files_under(dest) - set(recorded.get(name, ()))
                         if not _is_os_metadata(f))
        if foreign:
            raise InputError(
                f"The folder {dest} holds files CTMuscleBone did not write there (e.g. "
                f"{foreign[0]}); it is never deleted. Move that folder (or its files), or "
                "choose another --out.")


def _files_under(folder: Path) -> set[str]:
    """Relative POSIX paths of every non-folder entry under ``folder`` (links unfollowed)."""
    found = set()
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        found.update((base / f).relative_to(folder).as_posix() for f in files)
        found.update((base / d).relative_to(folder).as_posix() for d in dirs
                     if (base / d).is_symlink())
    return found


def _read_manifest(out: Path) -> dict[str, list[str]]:
    import json

    try:
        data = json.loads((out / OUTPUT_MANIFEST).read_text(encoding="utf-8"))
        folders = data["folders"]
        return {str(k): [str(f) for f in v] for k, v in folders.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _manifest_text(folders: dict[str, list[str]]) -> str:
    import json

    return json.dumps({"written_by": "CTMuscleBone", "note": "folders this tool wrote "
                       "here and their files; a rerun replaces only these",
                       "folders": {k: sorted(v) for k, v in sorted(folders.items())}},
                      indent=1) + "\n"


def _check_replacements(stage: Path, out: Path, inputs: list[Path]) -> dict[str, list[str]]:
    """Refuse (InputError) when moving the staged entries into ``out`` would replace an
    input, a folder by a file, a file by a folder, or a folder holding files this tool
    did not write; returns the manifest of ``out`` after the move."""
    from .errors import InputError

    recorded = _read_manifest(out) if out.is_dir() else {}
    entries = [e for e in sorted(stage.iterdir()) if e.name != OUTPUT_MANIFEST]
    refuse_input_overwrite([out / e.name for e in entries], inputs)
    folders = dict(recorded)
    for entry in entries:
        dest = out / entry.name
        is_folder = entry.is_dir() and not entry.is_symlink()
        if is_folder:
            folders[entry.name] = sorted(_files_under(entry))
        else:
            folders.pop(entry.name, None)
        if not (dest.exists() or dest.is_symlink()):
            continue
        dest_folder = dest.is_dir() and not dest.is_symlink()
        if not is_folder and (dest_folder or dest.is_dir()):
            raise InputError(f"A folder {dest} stands where the output file {entry.name} goes; "
                             "it is never deleted. Move or rename that folder, or choose "
                             "another --out.")
        if is_folder and not dest_folder:
            raise InputError(f"{dest} is {'a link' if dest.is_symlink() else 'a file'} where "
                             f"the output folder {entry.name}/ goes; it is never replaced. "
                             "Move it, or choose another --out.")
        if is_folder:
            present = _files_under(dest)
            foreign = sorted(f for f in present - set(recorded.get(entry.name, ()))
                             if not _is_os_metadata(f))
            if foreign:
                earlier = ("" if entry.name in recorded else
                           " If it is the output of an earlier run made before output "
                           "records were kept, delete or rename it.")
                raise InputError(
                    f"The folder {dest} holds files CTMuscleBone did not write there (e.g. "
                    f"{foreign[0]}); it is never deleted. Move that folder (or its files), "
                    f"or choose another --out.{earlier}")
    return folders


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike[str],
                      inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; its files move into ``path`` only on success.

    A run that fails (or is interrupted) leaves no partial output: the staging folder
    (a hidden sibling of ``path``) is removed and ``path`` is as it was. On success
    every entry of the staging folder replaces the entry of the same name in ``path``
    (created when absent); other files already in ``path`` are kept.

    Nothing that is not this tool's own earlier output is replaced: before any entry is
    moved, the run is refused (:class:`~CTMuscleBoneLib.errors.InputError`, ``path`` as
    it was) when an entry would replace or hold one of ``inputs`` or of the noted inputs
    (:func:`note_inputs`), a folder would replace a file (or a file a folder), or a
    folder would replace a folder holding files not listed in :data:`OUTPUT_MANIFEST`.
    Staged folders are recorded there. File-system errors name ``path``, never the
    staging folder.
    """
    import shutil

    out = check_output_dir(path, inputs)
    ins = _resolved([*inputs, *noted_inputs()])
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    except OSError as exc:
        raise _named(exc, out) from None
    try:
        yield stage
        folders = _check_replacements(stage, out, ins)
        if folders:
            manifest = stage / OUTPUT_MANIFEST
            manifest.write_text(_manifest_text(folders), encoding="utf-8")
        if not out.exists():
            os.chmod(stage, 0o777 & ~_umask())
            os.replace(stage, out)
            return
        for entry in sorted(stage.iterdir(), key=lambda e: e.name == OUTPUT_MANIFEST):
            dest = out / entry.name
            if dest.is_dir() and not dest.is_symlink():  # checked: only our own files
                trash = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=out))
                os.replace(dest, trash / entry.name)
                try:
                    os.replace(entry, dest)
                except OSError:  # put the earlier output back where it was
                    os.replace(trash / entry.name, dest)
                    trash.rmdir()
                    raise
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(entry, dest)
        stage.rmdir()
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        name = str(getattr(exc, "filename", None) or "")
        if isinstance(exc, OSError) and name.startswith(str(stage)):
            raise _named(exc, out / Path(name).relative_to(stage)) from None
        raise
