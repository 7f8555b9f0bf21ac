"""The manifest: one file, manifest.json, that lists and vouches for every other file.

    {"format": "splitgrad-checkpoint", "version": 1, "kind": "model" | "weights",
     "generation": 7,                       # counts the saves to this PATH
     "files": {"config.json": {"sha256": "…", "size": 1234}, ...},
     "environment": {"numpy": …, "splitgrad": …, "python": …, "blas": [{library, version,
                     architecture, threading_layer, threads}]},
     "manifest_sha256": "…"}

`manifest_sha256` is the SHA-256 of the canonical JSON of everything else (sorted keys, no
spaces, ASCII), so a flipped bit anywhere in the manifest is detected, and every listed file
must have exactly its size and SHA-256. A folder without a manifest is a checkpoint from before
manifests (its config.json held "sha256" for the tensor files); it loads only with
verify=False.

The environment record makes "may not be bitwise identical" visible: loading under another
BLAS library, kernel or thread count, or another NumPy or splitgrad version warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import warnings
from pathlib import Path

from ._files import DAMAGED, CheckpointError, parse_json, read_file

FORMAT, VERSION = "splitgrad-checkpoint", 1
MANIFEST = "manifest.json"
CONFIG, WEIGHTS, OPTIMIZER = "config.json", "weights.safetensors", "optimizer.safetensors"
LEGACY_SUMS = "sha256.json"  # beside a bare weights file, before manifests
OWN_FILES = (MANIFEST, CONFIG, WEIGHTS, OPTIMIZER, LEGACY_SUMS)
# A model's further optimizers (`Model.extra_optimizers()`, e.g. a GAN's discriminator's) each
# get optimizer.NAME.safetensors; NAME is short lower-case text, so it is a plain file name.
_EXTRA_NAME = r"[a-z][a-z0-9_]{0,63}"
_EXTRA_FILE = re.compile(r"optimizer\.(" + _EXTRA_NAME + r")\.safetensors")
MAX_EXTRA_OPTIMIZERS = 16
REQUIRED = {"model": (CONFIG, WEIGHTS), "weights": (WEIGHTS,)}
MAX_MANIFEST_BYTES = 1 << 20
# Parsed JSON takes many times its size in memory: a config (architecture, settings, `extra`)
# of more than this is refused at saving and at loading.
MAX_CONFIG_BYTES = 16 << 20
MAX_FILES = 1000
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"format", "version", "kind", "generation", "files", "environment", "manifest_sha256"}


def plain_name_problem(name) -> str | None:
    """Why `name` cannot be a file in a checkpoint folder, or None if it can."""
    if not isinstance(name, str) or not name or len(name) > 255:
        return "a file name must be 1 to 255 characters of text"
    if (
        name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or (os.altsep and os.altsep in name)
    ):
        return "a file name must not be '.', '..' or contain a path separator or NUL"
    return None


def extra_optimizer_name_problem(name) -> str | None:
    """Why `name` cannot name an extra optimizer, or None if it can."""
    if isinstance(name, str) and re.fullmatch(_EXTRA_NAME, name):
        return None
    return "an extra optimizer's name must be 1 to 64 of a-z, 0-9 and _, starting with a letter"


def extra_optimizer_file(name: str) -> str:
    """The file holding the arrays of the extra optimizer `name`."""
    return f"optimizer.{name}.safetensors"


def extra_optimizer_of(file_name) -> str | None:
    """The extra optimizer whose file `file_name` is, or None."""
    found = _EXTRA_FILE.fullmatch(file_name) if isinstance(file_name, str) else None
    return found.group(1) if found else None


def is_own_file(name) -> bool:
    """Whether a checkpoint itself may write a file of this name (never an attachment)."""
    return name in OWN_FILES or extra_optimizer_of(name) is not None


# ----- writing ---------------------------------------------------------------------------
def canonical(doc: dict) -> bytes:
    """The bytes the self-checksum covers: sorted keys, no spaces, ASCII."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def seal(doc: dict) -> bytes:
    """The manifest file's bytes for `doc`: `doc` plus its own checksum, readable JSON."""
    body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
    body["manifest_sha256"] = hashlib.sha256(canonical(body)).hexdigest()
    return (json.dumps(body, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def make(kind: str, generation: int, files: dict) -> bytes:
    """The sealed manifest for {name: bytes} written as the `generation`-th save."""
    return seal(
        {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "generation": generation,
            "files": {name: entry(data) for name, data in sorted(files.items())},
            "environment": environment(),
        }
    )


# ----- reading ---------------------------------------------------------------------------
def read(folder: Path, verify: bool = True) -> dict | None:
    """The folder's manifest, checked in structure (and checksum, with `verify`); None when the
    folder has no manifest.json at all."""
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return None
    data, _ = read_file(path, limit=MAX_MANIFEST_BYTES)
    doc = parse_json(data, path, what="a manifest (a JSON object)")
    if doc.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a splitgrad manifest (format "
            f"{str(doc.get('format'))[:40]!r}, expected {FORMAT!r}). {DAMAGED}"
        )
    version = doc.get("version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(
            f"{path}: version must be an integer ≥ 1, found {str(version)[:40]!r}. {DAMAGED}"
        )
    if version > VERSION:
        raise CheckpointError(
            f"{path}: written by a newer splitgrad (manifest version "
            f"{version}, this one reads {VERSION}); upgrade splitgrad"
        )
    if verify:
        claimed = doc.get("manifest_sha256")
        body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
        try:
            actual = hashlib.sha256(canonical(body)).hexdigest()
        except ValueError:  # NaN or infinity somewhere: never written by splitgrad
            actual = None
        if claimed != actual:
            raise CheckpointError(
                f"{path}: its checksum (manifest_sha256) does not match its "
                f"content; the manifest is corrupt or was edited. {DAMAGED}"
            )
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unexpected entries {unknown[:5]}. {DAMAGED}")
    if not isinstance(doc.get("kind"), str) or doc["kind"] not in REQUIRED:
        raise CheckpointError(
            f"{path}: kind must be one of {sorted(REQUIRED)}, found "
            f"{str(doc.get('kind'))[:40]!r}. {DAMAGED}"
        )
    if not _is_int(doc.get("generation")) or doc["generation"] < 0:
        raise CheckpointError(
            f"{path}: generation must be an integer ≥ 0, found "
            f"{str(doc.get('generation'))[:40]!r}. {DAMAGED}"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or not 0 < len(files) <= MAX_FILES:
        raise CheckpointError(
            f"{path}: 'files' must map 1 to {MAX_FILES} file names to their "
            f"sha256 and size. {DAMAGED}"
        )
    for name, info in files.items():
        problem = plain_name_problem(name)
        if problem or name == MANIFEST:
            raise CheckpointError(
                f"{path}: lists the file {name[:80]!r}, which cannot be in a "
                f"checkpoint ({problem or 'the manifest lists itself'}). "
                f"{DAMAGED}"
            )
        if not (
            isinstance(info, dict)
            and set(info) == {"sha256", "size"}
            and isinstance(info["sha256"], str)
            and _HEX64.fullmatch(info["sha256"])
            and _is_int(info["size"])
            and info["size"] >= 0
        ):
            raise CheckpointError(
                f"{path}: the entry for {name!r} must be {{'sha256': 64 hex "
                f"digits, 'size': bytes ≥ 0}}. {DAMAGED}"
            )
    missing = [n for n in REQUIRED[doc["kind"]] if n not in files]
    if missing:
        raise CheckpointError(f"{path}: a {doc['kind']} checkpoint must list {missing}. {DAMAGED}")
    if not isinstance(doc.get("environment", {}), dict):
        raise CheckpointError(f"{path}: 'environment' must be an object. {DAMAGED}")
    return doc


def read_listed(folder: Path, manifest: dict, verify: bool = True, keep=()) -> dict:
    """Check every file the manifest lists (regular, exact size, SHA-256 with `verify`) and
    return {name: bytes} of those named in `keep` (the others are hashed a chunk at a time)."""
    out = {}
    for name, info in manifest["files"].items():
        data, digest = read_file(
            folder / name,
            size=info["size"],
            keep=name in keep,
            limit=MAX_CONFIG_BYTES if name == CONFIG else None,
            what=f"{MANIFEST} lists it, so the checkpoint is incomplete. {DAMAGED}",
        )
        if verify and digest != info["sha256"]:
            raise CheckpointError(
                f"{folder / name}: checksum mismatch with {MANIFEST}; the "
                f"file is corrupt or was changed after saving. {DAMAGED}"
            )
        if name in keep:
            out[name] = data
    return out


def verified_generation(folder: Path) -> int | None:
    """The generation of a complete, fully verified checkpoint in `folder`, else None."""
    try:
        manifest = read(folder, verify=True)
        if manifest is None:
            return None
        read_listed(folder, manifest, verify=True)
    except (CheckpointError, OSError):
        return None
    return manifest["generation"]


def listed_names(folder: Path) -> set | None:
    """The names the folder's manifest (or legacy config.json / sha256.json) lists, with the
    listing file itself; None when the folder holds no readable listing."""
    try:
        manifest = read(folder, verify=True)
    except (CheckpointError, OSError):
        return None
    if manifest is not None:
        return {MANIFEST, *manifest["files"]}
    return legacy_listing(folder)


# ----- checkpoints from before manifests -------------------------------------------------
def legacy_listing(folder: Path) -> set | None:
    """Files of a legacy checkpoint: config.json ("format": "splitgrad-model", with "sha256"
    of the tensor files) or sha256.json beside a weights file; None if neither is there."""
    for name in (CONFIG, LEGACY_SUMS):
        try:
            data, _ = read_file(folder / name, limit=MAX_CONFIG_BYTES)
            doc = parse_json(data, folder / name)
        except (CheckpointError, OSError):
            continue
        if name == CONFIG and doc.get("format") != "splitgrad-model":
            continue
        sums = doc.get("sha256", {}) if name == CONFIG else doc
        if not isinstance(sums, dict) or any(plain_name_problem(k) for k in sums):
            continue
        if name == CONFIG and not sums:  # before checksums: the fixed set of files
            sums = {WEIGHTS: None, OPTIMIZER: None}
        return {name, *sums}
    return None


def legacy_complete(folder: Path) -> bool:
    """Whether a legacy folder's recorded checksums all match (none recorded: False)."""
    for name in (CONFIG, LEGACY_SUMS):
        try:
            data, _ = read_file(folder / name, limit=MAX_CONFIG_BYTES)
            doc = parse_json(data, folder / name)
            sums = doc.get("sha256") if name == CONFIG else doc
            if (
                not isinstance(sums, dict)
                or WEIGHTS not in sums
                or any(plain_name_problem(k) for k in sums)
            ):
                continue
            if all(read_file(folder / k, keep=False)[1] == v for k, v in sums.items()):
                return True
        except (CheckpointError, OSError):
            continue
    return False


# ----- environment -----------------------------------------------------------------------
def environment() -> dict:
    """Versions and the BLAS NumPy uses (library, kernel, threads): what decides whether a
    resumed run repeats the original bit for bit."""
    import numpy as np

    from .. import __version__

    return {
        "numpy": np.__version__,
        "splitgrad": __version__,
        "python": platform.python_version(),
        "blas": _blas(),
    }


def _blas() -> list:
    try:
        from threadpoolctl import threadpool_info

        from .._kernels import thread_team
    except ImportError:
        return []
    import numpy as np

    home = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    # SciPy may load a BLAS of its own; NumPy's (bundled under site-packages/numpy*) decides.
    own = [
        i
        for i in infos
        if os.path.abspath(i.get("filepath") or "").startswith(os.path.join(home, "numpy"))
    ]
    out = []
    for info in own or infos[:1]:
        threads = info.get("num_threads")
        if thread_team.in_own_threads():  # the BLAS is held at 1 thread for a moment
            threads = thread_team.team_size()
        out.append(
            {
                "library": info.get("internal_api"),
                "version": info.get("version"),
                "architecture": info.get("architecture"),
                "threading_layer": info.get("threading_layer"),
                "threads": threads,
            }
        )
    return out


def warn_if_environment_differs(recorded, source) -> None:
    """warnings.warn (RuntimeWarning) when the saving environment differs from this one."""
    if not isinstance(recorded, dict) or not recorded:
        return
    now = environment()
    diffs = []
    for key in ("numpy", "splitgrad"):
        if key in recorded and recorded[key] != now[key]:
            diffs.append(f"{key} {str(recorded[key])[:40]} → {now[key]}")
    saved_blas = recorded.get("blas")
    if isinstance(saved_blas, list) and saved_blas != now["blas"]:
        for i in range(max(len(saved_blas), len(now["blas"]))):
            a = saved_blas[i] if i < len(saved_blas) else {}
            b = now["blas"][i] if i < len(now["blas"]) else {}
            a = a if isinstance(a, dict) else {}
            for key in ("library", "version", "architecture", "threading_layer", "threads"):
                if a.get(key) != b.get(key):
                    diffs.append(f"BLAS {key} {str(a.get(key))[:40]} → {b.get(key)}")
    if diffs:
        warnings.warn(
            f"{source}: saved under another environment ({'; '.join(diffs)}); "
            "training resumed from it may not be bitwise identical to the original "
            "run",
            RuntimeWarning,
            stacklevel=4,
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
