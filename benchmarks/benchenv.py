"""The process settings every benchmark child runs under, and what it reports about them.

Two things decide figures on this machine more than any code change (docs/benchmarks.md):

* glibc's malloc. In a fresh process it hands big freed blocks back to the kernel and faults
  them in again on every step; a training program that has loaded its data set has already
  raised glibc's dynamic mmap threshold and does not. `MALLOC_TUNED` puts every child of every
  framework in that state from its first step (`--malloc system` leaves the environment's).
* OpenBLAS's kernel. `--blas-kernel auto` unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the
  children, as a user's machine has them (OpenBLAS then detects the CPU: SkylakeX here);
  `--blas-kernel Haswell` (any OpenBLAS core name) forces that kernel; `env` keeps the
  environment's settings. PyTorch brings its own GEMM (MKL) and ignores both.

`child_env` builds a child's environment; `runtime()` is called IN the child, after the
framework's import, and says which BLAS kernel and malloc setting actually ran (threadpoolctl)
and how busy the machine was (the 1-minute load average; 2 cores here).
"""

from __future__ import annotations

import os

MALLOC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def add_options(parser):
    """--blas-kernel and --malloc, shared by compare.py and time_to_accuracy.py."""
    parser.add_argument(
        "--blas-kernel",
        default="auto",
        metavar="auto|env|NAME",
        help="auto: unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the children (a user's "
        "machine); env: keep the environment's; NAME (e.g. Haswell): OPENBLAS_CORETYPE=NAME",
    )
    parser.add_argument(
        "--malloc",
        choices=["tuned", "system"],
        default="tuned",
        help=f"tuned: GLIBC_TUNABLES={MALLOC_TUNED} for every child (the state a training "
        "program is in); system: the environment's malloc settings",
    )


def child_env(blas_kernel="auto", malloc="tuned", pythonpath=None) -> dict:
    """The environment of one benchmark child: this one, with the kernel and malloc applied."""
    env = dict(os.environ)
    if blas_kernel != "env":
        for name in BLAS_VARIABLES:
            env.pop(name, None)
        if blas_kernel != "auto":
            env["OPENBLAS_CORETYPE"] = blas_kernel
    if malloc == "tuned":
        env["GLIBC_TUNABLES"] = MALLOC_TUNED
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def runtime() -> dict:
    """Called in the child: the BLAS libraries loaded (kernel, threads), torch's own GEMM if
    torch is loaded, and the malloc setting this process started with."""
    import sys

    from threadpoolctl import threadpool_info

    blas = []  # NumPy's OpenBLAS (and SciPy's, when loaded) once per kind
    for i in threadpool_info():
        name = f"{i['internal_api']} {i.get('architecture') or '?'} x{i['num_threads']}"
        if i.get("user_api") == "blas" and name not in blas:
            blas.append(name)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        gemm = "mkl" if torch.backends.mkl.is_available() else "own"
        blas.append(f"torch {gemm} {torch.backends.cpu.get_cpu_capability()}")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return {
        "blas": ", ".join(blas) or "none",
        "malloc": "tuned" if tunables == MALLOC_TUNED else (tunables or "system"),
        "coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"),
        "load_1min": os.getloadavg()[0],  # the machine may be shared: say how busy it was
    }
