"""Careful file access for checkpoints: regular files only, exact sizes, durable writes,
bounded JSON and safetensors whose header is checked before anything is allocated.

Every reader here refuses what is not a plain file BEFORE opening it (a FIFO would block the
open forever, a symlink to /dev/zero would fill memory), reads exactly the size it was told to
expect, and raises CheckpointError naming the file, what was expected, what was found and what
to do. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, crafted, or does not fit the model; or a save target
    is unsafe. The message names the file, what is wrong and what to do."""


DAMAGED = "Restore the folder from a backup or retrain."
MAX_JSON_DEPTH = 64  # a real config nests about 10 levels; deeper is crafted
_CHUNK = 1 << 20


# ----- reading ---------------------------------------------------------------------------
def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _lstat_regular(path: Path, what: str) -> os.stat_result:
    """lstat `path` and insist on a regular file (symlinks are not followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file is missing; {what}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be examined ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(
            f"{path}: expected a regular file, found {_kind(st.st_mode)}; a checkpoint holds "
            f"only regular files, so it was altered. {DAMAGED}"
        )
    return st


def _open_regular(path: Path, st: os.stat_result):
    """Open the file lstat saw, without following links or blocking, and check it is it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be opened ({exc.strerror})") from None
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise CheckpointError(f"{path}: was replaced while it was being opened; try again")
    return os.fdopen(fd, "rb")


def read_file(
    path,
    *,
    size: int | None = None,
    limit: int | None = None,
    what: str = "the checkpoint is incomplete",
    keep: bool = True,
):
    """(bytes or None, SHA-256 hex) of the regular file at `path`, read in full.

    `size`: the exact byte count expected (from the manifest); `limit`: the most accepted.
    Both are checked against lstat before the file is opened. With `keep=False` the bytes are
    only hashed, a chunk at a time, so memory stays small.
    """
    path = Path(path)
    st = _lstat_regular(path, what)
    if size is not None and st.st_size != size:
        raise CheckpointError(
            f"{path}: holds {st.st_size} bytes, the manifest lists {size}; the file was "
            f"truncated, extended or replaced. {DAMAGED}"
        )
    if limit is not None and st.st_size > limit:
        raise CheckpointError(
            f"{path}: holds {st.st_size} bytes, more than the {limit} a "
            f"file of this kind may hold; it is not a splitgrad file"
        )
    digest = hashlib.sha256()
    parts = []
    with _open_regular(path, st) as fh:
        remaining = st.st_size
        while remaining > 0:
            chunk = fh.read(min(_CHUNK, remaining) if not keep else remaining)
            if not chunk:
                break
            remaining -= len(chunk)
            digest.update(chunk)
            if keep:
                parts.append(chunk)
        if remaining or fh.read(1):
            raise CheckpointError(
                f"{path}: changed size while it was read; another program "
                "is writing it. Try again when it is done"
            )
    data = b"".join(parts) if keep else None
    return data, digest.hexdigest()


def parse_json(data: bytes, source, *, what: str = "a JSON object"):
    """Parse UTF-8 JSON bytes; refuse deep nesting and anything but an object at the top."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(
            f"{source}: not valid JSON ({exc}); the file is corrupt. {DAMAGED}"
        ) from None
    except RecursionError:
        raise CheckpointError(
            f"{source}: JSON nested too deeply to be a splitgrad file; "
            f"it was crafted or corrupted. {DAMAGED}"
        ) from None
    if not isinstance(doc, dict):
        raise CheckpointError(
            f"{source}: expected {what}, found a JSON "
            f"{type(doc).__name__}; the file is corrupt. {DAMAGED}"
        )
    check_depth(doc, source)
    return doc


def check_depth(doc, source, limit: int = MAX_JSON_DEPTH):
    """Refuse JSON nested deeper than `limit` (iterative, so it cannot itself recurse)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise CheckpointError(
                f"{source}: JSON nested more than {limit} levels deep; a "
                f"splitgrad file never is, so it was crafted. {DAMAGED}"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


# ----- writing ---------------------------------------------------------------------------
def write_durable(folder: Path, name: str, data: bytes) -> None:
    """Create folder/name (it must not exist), write `data`, and fsync it to the disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(folder / name, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make a folder's entries (new names, renames) durable; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the renames are still atomic
    finally:
        os.close(fd)


# ----- safetensors -----------------------------------------------------------------------
_DTYPES = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
}
# safetensors allows 100 MB; a splitgrad header (names and shapes) is kilobytes, and parsed
# JSON takes many times its size in memory, so a crafted header is refused well before that.
_MAX_HEADER = 16 << 20
_MAX_NDIM = 32


def encode_tensors(arrays: dict) -> bytes:
    """The safetensors bytes of {name: array}."""
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def tensor_index(data: bytes, source) -> dict:
    """{name: (dtype, shape)} from a safetensors header, checked against the file's size.

    The header is 8 bytes of little-endian length, then JSON {name: {"dtype", "shape",
    "data_offsets": [begin, end]}}. Each tensor's bytes (dtype size × shape) must equal its
    span, and the spans must tile the data exactly, so no shape can claim more memory than the
    file holds.
    """
    bad = f"{source}: not a valid safetensors file"
    if len(data) < 8:
        raise CheckpointError(f"{bad}: {len(data)} bytes, too short for a header. {DAMAGED}")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, _MAX_HEADER):
        raise CheckpointError(
            f"{bad}: its header claims {n} bytes, the file holds "
            f"{len(data) - 8} after the length. {DAMAGED}"
        )
    header = parse_json(data[8 : 8 + n], f"{source}: safetensors header", what="a JSON object")
    body = len(data) - 8 - n
    index, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise CheckpointError(f"{bad}: __metadata__ must map text to text. {DAMAGED}")
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(
                f"{bad}: entry {name!r} must hold exactly dtype, shape and data_offsets. {DAMAGED}"
            )
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"{bad}: tensor {name!r} has dtype {dtype!r}; expected one of "
                f"{sorted(_DTYPES)}. {DAMAGED}"
            )
        if not (
            isinstance(shape, list)
            and len(shape) <= _MAX_NDIM
            and all(_is_int(s) and s >= 0 for s in shape)
        ):
            raise CheckpointError(
                f"{bad}: tensor {name!r} has shape {shape!r}; expected at "
                f"most {_MAX_NDIM} sizes ≥ 0. {DAMAGED}"
            )
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
        ):
            raise CheckpointError(
                f"{bad}: tensor {name!r} has data_offsets {offsets!r}; "
                f"expected 0 ≤ begin ≤ end ≤ {body}. {DAMAGED}"
            )
        need = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if need != offsets[1] - offsets[0]:
            raise CheckpointError(
                f"{bad}: tensor {name!r} of dtype {dtype} and shape {shape} "
                f"needs {need} bytes, its span holds "
                f"{offsets[1] - offsets[0]}. {DAMAGED}"
            )
        index[name] = (np.dtype(_DTYPES[dtype]), tuple(shape))
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise CheckpointError(
                f"{bad}: tensor {name!r} starts at byte {begin} of the data, "
                f"expected {end} (spans must tile the data). {DAMAGED}"
            )
        end = stop
    if end != body:
        raise CheckpointError(
            f"{bad}: the tensors cover {end} bytes of data, the file holds {body}. {DAMAGED}"
        )
    return index


def decode_tensors(data: bytes, source) -> dict:
    """{name: array} from safetensors bytes, after `tensor_index` has checked every size."""
    from safetensors.numpy import load

    index = tensor_index(data, source)
    try:
        arrays = load(data)
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own error types
        raise CheckpointError(
            f"{source}: cannot read it as safetensors ({exc}). {DAMAGED}"
        ) from None
    for name, (dtype, shape) in index.items():
        a = arrays.get(name)
        if a is None or a.dtype != dtype or a.shape != shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} did not read back as {dtype}{list(shape)}. {DAMAGED}"
            )
    return arrays


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
