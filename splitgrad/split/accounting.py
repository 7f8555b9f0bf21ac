"""Accounting: what crossed each boundary (bytes and messages, by kind) and each place's busy time.

Every way records each message it sends between places here, so `fit` can return measured
figures next to the way's textbook formula (`Way.textbook_bytes`).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

KINDS = ("weights", "gradients", "activations", "labels", "state", "counts", "keys", "trajectories")


def nbytes(payload) -> int:
    """Bytes of the arrays in a payload (an array, a number, or lists/tuples/dicts of them)."""
    if payload is None:
        return 0
    if isinstance(payload, np.ndarray):
        return int(payload.nbytes)
    if isinstance(payload, (int, float, np.number, bool)):
        return 8
    if isinstance(payload, dict):
        return sum(nbytes(v) for v in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(nbytes(v) for v in payload)
    if isinstance(payload, (str, bytes)):
        return len(payload)
    return 0


class Traffic:
    """Measured traffic of one run: bytes/messages per kind and per boundary, busy time per place.

    Idle time of a place = wall time of the run − its busy time.
    """

    def __init__(self, way: str, keep_payloads: bool = False):
        self.way = way
        self.keep_payloads = keep_payloads
        self.bytes = defaultdict(int)
        self.messages = defaultdict(int)
        self.by_boundary = defaultdict(int)
        self.busy_s = defaultdict(float)
        self.payloads = []  # (kind, src, dst, payload) when keep_payloads, for inspection in tests
        self.extra = {}
        self.textbook = None
        self._t0 = time.perf_counter()
        self.wall_s = 0.0

    def record(self, kind: str, src: str, dst: str, payload=None, size=None, messages: int = 1):
        """One message (or `messages` equal ones) of `kind` from place `src` to place `dst`."""
        if kind not in KINDS:
            raise ValueError(f"Traffic.record: unknown kind {kind!r}; expected one of {KINDS}")
        size = nbytes(payload) if size is None else int(size)
        self.bytes[kind] += size
        self.messages[kind] += messages
        self.by_boundary[f"{src}->{dst}"] += size
        if self.keep_payloads and payload is not None:
            self.payloads.append((kind, src, dst, payload))

    def busy(self, place: str, seconds: float):
        self.busy_s[place] += float(seconds)

    def stop(self):
        self.wall_s = time.perf_counter() - self._t0

    @property
    def total_bytes(self) -> int:
        return int(sum(self.bytes.values()))

    def report(self) -> dict:
        """A JSON-friendly summary (what `history.traffic` holds)."""
        wall = self.wall_s or (time.perf_counter() - self._t0)
        return {
            "way": self.way,
            "total_bytes": self.total_bytes,
            "bytes": dict(self.bytes),
            "messages": dict(self.messages),
            "by_boundary": dict(self.by_boundary),
            "busy_s": dict(self.busy_s),
            "idle_s": {p: max(0.0, wall - b) for p, b in self.busy_s.items()},
            "wall_s": wall,
            "textbook_bytes": self.textbook,
            **self.extra,
        }

    def summary(self) -> str:
        return format_report(self.report())


def format_report(r: dict) -> str:
    """One line for a `Traffic.report()` dict (what the CLI prints after a split run)."""
    kinds = ", ".join(f"{k} {v:,} B / {r['messages'][k]} msg" for k, v in r["bytes"].items())
    book = r.get("textbook_bytes")
    book = "" if book is None else f" (textbook {int(book):,} B)"
    busy = sum(r["busy_s"].values())
    line = (
        f"{r['way']}: {r['total_bytes']:,} B crossed{book}; {kinds or 'nothing'}; "
        f"wall {r['wall_s']:.2f} s, places busy {busy:.2f} s in all"
    )
    if "epsilon" in r:  # DP-SGD: the privacy spent (privacy.py)
        line += (
            f"; privacy spent ε = {r['epsilon']:.3g} at δ = {r['delta']:g} (σ "
            f"{r['noise_multiplier']:g}, q {r['sample_rate']:.3g}, {r['steps']} steps)"
        )
    if "user_epsilon" in r:  # DP-FedAvg: user-level privacy (user_dp.py)
        line += f"; user-level privacy ε = {r['user_epsilon']:.3g} at δ = {r['user_delta']:g}"
    for event in r.get("elastic", []):  # places that could not come back, or were replaced
        line += f"; place {event.get('place')} {event.get('event')}"
    for event in r.get("recoveries", []):  # places that died and were brought back
        unit = "round" if "round" in event else "step"
        line += f"; place(s) {event['places']} died at {unit} {event[unit]} and were restored"
    return line
