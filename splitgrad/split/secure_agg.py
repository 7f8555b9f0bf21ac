"""Secure aggregation (Bonawitz et al. 2017): the server learns the SUM of the clients' updates
and nothing about any one of them, even when clients drop out mid-round.

Updates are encoded as integers mod 2⁶⁴ (fixed point, `FRACTION_BITS` bits after the point), so
masks cancel exactly. One round with the clients U:

  1. keys      every client u makes two Diffie-Hellman key pairs (c_u for encrypting shares,
               s_u for masks) and sends the public halves to the server, which relays them.
  2. shares    u splits its mask secret s_u and a fresh self-mask seed b_u into t-of-|U| Shamir
               shares, one per other client (sent through the server, encrypted under the
               pairwise c-keys: the server relays bytes it cannot read).
  3. masked    u sends y_u = x_u + PRG(b_u) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv), where
               s_uv = DH(s_u, s_v) is known to u and v only. Every pairwise mask appears once
               with + and once with −.
  4. unmask    the server tells the survivors who sent y; each survivor returns, for every
               other client, EITHER its share of b_v (v sent y: its self-mask must come off) OR
               its share of s_v (v dropped: the masks v shares with survivors must come off),
               never both. With ≥ t answers the server rebuilds those secrets, removes the masks
               and decodes Σ x_u over the clients that sent y.

A client may drop after 1, 2 or 3; the sum is exact as long as ≥ t clients answer in 4. The
DH group is RFC 3526's 1536-bit MODP group and the PRG is NumPy's PCG64 seeded with SHA-256 of
the shared secret: a faithful simulation of the protocol's messages and arithmetic, not a
hardened cryptographic implementation (no authenticated encryption of the relayed shares).
"""

from __future__ import annotations

import hashlib
import secrets

import numpy as np

FRACTION_BITS = 32  # fixed point: x ↦ round(x·2³²) mod 2⁶⁴; |Σx| must stay below 2³¹
# RFC 3526, group 5 (1536-bit MODP), generator 2.
PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA237327FFFFFFFFFFFFFFFF",
    16,
)
GENERATOR = 2
FIELD = 2**127 - 1  # a Mersenne prime: the field of the Shamir shares (secrets < 2¹²⁶)
KEY_BYTES = 192  # a public key in the 1536-bit group


def encode(x: np.ndarray) -> np.ndarray:
    """Fixed-point integers mod 2⁶⁴ (as uint64) of a float vector."""
    return np.round(np.asarray(x, np.float64) * 2.0**FRACTION_BITS).astype(np.int64).view(np.uint64)


def decode(z: np.ndarray) -> np.ndarray:
    return z.view(np.int64).astype(np.float64) / 2.0**FRACTION_BITS


def _prg(seed: int, size: int) -> np.ndarray:
    """size pseudo-random words mod 2⁶⁴ from a secret integer."""
    digest = hashlib.sha256(seed.to_bytes(256, "big")).digest()
    return np.random.default_rng(int.from_bytes(digest, "big")).integers(
        0, 2**64, size=size, dtype=np.uint64
    )


def _share(secret: int, holders: list, threshold: int, rng) -> dict:
    """Shamir shares {holder: f(holder + 1)} of `secret`, for a random polynomial of degree
    threshold − 1 over the field."""
    coeffs = [secret] + [
        int(rng.integers(0, 2**62)) * 2**64 + int(rng.integers(0, 2**62))
        for _ in range(threshold - 1)
    ]
    return {h: sum(c * pow(h + 1, i, FIELD) for i, c in enumerate(coeffs)) % FIELD for h in holders}


def _rebuild(shares: dict) -> int:
    """The secret f(0) from {holder: f(holder + 1)} (Lagrange interpolation over the field)."""
    total = 0
    points = [h + 1 for h in shares]
    for h, value in shares.items():
        x = h + 1
        num = den = 1
        for other in points:
            if other != x:
                num = num * (-other) % FIELD
                den = den * (x - other) % FIELD
        total = (total + value * num * pow(den, FIELD - 2, FIELD)) % FIELD
    return total


class SecureAggregation:
    """One round of the protocol for the clients `clients` (ids) with vectors of `size`.

    `run(inputs, drop_after)` returns (Σ of the inputs of the clients that sent masked vectors,
    the set of those clients, the messages). `drop_after` maps a phase name ("keys", "shares",
    "masked") to the clients that vanish right after it. Every message the server receives is
    kept in `messages` as (phase, sender, payload) for inspection.
    """

    def __init__(self, clients, size: int, threshold: int | None = None, seed=None):
        self.clients, self.size = sorted(int(c) for c in clients), int(size)
        n = len(self.clients)
        # Default t: a majority (Bonawitz et al. use about 2/3); at least 2 so that no single
        # answer can unmask anything.
        self.threshold = threshold or max(2, n // 2 + 1) if n > 1 else 1
        self.rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
        self.messages = []

    def _secret(self) -> int:
        return int(self.rng.integers(1, 2**62)) * 2**62 + int(self.rng.integers(1, 2**62))

    def run(self, inputs: dict, drop_after=None):
        drop = {phase: set(ids) for phase, ids in (drop_after or {}).items()}
        alive = list(self.clients)
        # 1. keys
        mask_key = {u: self._secret() for u in alive}
        public = {u: pow(GENERATOR, mask_key[u], PRIME) for u in alive}
        for u in alive:
            self.messages.append(("keys", u, public[u]))
        alive = [u for u in alive if u not in drop.get("keys", ())]
        if len(alive) < self.threshold:
            raise RuntimeError(
                f"secure aggregation: {len(alive)} clients left after the key "
                f"exchange, fewer than the threshold {self.threshold}"
            )
        # 2. shares (each to every other client still in the round, relayed by the server)
        self_seed = {u: self._secret() for u in alive}
        held = {v: {} for v in alive}  # held[v][(kind, u)] = v's share of u's secret
        for u in alive:
            others = [v for v in alive if v != u]
            for kind, secret in (("mask", mask_key[u]), ("self", self_seed[u])):
                for v, share in _share(secret, [*others, u], self.threshold, self.rng).items():
                    held[v][(kind, u)] = share
                    if v != u:
                        self.messages.append(("shares", u, ("encrypted", 2 * 16)))
        alive = [u for u in alive if u not in drop.get("shares", ())]
        # 3. masked inputs
        received = {}
        for u in alive:
            y = encode(inputs[u]) + _prg(self_seed[u], self.size)
            for v in self.clients:
                if v == u or v not in public or v not in self_seed:
                    continue  # v left before the shares: u never masked with it
                pair = _prg(pow(public[v], mask_key[u], PRIME), self.size)
                y = y + pair if u < v else y - pair
            received[u] = y
            self.messages.append(("masked", u, y))
        survivors = [u for u in alive if u not in drop.get("masked", ())]
        if len(survivors) < self.threshold:
            raise RuntimeError(
                f"secure aggregation: {len(survivors)} clients answered the "
                f"unmasking, fewer than the threshold {self.threshold}"
            )
        # 4. unmask: per client, the share of its self seed if it sent y, else of its mask key
        total = np.zeros(self.size, np.uint64)
        for y in received.values():
            total += y
        for u in self_seed:
            kind = "self" if u in received else "mask"
            shares = {v: held[v][(kind, u)] for v in survivors if (kind, u) in held[v]}
            for v in survivors:
                self.messages.append(("unmask", v, ("share", kind, u)))
            secret = _rebuild(dict(list(shares.items())[: self.threshold]))
            if kind == "self":
                total -= _prg(secret, self.size)
            else:  # u dropped after sharing: take off the masks it shares with the senders
                for v in received:
                    pair = _prg(pow(public[v], secret, PRIME), self.size)
                    # v added +pair for u > v, −pair for u < v; undo that.
                    total = total - pair if v < u else total + pair
        return decode(total), set(received), self.messages

    def bytes_by_phase(self) -> dict:
        """Bytes the server received per phase (keys, shares, masked vectors, unmask shares)."""
        out = {}
        for phase, _, payload in self.messages:
            if phase == "keys":
                size = KEY_BYTES
            elif phase == "masked":
                size = payload.nbytes
            else:
                size = 32
            out[phase] = out.get(phase, 0) + size
        return out
