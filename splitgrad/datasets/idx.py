"""IDX files (the MNIST format) and the Fashion-MNIST loader.

An IDX file is: two zero bytes, a dtype code, the number of dims, each dim as a big-endian
uint32, then the values in big-endian C order. Files may be gzip-compressed; that is detected
from the content (magic bytes 1f 8b), not the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..data import DataSplit

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IDXError",
    "load_fashion_mnist",
    "load_mnist_format",
    "read_idx",
    "write_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# IDX type code → big-endian NumPy dtype.
_CODES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the problem."""


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (plain or gzip), in native byte order.

    The values are read straight into the array (no copy of the whole file in between: the
    Fashion-MNIST training images alone are 47 MB of bytes). Raises IDXError naming the file
    when the magic number, type code, dims or size are wrong, or gzip data is corrupt.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            return _read_idx_stream(path, raw)
        try:
            with gzip.GzipFile(fileobj=raw) as f:
                return _read_idx_stream(path, f)
        except (EOFError, OSError, zlib.error) as e:
            raise IDXError(
                f"{path}: gzip data is truncated or corrupt ({e}); download the file again."
            ) from e


def _read_idx_stream(path, f) -> np.ndarray:
    """`read_idx` from an open binary stream `f` (plain or gzip)."""
    start = f.read(4)
    if len(start) < 4:
        raise IDXError(
            f"{path}: only {len(start)} bytes; an IDX file starts with a 4-byte magic "
            "number (file truncated or empty)."
        )
    zero, code, ndim = start[:2], start[2], start[3]
    if zero != b"\x00\x00":
        raise IDXError(
            f"{path}: bad magic number {start.hex()}; an IDX file starts with two "
            "zero bytes (is this an IDX file?)."
        )
    if code not in _CODES:
        known = ", ".join(f"0x{c:02X}" for c in _CODES)
        raise IDXError(f"{path}: unknown IDX type code 0x{code:02X}; known codes are {known}.")
    if ndim == 0:
        raise IDXError(f"{path}: the header declares 0 dimensions; an IDX array needs at least 1.")
    header = 4 + 4 * ndim
    shape_bytes = f.read(4 * ndim)
    if len(shape_bytes) < 4 * ndim:
        raise IDXError(
            f"{path}: truncated header: {ndim} dims need {header} bytes but the file "
            f"has {4 + len(shape_bytes)}."
        )
    dims = tuple(int(d) for d in np.frombuffer(shape_bytes, dtype=">u4"))
    dtype = _CODES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    arr = np.empty(dims, dtype)
    got = header + f.readinto(memoryview(arr).cast("B")) if arr.size else header
    extra = len(f.read()) if got == expected else 0
    if got != expected or extra:
        problem = "truncated" if got < expected else "has trailing bytes"
        raise IDXError(
            f"{path}: {problem}: shape {dims} of {dtype.newbyteorder('=').name} needs "
            f"{expected} bytes (uncompressed) but the file holds {got + extra}; download it "
            "again."
        )
    native = dtype.newbyteorder("=")
    return arr if arr.dtype == native else arr.astype(native)


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write `array` as IDX (gzip when `compress`, or by default when the name ends in .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _CODES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(
            f"write_idx: dtype {arr.dtype} has no IDX code; use one of "
            f"{sorted(d.name for d in codes)}."
        )
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"write_idx: need 1 to 255 dims, got shape {arr.shape}.")
    header = bytes([0, 0, codes[native], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(native.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


_PARTS = {
    "x_train": "train-images",
    "y_train": "train-labels",
    "x_test": "t10k-images",
    "y_test": "t10k-labels",
}


def _find(folder: Path, stem: str) -> Path | None:
    idx = "idx3-ubyte" if "images" in stem else "idx1-ubyte"
    # Distributions spell the names two ways ("-idx3" or ".idx3"), with or without .gz.
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            candidate = folder / f"{stem}{sep}{idx}{ext}"
            if candidate.is_file():
                return candidate
    return None


def load_mnist_format(
    folder, normalize: bool = True, class_names=None, name: str = "mnist_format"
) -> DataSplit:
    """Train/test images and labels from a folder of MNIST-named IDX files.

    Images come back as (N, H, W, 1): float32 in [0, 1] when `normalize`, else raw uint8.
    Labels are int64. `meta` holds the class names and the files read.
    """
    folder = Path(folder)
    found = {key: _find(folder, stem) for key, stem in _PARTS.items()}
    missing = [stem for key, stem in _PARTS.items() if found[key] is None]
    if missing:
        raise FileNotFoundError(
            f"{folder}: missing {', '.join(missing)} (looked for e.g. "
            f"'{missing[0]}-idx?-ubyte' and '.gz'). For Fashion-MNIST run "
            "`apt-get install dataset-fashion-mnist`, or pass a folder holding the four "
            "MNIST-format files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])."
        )
    arrays = {key: read_idx(p) for key, p in found.items()}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise IDXError(
                f"{found[f'x_{part}']}: expected images (N, H, W) and labels (N,), got "
                f"{x.shape} and {y.shape} (from {found[f'y_{part}']})."
            )
    for key in ("x_train", "x_test"):
        x = arrays[key][..., None]
        if normalize:
            x = x.astype(np.float32)
            x /= np.float32(255.0)  # in place: the training images alone are ~190 MB as float32
        arrays[key] = x
    for key in ("y_train", "y_test"):
        arrays[key] = arrays[key].astype(np.int64)
    num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    meta = {
        "name": name,
        "task": "multiclass",
        "class_names": names,
        "num_classes": len(names),
        "normalized": bool(normalize),
        "files": {key: os.fspath(p) for key, p in found.items()},
    }
    return DataSplit(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], meta)


def load_fashion_mnist(path=None, normalize: bool = True) -> DataSplit:
    """Fashion-MNIST: 60000 train / 10000 test images (N, 28, 28, 1), 10 clothing classes.

    Reads Debian's dataset-fashion-mnist files unless `path` names another folder.
    """
    folder = FASHION_MNIST_DIR if path is None else Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {folder} does not exist; run "
            "`apt-get install dataset-fashion-mnist`, or pass path= a folder holding the "
            "MNIST-format files."
        )
    return load_mnist_format(
        folder, normalize=normalize, class_names=FASHION_MNIST_CLASSES, name="fashion_mnist"
    )
