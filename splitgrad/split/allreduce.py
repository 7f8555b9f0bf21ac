"""The one all-reduce of splitgrad: every worker ends with Σ_r vec_r, summed in rank order.

Data parallel all-reduces gradients, local SGD and DiLoCo weights; both use this module. It is
a reduce-scatter followed by an all-gather, each place fetching its chunks straight from its
peers' outputs (Ray objects; inline, plain arrays), the driver only handing out references:

    1. a producing op (the way's own: "compute my gradient", "load my weights") leaves the
       vector in `slot.vec` and calls `send`: it returns chunk c of the vector for each peer c.
    2. `reduce` (a place op): rank r fetches chunk r from every peer and sums them in rank
       order; it now owns the reduced chunk r, an output that every peer fetches.
    3. an applying op (the way's own: "take the optimizer step", "set the average") calls
       `assemble`, which puts the peers' reduced chunks and its own together.

Every worker sends (N−1) chunks in step 1 and its reduced chunk to N−1 peers in step 2: the
same 2(N−1)/N·P values and 2(N−1) messages per worker as a ring all-reduce (Patarasuk & Yuan
2009; Horovod), in 2 rounds of latency instead of 2(N−1). With two workers a plain exchange
moves exactly as much (each sends its whole vector, P = 2(N−1)/N·P values) and needs no step 2:
each sums both in rank order at step 3. Every element is summed once, in rank order, by one
owner, so the replicas stay bitwise equal. The driver records what each op reports it sent when
the call has completed everywhere, so a call cut short by a failure and redone counts once.
"""

from __future__ import annotations

import time

import numpy as np

from .replicas import chunk_bounds


def ring_bytes(n_params: int, n: int, itemsize: int) -> int:
    """Textbook total over all workers for one all-reduce: N · 2(N−1)/N · P = 2(N−1)·P values."""
    return 2 * (n - 1) * n_params * itemsize


# ----- place side ------------------------------------------------------------------------------
def send(slot, job) -> tuple[list, list]:
    """(outputs, [(peer, bytes)]) of a producing op: the pieces of `slot.vec` for the peers.

    `job` holds rank, n and tag (which all-reduce this is). With N ≤ 2 the slot keeps its vector
    for `assemble`; with N > 2 chunk c goes to rank c.
    """
    vec, n, rank = slot.vec, job["n"], job["rank"]
    if n <= 2:
        slot.state["reduced"] = (job["tag"], None)  # summed by `assemble` at the next call
        outs = [vec.copy()] if n == 2 else []
        return outs, [(1 - rank, vec.nbytes)] if n == 2 else []
    outs, sent = [], []
    for dst in range(n):
        if dst != rank:
            lo, hi = chunk_bounds(vec.size, n, dst)
            outs.append(vec[lo:hi].copy())
            sent.append((dst, outs[-1].nbytes))
    return outs, sent


def reduce(host, jobs, *chunks):
    """Place op, step 2: per job, sum chunk `rank` over all workers (rank order) and output it
    for the peers. A job names its received chunks as `parts`: [(src rank, position)]."""
    heads, outs = [], []
    for job in jobs:
        start = time.perf_counter()
        slot = host.slots[job["key"]]
        n, rank = job["n"], job["rank"]
        mine = {src: chunks[pos] for src, pos in job["parts"]}
        lo, hi = chunk_bounds(slot.vec.size, n, rank)
        mine[rank] = slot.vec[lo:hi]
        total = mine[0].copy()
        for src in range(1, n):
            total += mine[src]
        slot.state["reduced"] = (job["tag"], total)
        outs.append(total.copy())
        heads.append(
            {
                "sent": [(dst, total.nbytes) for dst in range(n) if dst != rank],
                "busy": time.perf_counter() - start,
            }
        )
    return heads, outs


def assemble(slot, job, chunks) -> np.ndarray:
    """Step 3: the all-reduced vector of the all-reduce `job["pending"]` = (tag, parts), from
    the peers' pieces (`parts`: [(src rank, position in chunks)]) and this slot's own."""
    tag, parts = job["pending"]
    n, rank = job["n"], job["rank"]
    kept = slot.state.pop("reduced", None)
    if kept is None or kept[0] != tag:
        # An update from a half-finished all-reduce would silently corrupt the replica.
        raise RuntimeError(f"all-reduce {tag} incomplete on worker {rank}")
    if n <= 2:
        vecs = {src: chunks[pos] for src, pos in parts}
        vecs[rank] = slot.vec
        full = vecs[0].copy()
        for src in range(1, n):  # rank order on every replica: bitwise equal sums
            full += vecs[src]
        return full
    full = np.empty(slot.vec.size, slot.vec.dtype)
    for src, pos in parts:
        lo, hi = chunk_bounds(full.size, n, src)
        full[lo:hi] = chunks[pos]
    lo, hi = chunk_bounds(full.size, n, rank)
    full[lo:hi] = kept[1]
    return full


# ----- driver side -----------------------------------------------------------------------------
class AllReduce:
    """The driver's half: routes chunk references between the places' calls and accounts them.

    `members` is {place index: [(rank, slot key)]} in rank order; `kind` is what the vectors
    are ("gradients", "weights") for the traffic record. After `run`, `pending` holds the
    finished all-reduce (tag and the reduced pieces' references) until an applying op uses it.
    """

    def __init__(self, places, members: dict, n: int, kind: str):
        self.places, self.members, self.n, self.kind = places, members, n, kind
        self.pending = None

    def outputs_per_worker(self) -> int:
        """How many outputs a producing op makes per worker (for `submit_multi`)."""
        return self.n - 1

    def parts(self, rank: int, chunks: list):
        """The `pending` job entry for worker `rank`: (tag, parts), appending the references of
        its peers' pieces to `chunks` (the call's positional arguments); None if nothing is
        pending."""
        if self.pending is None:
            return None
        tag, refs = self.pending
        parts = []
        for src in range(self.n):
            if src != rank:
                parts.append((src, len(chunks)))
                chunks.append(refs[src])
        return tag, parts

    def run(self, traffic, produced: dict, tag) -> dict:
        """Finish the all-reduce started by the producing calls `produced` ({place: Pending}):
        submit the reduce calls, wait for all, record what crossed. Returns the producing
        calls' per-worker results {rank: head}."""
        reduces = self._submit_reduce(produced, tag) if self.n > 2 else {}
        hosts = list(self.members)
        heads = self.places.gather([produced[h] for h in hosts] + [reduces[h] for h in reduces])
        out = {}
        for i, h in enumerate(hosts):
            for j, (rank, _) in enumerate(self.members[h]):
                self.record(traffic, rank, heads[i][j])
                if reduces:
                    self.record(traffic, rank, heads[len(hosts) + i][j])
                out[rank] = heads[i][j]
        pieces = reduces or produced  # N ≤ 2: the peers' whole vectors
        self.pending = (
            tag,
            {rank: ref for h in hosts for (rank, _), ref in zip(self.members[h], pieces[h].outs)},
        )
        return out

    def _submit_reduce(self, produced, tag):
        n, sent = self.n, {}  # (src, dst) -> the chunk of src's vector that dst reduces
        for h, group in self.members.items():
            outs = iter(produced[h].outs)
            for rank, _ in group:
                for dst in range(n):
                    if dst != rank:
                        sent[rank, dst] = next(outs)
        reduces = {}
        for h, group in self.members.items():
            chunks, jobs = [], []
            for rank, key in group:
                parts = []
                for src in range(n):
                    if src != rank:
                        parts.append((src, len(chunks)))
                        chunks.append(sent[src, rank])
                jobs.append({"key": key, "rank": rank, "n": n, "tag": tag, "parts": parts})
            reduces[h] = self.places.submit_multi(h, reduce, len(group), jobs, *chunks)
        return reduces

    def record(self, traffic, rank, head):
        """Busy time and every piece worker `rank` sent (measured bytes, one message each)."""
        if traffic is None:  # a flush outside fit: nothing to account to
            return
        traffic.busy(f"worker{rank}", head["busy"])
        for dst, size in head["sent"]:
            traffic.record(self.kind, f"worker{rank}", f"worker{dst}", size=int(size))
