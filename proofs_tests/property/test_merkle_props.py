"""Properties of the Merkle trees a SecAgg+ client checks instead of whole lists (SPEC.md D14):
every honest proof verifies, and any change to the data, the position, the path, the count or
the label makes it fail with a typed error, never a wrong root accepted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import InconsistentView
from secagg.merkle import MAX_DEPTH, InclusionProof, MerkleTree, root_from, verify_inclusion

LABEL = b"test/tree"
leaves_st = st.lists(st.binary(max_size=40), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_every_leaf_proves_at_its_place(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(LABEL, leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = tree.prove(i)
    assert len(proof.siblings) <= (len(leaves) - 1).bit_length()
    verify_inclusion(LABEL, tree.root, len(leaves), leaves[i], proof)


@settings(max_examples=200, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_any_tampering_is_refused(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(LABEL, leaves)
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = tree.prove(i)
    kind = data.draw(st.sampled_from(["data", "index", "sibling", "count", "label", "length"]))
    leaf, count, label = leaves[i], n, LABEL
    if kind == "data":
        leaf = data.draw(st.binary(max_size=40).filter(lambda b: b != leaves[i]))
    elif kind == "index":
        if n == 1:
            return
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
        if leaves[j] == leaves[i] and tree.prove(j).siblings == proof.siblings:
            return  # the same leaf twice with the same path: not a tampering
        proof = InclusionProof(j, proof.siblings)
    elif kind == "sibling":
        if not proof.siblings:
            return
        k = data.draw(st.integers(0, len(proof.siblings) - 1))
        flipped = bytearray(proof.siblings[k])
        flipped[data.draw(st.integers(0, 31))] ^= 1 << data.draw(st.integers(0, 7))
        sib = list(proof.siblings)
        sib[k] = bytes(flipped)
        proof = InclusionProof(i, tuple(sib))
    elif kind == "count":
        count = data.draw(st.integers(1, 2 * n + 2).filter(lambda c: c != n))
    elif kind == "label":
        label = b"other/tree"
    else:
        extra = data.draw(st.booleans())
        sib = (*proof.siblings, bytes(32)) if extra or not proof.siblings else proof.siblings[:-1]
        proof = InclusionProof(i, sib)
    with pytest.raises(InconsistentView):
        verify_inclusion(label, tree.root, count, leaf, proof)


def test_malformed_proofs_raise_the_typed_error() -> None:
    tree = MerkleTree(LABEL, [b"a", b"b", b"c"])
    for proof, count in [
        (InclusionProof(-1, ()), 3),
        (InclusionProof(3, tree.prove(2).siblings), 3),
        (InclusionProof(0, (b"short",) * 2), 3),
        (InclusionProof(0, (bytes(32),) * (MAX_DEPTH + 1)), 2**41),
        (InclusionProof(0, ()), 0),
    ]:
        with pytest.raises(InconsistentView):
            root_from(LABEL, count, b"a", proof)
