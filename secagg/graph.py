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
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import sha256

__all__ = [
    "LABEL_GRAPH_V2",
    "LABEL_KEY_TREE",
    "Ring",
    "bitmap_mask",
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
    ids = np.asarray(cohort, dtype=np.int64)
    want = np.fromiter(members, dtype=np.int64)
    at = np.searchsorted(ids, want)
    if want.size and (int(at.max()) >= ids.size or not np.array_equal(ids[at], want)):
        raise ValueError("a member is not in the cohort")
    bits = np.zeros(ids.size, dtype=np.uint8)
    bits[at] = 1
    return np.packbits(bits, bitorder="little").tobytes()


def bitmap_mask(n: int, bitmap: bytes) -> npt.NDArray[np.bool_]:
    """The bitmap over a cohort of ``n`` as ``n`` booleans; raises ``ValueError`` on a bitmap
    of the wrong size or with bits set past the cohort."""
    if len(bitmap) != (n + 7) // 8:
        raise ValueError(f"a bitmap over {n} members is {(n + 7) // 8} bytes")
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError("bitmap has bits set past the cohort")
    return bits[:n].astype(np.bool_)


def bitmap_members(cohort: Sequence[int], bitmap: bytes) -> list[int]:
    """The sorted ids whose bit is set; raises ``ValueError`` as :func:`bitmap_mask` does."""
    mask = bitmap_mask(len(cohort), bitmap)
    return [int(cohort[i]) for i in np.flatnonzero(mask).tolist()]


def key_leaf(sender: int, c_pk: bytes, s_pk: bytes, signature: bytes) -> bytes:
    """A U1 key-tree leaf: the whole signed advertisement."""
    return _U32.pack(sender) + c_pk + s_pk + signature


def graph_seed(config_digest: bytes, u1_bitmap: bytes, key_root: bytes) -> bytes:
    """Seed of the graph: the config, who advertised, and the root of their signed keys."""
    return sha256(LABEL_GRAPH_V2, config_digest, _U32.pack(len(u1_bitmap)), u1_bitmap, key_root)


def _ring_keys(n: int, seed: bytes) -> npt.NDArray[np.uint64]:
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype=">u8").astype(np.uint64)


def _sorted_ids(ids: Iterable[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The distinct ids in increasing order (a sorted cohort is only checked, in O(n))."""
    arr = np.asarray(ids, dtype=np.int64) if isinstance(ids, np.ndarray) else None
    if arr is None:
        arr = np.fromiter(ids, dtype=np.int64)
    if arr.size > 1 and not bool(np.all(arr[1:] > arr[:-1])):
        arr = np.unique(arr)
    return arr


def ring_order(ids: Iterable[int], seed: bytes) -> list[int]:
    """The ids (sorted first) in their ring order: by pseudorandom 64-bit keys, one per id in
    id order, from AES-256-CTR(seed); ties (probability below n^2 / 2^65) by id."""
    srt = _sorted_ids(ids)
    order = np.argsort(_ring_keys(srt.size, seed), kind="stable")
    return [int(u) for u in srt[order].tolist()]


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
    """One round's ring over the cohort ``ids``: the order once (AES-CTR and a sort, in C:
    about 10 ms at n = 10^5), then any id's neighbours among ``present`` (U1; ids or a boolean
    mask over the sorted cohort; default: everyone) in O(k)."""

    __slots__ = ("_half", "_ids", "_mask", "_order", "_pos", "complete")

    def __init__(
        self,
        ids: Iterable[int] | npt.NDArray[np.int64],
        k: int,
        seed: bytes,
        present: Iterable[int] | npt.NDArray[np.bool_] | None = None,
    ) -> None:
        self._ids = _sorted_ids(ids)
        n = self._ids.size
        self._order = np.argsort(_ring_keys(n, seed), kind="stable")  # ties by id
        self._pos = np.empty(n, dtype=np.int64)
        self._pos[self._order] = np.arange(n)
        if present is None:
            self._mask = np.ones(n, dtype=np.bool_)
        elif isinstance(present, np.ndarray) and present.dtype == np.bool_:
            if present.shape != (n,):
                raise ValueError("the presence mask must cover the ring")
            self._mask = present
        else:
            want = np.fromiter(present, dtype=np.int64)
            at = self._index(want)
            self._mask = np.zeros(n, dtype=np.bool_)
            self._mask[at] = True
        self.complete = k >= n - 1
        self._half = k // 2

    def _index(self, want: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        at = np.searchsorted(self._ids, want)
        if want.size and (
            int(at.max()) >= self._ids.size or not np.array_equal(self._ids[at], want)
        ):
            raise ValueError("present ids must lie in the ring")
        return at

    @property
    def present(self) -> frozenset[int]:
        """The present ids (O(n): for tests and the server, not a client's hot path)."""
        return frozenset(int(u) for u in self._ids[self._mask].tolist())

    @property
    def order(self) -> list[int]:
        """Every id in ring order."""
        return [int(u) for u in self._ids[self._order].tolist()]

    def neighbours(self, u: int) -> frozenset[int]:
        """``u``'s neighbours that are present (``u`` itself need not be)."""
        i = int(self._index(np.array([u], dtype=np.int64))[0])
        n = self._ids.size
        if self.complete:
            others = np.flatnonzero(self._mask)
            return frozenset(int(v) for v in self._ids[others[others != i]].tolist())
        offs = np.concatenate((np.arange(-self._half, 0), np.arange(1, self._half + 1)))
        near = self._order[(self._pos[i] + offs) % n]
        near = near[self._mask[near]]
        return frozenset(int(v) for v in self._ids[near].tolist())
