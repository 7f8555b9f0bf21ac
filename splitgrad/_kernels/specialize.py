"""Compiled kernels with some integer arguments as compile-time constants (numba literals).

A kernel whose loops run over a kernel's few taps or channels (3 × 3, 24 channels) compiles
to loops with short, unknown trip counts; given those counts as constants, LLVM unrolls them
(2-3x faster on the project's machine: conv_pool_jit's backward, image_jit's col2im_stride1).
It does not always pay: the same for conv_pool_jit's forward made it slower, so measure.
Each combination of argument types and constant values compiles once per machine (numba
caches it on disk with the kernel's module) and once per process is looked up here. numba is
imported on first use, as everywhere (`compiled.py`): `import splitgrad` stays fast.
"""

from __future__ import annotations

_versions = {}


def version(kernel, args, constant):
    """`kernel` (a numba dispatcher) compiled for `args`, with the ints at the positions in
    `constant` as compile-time constants. Call it with the same args."""
    import numba
    from numba.core import types

    key = (kernel, tuple(a if i in constant else numba.typeof(a) for i, a in enumerate(args)))
    entry = _versions.get(key)
    if entry is None:
        sig = tuple(
            types.literal(a) if i in constant else numba.typeof(a) for i, a in enumerate(args)
        )
        entry = _versions[key] = kernel.compile(sig)
    return entry
