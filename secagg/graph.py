"""The SecAgg+ neighbour graph (docs/protocol.md §4.1, SPEC.md D14), derived by every party from
public data, and the bitmaps that carry the round's sets.

U1 (who advertised keys) travels as a bitmap over the cohort (the sorted ids of the registry:
``n`` bits), and its signed key entries are committed to by a Merkle root (:mod:`secagg.merkle`),
leaves in id order. The seed is ``SHA-256("secagg/v2/graph" || config_digest || U1 bitmap ||
key root)``: it depends on every honest client's fresh keys, so neither the server nor its
colluders can compute a graph before the round's keys exist, and grinding is confined to the
stage's window (the argument and its numbers: SPEC.md D14, ``secagg.params``).

The ring is laid over the whole cohort, not over U1: the ids are ordered by pseudorandom
64-bit keys drawn from AES-256-CTR(seed), and each is joined to the ``k/2`` nearest on each
side; a client's neighbours in the round are its ring neighbours that are in U1. Who is left
out of U1 therefore changes only the seed, never the shape the privacy bound is computed on
(``secagg.params``: a fixed population of ``n`` with adversarial dropouts). ``k >= n - 1``
gives the complete graph. A client needs the bitmap, the root and its neighbours' entries,
never the whole key list.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import sha256

__all__ = [
    "LABEL_GRAPH_V2",
    "LABEL_KEY_TREE",
    "Ring",
    "bitmap_members",
    "cohort_bitmap",
    "graph_seed",
    "key_leaf",
    "neighbour_graph",
    "neighbours_of",
    "ring_order",
]

LABEL_GRAPH_V2 = b"secagg/v2/graph"
LABEL_KEY_TREE = b"secagg/v2/key-tree"
_U32 = struct.Struct(">I")


def cohort_bitmap(cohort: Sequence[int], members: Iterable[int]) -> bytes:
    """``members`` (a subset of the sorted ``cohort``) as a bitmap: bit ``i`` (little-endian
    within each byte) is set iff ``cohort[i]`` is a member."""
    pos = {u: i for i, u in enumerate(cohort)}
    bits = np.zeros(len(cohort), dtype=np.uint8)
    for u in members:
        bits[pos[u]] = 1
    return np.packbits(bits, bitorder="little").tobytes()


def bitmap_members(cohort: Sequence[int], bitmap: bytes) -> list[int]:
    """The sorted ids whose bit is set; raises ``ValueError`` on a bitmap of the wrong size or
    with bits set past the cohort."""
    n = len(cohort)
    if len(bitmap) != (n + 7) // 8:
        raise ValueError(f"a bitmap over {n} members is {(n + 7) // 8} bytes")
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError("bitmap has bits set past the cohort")
    return [cohort[i] for i in np.flatnonzero(bits[:n]).tolist()]


def key_leaf(sender: int, c_pk: bytes, s_pk: bytes, signature: bytes) -> bytes:
    """A U1 key-tree leaf: the whole signed advertisement."""
    return _U32.pack(sender) + c_pk + s_pk + signature


def graph_seed(config_digest: bytes, u1_bitmap: bytes, key_root: bytes) -> bytes:
    """Seed of the graph: the config, who advertised, and the root of their signed keys."""
    return sha256(LABEL_GRAPH_V2, config_digest, _U32.pack(len(u1_bitmap)), u1_bitmap, key_root)


def ring_order(ids: Iterable[int], seed: bytes) -> list[int]:
    """The ids (sorted first) in their ring order: by pseudorandom 64-bit keys, one per id in
    id order, from AES-256-CTR(seed); ties (probability below n^2 / 2^65) by id."""
    srt = sorted(set(ids))
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    keys = np.frombuffer(enc.update(bytes(8 * len(srt))), dtype=">u8")
    order = np.lexsort((np.arange(len(srt)), keys))
    return [srt[i] for i in order.tolist()]


def neighbour_graph(
    ids: Iterable[int], k: int, seed: bytes, present: Iterable[int] | None = None
) -> Mapping[int, frozenset[int]]:
    """Map each id in ``present`` (default: every id) to its neighbours among ``present``
    on the ring over ``ids`` (never itself)."""
    ring = Ring(ids, k, seed, present)
    return {u: ring.neighbours(u) for u in ring.present}


def neighbours_of(
    ids: Iterable[int], k: int, seed: bytes, u: int, present: Iterable[int] | None = None
) -> frozenset[int]:
    """``neighbour_graph(ids, k, seed, present)[u]``."""
    return Ring(ids, k, seed, present).neighbours(u)


class Ring:
    """One round's ring over the cohort ``ids``: the order once, then any id's neighbours
    among ``present`` (U1; default: everyone) in O(k)."""

    __slots__ = ("_half", "_pos", "complete", "order", "present")

    def __init__(
        self, ids: Iterable[int], k: int, seed: bytes, present: Iterable[int] | None = None
    ) -> None:
        self.order = ring_order(ids, seed)
        self._pos = {u: i for i, u in enumerate(self.order)}
        self.present = frozenset(self.order if present is None else present)
        if not self.present <= self._pos.keys():
            raise ValueError("present ids must lie in the ring")
        self.complete = k >= len(self.order) - 1
        self._half = k // 2

    def neighbours(self, u: int) -> frozenset[int]:
        """``u``'s neighbours that are present (``u`` itself need not be)."""
        if self.complete:
            return self.present - {u}
        m, pos = len(self.order), self._pos[u]
        ring = (self.order[(pos + off) % m] for off in range(-self._half, self._half + 1) if off)
        return frozenset(v for v in ring if v in self.present)
