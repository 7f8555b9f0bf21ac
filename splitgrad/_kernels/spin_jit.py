"""Waiting for another thread by spinning instead of sleeping, compiled (numba) so that the
wait holds no GIL: the hand-off between splitgrad's own threads (thread_team.py).

A thread blocked on a lock sleeps, and waking a sleeping thread costs the operating system
30-60 µs on this project's machines (a virtual machine's idle CPU must be woken by the
hypervisor), sometimes several hundred. A convolutional training step hands work to its
helper thread about ten times, so sleeping cost about a tenth of the step. A spinning thread
answers within microseconds: `wait_until` polls one flag with the CPU's pause hint between
reads, for a bounded number of rounds, then gives up, and the caller falls back to its lock.
OpenBLAS's own threads wait the same way.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# x86's spin-wait hint. LLVM treats the intrinsic as touching memory, so the flag is read again
# on every round. (Elsewhere `X86` is False and thread_team.py keeps to its locks.)
X86 = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def _pause(typingctx):
    """One `pause` instruction."""

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic(
            "llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), [])
        )
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@numba.njit(cache=True, nogil=True)
def wait_until(flags, index, value, rounds):
    """True once flags[index] == value, False if it is still not after `rounds` polls."""
    for _ in range(rounds):
        if flags[index] == value:
            return True
        _pause()
    return flags[index] == value
