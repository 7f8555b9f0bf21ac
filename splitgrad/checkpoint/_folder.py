"""Replacing a checkpoint folder so that no two crashes can lose the last complete copy.

A save to PATH:
  1. checks PATH (`check_target`): a folder holding anything but a splitgrad checkpoint is
     refused unless overwrite=True; a file, a symlink, or the working folder is always refused;
  2. takes an exclusive lock on PATH's parent folder (flock; loaders take it too, so a loader
     never cleans up a save that is still running);
  3. recovers: leftovers of crashed saves (siblings PATH.sg-new-*, PATH.sg-old-*, and the
     PATH.tmp-* / PATH.old of older splitgrads) are examined; a complete one newer than PATH,
     or any complete one when PATH is missing, is renamed into place; then, and only while a
     complete copy is at PATH, the others are deleted;
  4. writes every file into a new sibling PATH.sg-new-XXXX, fsyncs each, writes the manifest
     (generation = PATH's + 1) last, and fsyncs the folder;
  5. renames PATH to PATH.sg-old-XXXX, renames the new folder to PATH (fsyncing the parent after
     each), then deletes the old copy.

Why two crashes (SIGKILL at any instants) cannot leave zero loadable copies: a folder only
becomes PATH by a rename once it is complete and on disk, and a complete copy is only deleted
while another complete copy sits at PATH. So at every instant some complete copy exists at
PATH or as a leftover, and the next save or load moves the newest one into place before doing
anything else. Leftovers do not pile up: every save and load removes them once PATH is whole,
so at most two (one old, one new) exist after any crash (tests/test_checkpoint_kill.py tries
every pair of crash points). A loader runs step 3 as well, under the same lock.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from . import _manifest
from ._files import CheckpointError, fsync_folder, write_durable

NEW, OLD = ".sg-new-", ".sg-old-"
_LEGACY_TMP = ".tmp-"  # tempfile.mkdtemp(prefix=NAME + ".tmp-") of splitgrad before manifests


# ----- is it safe to write here? ---------------------------------------------------------
def check_target(path, overwrite: bool = False) -> None:
    """Raise CheckpointError unless a checkpoint may be saved at `path`; writes nothing.

    Allowed: a missing path (its parent folders are made), an empty folder, or a folder that
    holds a splitgrad checkpoint (a manifest, or a legacy config.json, and only the files it
    lists). Any other file in the folder is "in the way": refused unless overwrite=True, and
    then the whole folder is replaced. Always refused: a path that is a file or a symbolic
    link, and the current working folder or any folder that contains it.
    """
    path = Path(path)
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise CheckpointError(
            f"{path}: is the current working folder{'' if cwd == real else ' or contains it'} "
            f"({real}); a save replaces the whole folder. Save into a new subfolder instead, "
            "e.g. runs/NAME"
        )
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        _check_parent(path)
        return
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(
            f"{path}: is a symbolic link (to {os.readlink(path)}); a save "
            "replaces the folder at PATH, so give the real folder's path"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CheckpointError(
            f"{path}: is a file, not a folder; a checkpoint is a folder. "
            "Choose another path (overwrite=True never replaces a file)"
        )
    if not overwrite:
        in_the_way = _in_the_way(path)
        if in_the_way:
            shown = ", ".join(in_the_way[:10]) + (", ..." if len(in_the_way) > 10 else "")
            raise CheckpointError(
                f"{path}: the folder holds {len(in_the_way)} item(s) that are not part of a "
                f"splitgrad checkpoint: {shown}. A save replaces the whole folder, which would "
                "delete them. Choose another folder, move them away, or pass overwrite=True "
                "(--overwrite) to replace the folder and everything in it"
            )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"{path}: its parent folder {path.parent} is not writable; "
            "choose a path you can write to"
        )


def _check_parent(path: Path) -> None:
    """A missing target: its nearest existing ancestor must be a writable folder."""
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CheckpointError(f"{path}: cannot be created, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"{path}: cannot be created, {parent} is not writable")


def _in_the_way(folder: Path, damaged_ok: bool = True) -> list:
    """Names in `folder` that are not files of the checkpoint it holds ("name/" for folders).
    With `damaged_ok`, a folder whose manifest is unreadable may still hold the checkpoint's
    own file names (config.json, ...): a damaged checkpoint can be saved over."""
    names = sorted(os.listdir(folder))
    if not names:
        return []
    listed = _manifest.listed_names(folder)
    if listed is None:
        damaged = damaged_ok and os.path.lexists(folder / _manifest.MANIFEST)
        own = _manifest.is_own_file if damaged else (lambda name: False)
    else:
        own = listed.__contains__
    out = []
    for name in names:
        if own(name) and not os.path.isdir(folder / name):
            continue
        out.append(name + "/" if os.path.isdir(folder / name) else name)
    return out


# ----- the lock --------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(parent: Path, exclusive: bool):
    """flock on the parent folder: saves exclusive, loads shared (released on any exit,
    SIGKILL included). Where flock is unavailable the protocol still holds for one writer."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            pass  # e.g. a network file system without locks
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ----- leftovers and recovery ------------------------------------------------------------
def leftovers(path: Path) -> list:
    """Sibling folders left by saves to `path` that were interrupted."""
    name, parent = path.name, path.parent
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    out = []
    for entry in sorted(entries):
        if not (
            entry.startswith((name + NEW, name + OLD))
            or entry == name + ".old"
            or (entry.startswith(name + _LEGACY_TMP) and len(entry) == len(name + _LEGACY_TMP) + 8)
        ):
            continue
        full = parent / entry
        try:
            if stat.S_ISDIR(os.lstat(full).st_mode) and _ours(full):
                out.append(full)
        except OSError:
            continue  # removed meanwhile
    return out


def _ours(folder: Path) -> bool:
    """Leftovers named like ours may be deleted; a legacy-named one (PATH.old, PATH.tmp-*)
    only if it holds nothing but checkpoint files, as a user could have picked that name."""
    if OLD in folder.name or NEW in folder.name:
        return True
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    return all(map(_manifest.is_own_file, names)) or names <= (
        _manifest.listed_names(folder) or set()
    )


def _generation(folder: Path) -> int | None:
    """Generation of a complete copy (legacy complete copies count as 0), else None."""
    gen = _manifest.verified_generation(folder)
    if gen is None and _manifest.legacy_complete(folder):
        return 0
    return gen


def recover(path: Path) -> None:
    """Move the newest complete leftover into place if PATH lacks a newer complete copy, then
    delete the leftovers if (and only if) PATH holds a complete copy. Call under the lock."""
    found = leftovers(path)
    if not found:
        return
    here = _generation(path) if path.is_dir() else None
    complete = [(g, p) for p in found if (g := _generation(p)) is not None]
    if complete:
        best_gen, best = max(complete, key=lambda gp: gp[0])
        # PATH may be replaced when missing, or when it holds an older checkpoint (perhaps a
        # damaged one) and nothing else; a folder holding anything of the user's stays.
        movable = not os.path.lexists(path) or (
            path.is_dir()
            and not _in_the_way(path, damaged_ok=False)
            and _listed_generation(path) < best_gen
        )
        if movable:
            _swap_in(best, path)
            here = best_gen
    if here is None:
        return  # no complete copy at PATH: keep every leftover, one may be the only copy
    for folder in leftovers(path):
        _remove(folder)
    fsync_folder(path.parent)


def _listed_generation(path: Path) -> int:
    try:
        manifest = _manifest.read(path, verify=False)
    except (CheckpointError, OSError):
        return -1
    if manifest is None:
        return 0 if _manifest.legacy_listing(path) is not None else -1
    return manifest["generation"]


def _swap_in(new: Path, path: Path) -> Path | None:
    """Rename the complete folder `new` to `path`, first moving what is at `path` aside to
    PATH.sg-old-XXXX, whose name is returned (the caller deletes it once `new` is in place).
    Two renames, each made durable: between them PATH is missing and both copies exist."""
    aside = None
    if os.path.lexists(path):
        aside = _unused_name(path, OLD)
        os.replace(path, aside)
        fsync_folder(path.parent)
    os.replace(new, path)
    fsync_folder(path.parent)
    return aside


def _unused_name(path: Path, kind: str) -> Path:
    """A sibling name PATH.sg-old-XXXXXXXX that nothing has (the caller holds the lock); no
    placeholder is created, so a crash here leaves nothing behind."""
    while True:
        candidate = path.with_name(f"{path.name}{kind}{secrets.token_hex(4)}")
        if not os.path.lexists(candidate):
            return candidate


def _remove(folder: Path) -> None:
    # A crash in rmtree leaves a partial folder: incomplete, so the next recovery removes it.
    shutil.rmtree(folder, ignore_errors=True)


# ----- writing and reading ---------------------------------------------------------------
def write(path, files: dict, kind: str, overwrite: bool = False) -> None:
    """Save {name: bytes} as a checkpoint folder at `path` with the protocol above."""
    path = Path(path)
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent, exclusive=True):
        check_target(path, overwrite)  # again: another process may have written meanwhile
        recover(path)
        generation = 1 + max(
            [0, _listed_generation(path) if path.is_dir() else 0]
            + [_listed_generation(p) for p in leftovers(path)]
        )
        tmp = Path(tempfile.mkdtemp(prefix=path.name + NEW, dir=path.parent))
        try:
            for name, data in files.items():
                write_durable(tmp, name, data)
            write_durable(tmp, _manifest.MANIFEST, _manifest.make(kind, generation, files))
            fsync_folder(tmp)
        except BaseException:
            _remove(tmp)
            raise
        old = _swap_in(tmp, path)
        if old is not None:
            _remove(old)
            fsync_folder(path.parent)


@contextlib.contextmanager
def reading(path):
    """`with reading(path) as folder:` the folder to load, after recovering leftovers (under
    the lock, so a save running elsewhere finishes first and is not mistaken for a crash)."""
    path = Path(path)
    parent = path.parent if path.parent.is_dir() else None
    if parent is None:
        yield _existing(path)
        return
    if leftovers(path):
        with _locked(parent, exclusive=True):
            try:
                recover(path)
            except OSError:
                pass  # read-only location: load whatever complete copy there is
    with _locked(parent, exclusive=False):
        if not os.path.lexists(path):
            newest = [(g, p) for p in leftovers(path) if (g := _generation(p)) is not None]
            if newest:
                yield max(newest, key=lambda gp: gp[0])[1]
                return
        yield _existing(path)


def _existing(path: Path) -> Path:
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such model folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a model folder (made by model.save), got a file")
    return path
