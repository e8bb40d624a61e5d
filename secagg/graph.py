"""The SecAgg+ neighbour graph (docs/protocol.md §4.1, SPEC.md D14), derived by every party from
public data, and the bitmaps that carry the round's sets.

U1 (who advertised keys) travels as a bitmap over the cohort (the sorted ids of the registry:
``n`` bits), and its signed key entries are committed to by a Merkle root (:mod:`secagg.merkle`),
leaves in id order. The seed is ``SHA-256("secagg/v2/graph" || config_digest || U1 bitmap ||
key root)``: it depends on every honest client's fresh keys, so neither the server nor its
colluders can compute a graph before the round's keys exist, and grinding is confined to the
stage's window (the argument and its numbers: SPEC.md D14, ``secagg.params``).

The ring is laid over the whole cohort, not over U1: the ids are put in a pseudorandom order
of the seed, and each is joined to the ``k/2`` nearest on each side; a client's neighbours in
the round are its ring neighbours that are in U1. Up to :data:`SORTED_RING_MAX` members the
order sorts 128-bit keys from AES-256-CTR(seed); above it, it is the swap-or-not permutation
of the seed (:mod:`secagg.shuffle`), which a client evaluates at its own position and the
``2k`` around it only, so its ring costs the same at n = 10^3 and 10^5. Who is left
out of U1 therefore changes only the seed, never the shape the privacy bound is computed on
(``secagg.params``: a fixed population of ``n`` with adversarial dropouts). ``k >= n - 1``
gives the complete graph. A client needs the bitmap, the root and its neighbours' entries,
never the whole key list.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import sha256
from secagg.shuffle import Shuffle, distinguishing_bound_log2, shuffle_rounds

__all__ = [
    "LABEL_GRAPH_V2",
    "LABEL_KEY_TREE",
    "SORTED_RING_MAX",
    "Cohort",
    "Ring",
    "bitmap_bit",
    "bitmap_count",
    "bitmap_mask",
    "bitmap_members",
    "check_bitmap",
    "cohort_bitmap",
    "graph_seed",
    "key_leaf",
    "neighbour_graph",
    "neighbours_of",
    "ring_model_gap_log2",
    "ring_order",
]

LABEL_GRAPH_V2 = b"secagg/v2/graph"
LABEL_KEY_TREE = b"secagg/v2/key-tree"
_U32 = struct.Struct(">I")
#: The largest cohort whose ring is the sort of ``n`` keys (at 1024: 16 KB of AES-CTR and a
#: sort, about 0.2 ms and 40 KB, cheaper than the shuffle's ~5 ms); above it, the swap-or-not
#: permutation (:mod:`secagg.shuffle`), so a client's ring work does not grow with ``n``.
SORTED_RING_MAX = 1024


class Cohort(Mapping[int, bytes]):
    """The registry as a round reads it: id -> Ed25519 public key, and the sorted ids that the
    round's bitmaps range over (SPEC.md D14). Immutable, so one copy can serve every client
    object in a process (a simulation of many clients holds one, not one each)."""

    __slots__ = ("_keys", "ids")

    def __init__(self, registry: Mapping[int, bytes]) -> None:
        self._keys: dict[int, bytes] = dict(registry)
        ids = np.array(sorted(self._keys), dtype=np.int64)
        ids.setflags(write=False)
        self.ids: npt.NDArray[np.int64] = ids

    @classmethod
    def of(cls, registry: Mapping[int, bytes]) -> Cohort:
        """``registry`` itself when it is already a :class:`Cohort`, else a copy of it."""
        return registry if isinstance(registry, Cohort) else cls(registry)

    def __getitem__(self, u: int) -> bytes:
        return self._keys[u]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, u: object) -> bool:
        return u in self._keys

    def index(self, u: int) -> int:
        """``u``'s position among the sorted ids (``u`` must be a member): O(log n)."""
        return int(np.searchsorted(self.ids, u))


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


def _sorted_order(n: int, seed: bytes) -> npt.NDArray[np.int64]:
    """Positions -> indices of the sorted ring: the indices ordered by 128-bit keys from
    AES-256-CTR(seed), one per index in id order (ties, probability below n^2 / 2^129, by id)."""
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    keys = np.frombuffer(enc.update(bytes(16 * n)), dtype=">u8").reshape(n, 2)
    order: npt.NDArray[np.int64] = np.lexsort((keys[:, 1], keys[:, 0])).astype(np.int64)
    return order


def ring_model_gap_log2(n: int, k: int) -> float:
    """``log2`` of how much more likely, for one seed, any of the events the ring's privacy
    bound unions over (one per client, one per pair of windows: :mod:`secagg.params`) is on
    this ring than on a uniformly random one (ideal AES). Sorted ring: the chance of a tie
    among the 128-bit keys, given none the order is uniform. Shuffled ring: each event looks at
    ``k + 1`` or fewer points, so the shuffle's ``(k + 1)``-query advantage per event."""
    if n < 2 or k >= n - 1:
        return -math.inf  # the complete graph has no order
    pairs = math.log2(n * (n - 1) / 2)
    if n <= SORTED_RING_MAX:
        return pairs - 128.0
    events = math.log2(n + n * (n - 1) / 2)
    return events + distinguishing_bound_log2(n, shuffle_rounds(n, k), min(k + 1, n))


def check_bitmap(n: int, bitmap: bytes) -> None:
    """Refuse (``ValueError``) a bitmap over ``n`` members of the wrong size or with bits set
    past the cohort: O(1), so a client can use the bitmap without unpacking it."""
    if len(bitmap) != (n + 7) // 8:
        raise ValueError(f"a bitmap over {n} members is {(n + 7) // 8} bytes")
    if n % 8 and bitmap[-1] >> (n % 8):
        raise ValueError("bitmap has bits set past the cohort")


def bitmap_bit(bitmap: bytes, i: int) -> bool:
    """Bit ``i`` of a (checked) bitmap."""
    return bool(bitmap[i >> 3] >> (i & 7) & 1)


def bitmap_count(bitmap: bytes, upto: int | None = None) -> int:
    """How many bits are set (among the first ``upto``): in C, 1/8 byte per member."""
    arr = np.frombuffer(bitmap, dtype=np.uint8)
    if upto is None:
        return int(np.unpackbits(arr).sum(dtype=np.int64))
    full, rest = divmod(upto, 8)
    count = int(np.unpackbits(arr[:full]).sum(dtype=np.int64))
    if rest:
        count += (int(arr[full]) & ((1 << rest) - 1)).bit_count()
    return count


def _sorted_ids(ids: Iterable[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The distinct ids in increasing order (a sorted cohort is only checked, in O(n))."""
    arr = np.asarray(ids, dtype=np.int64) if isinstance(ids, np.ndarray) else None
    if arr is None:
        arr = np.fromiter(ids, dtype=np.int64)
    if arr.size > 1 and not bool(np.all(arr[1:] > arr[:-1])):
        arr = np.unique(arr)
    return arr


def ring_order(ids: Iterable[int], seed: bytes, degree: int) -> list[int]:
    """The ids (sorted first) in the ring order of ``seed`` for a ring of ``degree``."""
    return Ring(ids, degree, seed).order


def neighbour_graph(
    ids: Iterable[int], k: int, seed: bytes, present: Iterable[int] | None = None
) -> Mapping[int, frozenset[int]]:
    """Map each id in ``present`` (default: every id) to its neighbours among ``present``
    on the ring over ``ids`` (never itself)."""
    return Ring(ids, k, seed, present).graph()


def neighbours_of(
    ids: Iterable[int], k: int, seed: bytes, u: int, present: Iterable[int] | None = None
) -> frozenset[int]:
    """``neighbour_graph(ids, k, seed, present)[u]``."""
    return Ring(ids, k, seed, present).neighbours(u)


class Ring:
    """One round's ring over the cohort ``ids`` (sorted; an int64 array is used as given, not
    copied): any id's neighbours among ``present`` (U1; a bitmap over the cohort, ids, or a
    boolean mask; default: everyone).

    Above :data:`SORTED_RING_MAX` members the order is the swap-or-not permutation of the
    seed (:mod:`secagg.shuffle`): ring position ``pi(i)`` for the ``i``-th id, so one id's
    neighbours cost one forward and ``2k`` inverse evaluations (positions up to ``k`` away, so
    its neighbours' neighbours come free) and O(k) memory, whatever ``n`` is. Up to that size
    the order is the sort of ``n`` pseudorandom 128-bit keys from AES-256-CTR(seed) (ties by
    id), cheaper there than the shuffle's rounds. :meth:`graph` evaluates the whole ring at
    once (the server's use)."""

    __slots__ = (
        "_at",
        "_bits",
        "_half",
        "_ids",
        "_order",
        "_pos",
        "_pos_of",
        "_shuffle",
        "complete",
    )

    def __init__(
        self,
        ids: Iterable[int] | npt.NDArray[np.int64],
        k: int,
        seed: bytes,
        present: bytes | Iterable[int] | npt.NDArray[np.bool_] | None = None,
    ) -> None:
        self._ids = _sorted_ids(ids)
        n = self._ids.size
        if isinstance(present, bytes):
            check_bitmap(n, present)
            self._bits = present
        elif present is None:
            self._bits = np.packbits(np.ones(n, dtype=np.uint8), bitorder="little").tobytes()
        elif isinstance(present, np.ndarray) and present.dtype == np.bool_:
            if present.shape != (n,):
                raise ValueError("the presence mask must cover the ring")
            self._bits = np.packbits(present, bitorder="little").tobytes()
        else:
            at = self._index(np.fromiter(present, dtype=np.int64))
            bits = np.zeros(n, dtype=np.uint8)
            bits[at] = 1
            self._bits = np.packbits(bits, bitorder="little").tobytes()
        self.complete = k >= n - 1
        self._half = k // 2
        self._order: npt.NDArray[np.int64] | None = None  # position -> index, when whole
        self._pos: npt.NDArray[np.int64] | None = None  # index -> position, when whole
        self._shuffle: Shuffle | None = None
        self._at: dict[int, int] = {}  # position -> index, evaluated so far
        self._pos_of: dict[int, int] = {}  # index -> position, evaluated so far
        if self.complete:
            return
        if n <= SORTED_RING_MAX:
            self._whole(_sorted_order(n, seed))
        else:
            self._shuffle = Shuffle(seed, n, shuffle_rounds(n, k))

    def _whole(self, order: npt.NDArray[np.int64]) -> None:
        self._order = order
        self._pos = np.empty(order.size, dtype=np.int64)
        self._pos[order] = np.arange(order.size)

    def _index(self, want: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        at = np.searchsorted(self._ids, want)
        if want.size and (
            int(at.max()) >= self._ids.size or not np.array_equal(self._ids[at], want)
        ):
            raise ValueError("present ids must lie in the ring")
        return at

    def _mask(self) -> npt.NDArray[np.bool_]:
        bits = np.unpackbits(np.frombuffer(self._bits, dtype=np.uint8), bitorder="little")
        return bits[: self._ids.size].astype(np.bool_)

    def _has(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        arr = np.frombuffer(self._bits, dtype=np.uint8)
        got: npt.NDArray[np.uint8] = (arr[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1
        return got.astype(np.bool_)

    def _materialise(self) -> None:
        """The whole order (vectorised; O(n) memory): the server, tests, :attr:`order`."""
        if self._order is None:
            assert self._shuffle is not None
            self._whole(self._shuffle.inverse(np.arange(self._ids.size)))

    @property
    def present(self) -> frozenset[int]:
        """The present ids (O(n): for tests and the server, not a client's hot path)."""
        return frozenset(int(u) for u in self._ids[self._mask()].tolist())

    @property
    def order(self) -> list[int]:
        """Every id in ring order (O(n))."""
        if self.complete:
            return [int(u) for u in self._ids.tolist()]
        self._materialise()
        assert self._order is not None
        return [int(u) for u in self._ids[self._order].tolist()]

    def _offsets(self) -> npt.NDArray[np.int64]:
        return np.concatenate((np.arange(-self._half, 0), np.arange(1, self._half + 1)))

    def _near(self, i: int) -> npt.NDArray[np.int64]:
        """The indices at ring distance 1..k/2 from index ``i``, present or not."""
        n = self._ids.size
        if self._order is not None and self._pos is not None:
            near: npt.NDArray[np.int64] = self._order[(self._pos[i] + self._offsets()) % n]
            return near
        assert self._shuffle is not None
        p = self._pos_of.get(i)
        if p is None:
            p = int(self._shuffle.forward([i])[0])
            self._pos_of[i] = p
        want = (p + self._offsets()) % n
        if any(int(q) not in self._at for q in want.tolist()):
            # Fetch everything up to k away at once: the neighbours' neighbours come free.
            span = (p + np.arange(-2 * self._half, 2 * self._half + 1)) % n
            fresh = np.array([q for q in span.tolist() if q not in self._at], dtype=np.int64)
            for q, j in zip(fresh.tolist(), self._shuffle.inverse(fresh).tolist(), strict=True):
                self._at[q] = j
                self._pos_of[j] = q
        return np.array([self._at[int(q)] for q in want.tolist()], dtype=np.int64)

    def neighbours(self, u: int) -> frozenset[int]:
        """``u``'s neighbours that are present (``u`` itself need not be)."""
        i = int(self._index(np.array([u], dtype=np.int64))[0])
        if self.complete:
            others = np.flatnonzero(self._mask())
            return frozenset(int(v) for v in self._ids[others[others != i]].tolist())
        near = self._near(i)
        near = near[self._has(near)]
        return frozenset(int(v) for v in self._ids[near].tolist())

    def graph(self) -> dict[int, frozenset[int]]:
        """Every present id's present neighbours, from one evaluation of the whole ring."""
        mask = self._mask()
        idx = np.flatnonzero(mask)
        ids = self._ids
        if self.complete:
            everyone = frozenset(int(v) for v in ids[idx].tolist())
            return {u: everyone - {u} for u in everyone}
        self._materialise()
        assert self._order is not None and self._pos is not None
        near = self._order[(self._pos[idx][:, None] + self._offsets()[None, :]) % ids.size]
        keep = mask[near]
        return {
            int(ids[i]): frozenset(ids[row[ok]].tolist())
            for i, row, ok in zip(idx.tolist(), near, keep, strict=True)
        }
