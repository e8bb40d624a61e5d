"""The SecAgg+ neighbour graph of docs/protocol.md §4.1, derived by every party from public data.

The seed is ``SHA-256("secagg/v1/graph" || config_digest || sorted (id, c_pk, s_pk) of U1)``; it
drives a Fisher-Yates shuffle of U1, the shuffled ids are placed on a ring and each is joined to
the ``k/2`` nearest on each side. ``k >= |U1| - 1`` gives the complete graph (plain SecAgg). The
server cannot choose anyone's neighbours (docs/threats.md SA-16): a client recomputes the graph and
checks the server's lists against it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import LABEL_GRAPH, sha256

__all__ = ["graph_seed", "neighbour_graph", "neighbours_of", "ring_order"]

_U32 = struct.Struct(">I")


def graph_seed(config_digest: bytes, entries: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """Seed of the graph: binds the config and every advertised key of U1, in id order."""
    parts = [LABEL_GRAPH, config_digest]
    for uid, c_pk, s_pk in sorted(entries):
        parts += [_U32.pack(uid), c_pk, s_pk]
    return sha256(*parts)


def _shuffle(ids: list[int], seed: bytes) -> list[int]:
    # Fisher-Yates with unbiased draws (rejection sampling) from AES-256-CTR(seed).
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    out = list(ids)
    for i in range(len(out) - 1, 0, -1):
        bound = i + 1
        limit = (1 << 32) - ((1 << 32) % bound)
        while True:
            r = int.from_bytes(enc.update(bytes(4)), "big")
            if r < limit:
                break
        j = r % bound
        out[i], out[j] = out[j], out[i]
    return out


def ring_order(ids: Iterable[int], seed: bytes) -> list[int]:
    """The ids of U1 in their (seeded, uniformly random) ring order."""
    return _shuffle(sorted(set(ids)), seed)


def neighbour_graph(ids: Iterable[int], k: int, seed: bytes) -> Mapping[int, frozenset[int]]:
    """Map each id of U1 to its neighbours (never itself)."""
    order = ring_order(ids, seed)
    m = len(order)
    if k >= m - 1:
        everyone = frozenset(order)
        return {u: everyone - {u} for u in order}
    half = k // 2
    graph: dict[int, frozenset[int]] = {}
    for pos, u in enumerate(order):
        graph[u] = frozenset(order[(pos + off) % m] for off in range(-half, half + 1) if off)
    return graph


def neighbours_of(ids: Iterable[int], k: int, seed: bytes, u: int) -> frozenset[int]:
    """``neighbour_graph(ids, k, seed)[u]`` without building every other client's set."""
    order = ring_order(ids, seed)
    m = len(order)
    if k >= m - 1:
        return frozenset(order) - {u}
    pos = order.index(u)
    half = k // 2
    return frozenset(order[(pos + off) % m] for off in range(-half, half + 1) if off)
