"""Ring all-reduce between logical workers, passing chunks (Ray ObjectRefs) around a ring.

Reduce-scatter then all-gather, each N−1 rounds in which worker r sends one chunk (≈P/N) to
worker r+1: every worker sends 2(N−1)/N·P values (Patarasuk & Yuan 2009; Horovod). The chunks
travel place to place; the driver only hands out references, never the arrays.
"""

from __future__ import annotations


def submit_ring(places, workers):
    """Submit a full ring all-reduce of every worker's `vec`.

    `workers` is a list of (host, slot key). Returns (pendings, names, edges): the sends and
    receives to gather, the place names for their busy time, and for each receive its
    (index into pendings, src rank, dst rank).
    """
    n = len(workers)
    pendings, names, edges = [], [], []
    for phase in ("rs", "ag"):
        for k in range(n - 1):
            sends = []
            for rank, (host, key) in enumerate(workers):
                sends.append(places.submit(host, "ring_send", key, phase, k, rank, n))
                names.append(f"worker{rank}")
            pendings.extend(sends)
            for rank, (host, key) in enumerate(workers):
                src = (rank - 1) % n
                pendings.append(places.submit(host, "ring_recv", key, phase, k, rank, n,
                                              sends[src].value))
                names.append(f"worker{rank}")
                edges.append((len(pendings) - 1, src, rank))
    return pendings, names, edges


def record_ring(traffic, values, edges, kind):
    """Record each received chunk (its measured size) as one message of `kind`."""
    for i, src, dst in edges:
        traffic.record(kind, f"worker{src}", f"worker{dst}", size=values[i])


def expected_receives(n: int) -> int:
    return 2 * (n - 1)


def ring_bytes(n_params: int, n: int, itemsize: int) -> int:
    """Textbook total over all workers for one all-reduce: N · 2(N−1)/N · P = 2(N−1)·P values."""
    return 2 * (n - 1) * n_params * itemsize
