"""Merkle trees over the lists a SecAgg+ round commits to (SPEC.md D14): the advertised keys of
U1 and each owner's share digests.

A client of a large round never sees those lists whole: it gets the root and, for the entries
that concern it (its neighbours'), inclusion proofs. Every leaf's position is fixed by public
data (a client's rank in the advertised set, a holder's rank among an owner's neighbours), so
a proof cannot show one entry at two places. Hashing follows RFC 6962 (Certificate
Transparency): leaves ``H(0x00 || label || data)``, nodes ``H(0x01 || left || right)``, the
largest power-of-two split; the root binds the label and the count,
``H(0x02 || label || count || top)``.

Pure: no I/O. A failed check raises :class:`~secagg.InconsistentView`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from secagg._errors import InconsistentView

__all__ = ["MAX_DEPTH", "InclusionProof", "MerkleTree", "root_from", "verify_inclusion"]

MAX_DEPTH = 40
_U64 = struct.Struct(">Q")
_EMPTY = hashlib.sha256(b"").digest()


def _leaf(label: bytes, data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + label + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _root(label: bytes, count: int, top: bytes) -> bytes:
    return hashlib.sha256(b"\x02" + label + _U64.pack(count) + top).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (RFC 6962's split point)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf ``index`` of a tree: the sibling hashes from the leaf up to the top."""

    index: int
    siblings: tuple[bytes, ...]


class MerkleTree:
    """A tree over ``leaves`` (bytes), in the given order, under ``label``: the root once
    (``count`` hashes), then any leaf's proof without hashing again."""

    def __init__(self, label: bytes, leaves: Sequence[bytes]) -> None:
        self.label = label
        self.count = len(leaves)
        self._hashes = [_leaf(label, d) for d in leaves]
        self._tops: dict[tuple[int, int], bytes] = {}
        top = self._top(0, self.count) if self.count else _EMPTY
        self.root = _root(label, self.count, top)

    def _top(self, lo: int, hi: int) -> bytes:
        got = self._tops.get((lo, hi))
        if got is None:
            if hi - lo == 1:
                got = self._hashes[lo]
            else:
                k = _split(hi - lo)
                got = _node(self._top(lo, lo + k), self._top(lo + k, hi))
            self._tops[(lo, hi)] = got
        return got

    def prove(self, index: int) -> InclusionProof:
        """The inclusion proof of leaf ``index`` (siblings from the leaf up)."""
        if not 0 <= index < self.count:
            raise IndexError("no such leaf")
        path: list[bytes] = []
        lo, hi = 0, self.count
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._top(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._top(lo, lo + k))
                lo = lo + k
        return InclusionProof(index, tuple(reversed(path)))


def verify_inclusion(
    label: bytes, root: bytes, count: int, data: bytes, proof: InclusionProof
) -> None:
    """Raise :class:`InconsistentView` unless ``data`` is leaf ``proof.index`` of the tree of
    ``count`` leaves whose root is ``root``."""
    if root_from(label, count, data, proof) != root:
        raise InconsistentView("inclusion proof does not match the committed root")


def root_from(label: bytes, count: int, data: bytes, proof: InclusionProof) -> bytes:
    """The root of a tree of ``count`` leaves with ``data`` at ``proof.index`` and the path
    ``proof.siblings`` (what an owner's signature is then checked against)."""
    if not 0 <= proof.index < count or len(proof.siblings) > MAX_DEPTH:
        raise InconsistentView("inclusion proof out of range")
    sides: list[bool] = []  # from the top down: is the leaf in the left part?
    lo, n = proof.index, count
    while n > 1:
        k = _split(n)
        if lo < k:
            sides.append(True)
            n = k
        else:
            sides.append(False)
            lo -= k
            n -= k
    if len(sides) != len(proof.siblings):
        raise InconsistentView("inclusion proof has the wrong length")
    h = _leaf(label, data)
    for sib, left in zip(proof.siblings, reversed(sides), strict=True):
        if len(sib) != 32:
            raise InconsistentView("inclusion proof hash of the wrong size")
        h = _node(h, sib) if left else _node(sib, h)
    return _root(label, count, h)
