"""Known answers for the Merkle trees of SPEC.md D14 (:mod:`secagg.merkle`).

Source: RFC 6962's reference test data as published in Google's certificate-transparency
repository (``testonly/constants.go``: ``LeafInputs``, ``RootHashes``, the inclusion path of
leaf 0 in the tree of 8). Our leaves hash ``0x00 || label || data``; with the empty label the
tree's top is exactly RFC 6962's Merkle Tree Hash, and the root wraps it as
``SHA-256(0x02 || label || count || top)``, recomputed here with :mod:`hashlib`.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from secagg.merkle import InclusionProof, MerkleTree, root_from

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
PATH_0_OF_8 = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
]


def _wrapped(label: bytes, count: int, top_hex: str) -> bytes:
    return hashlib.sha256(
        b"\x02" + label + struct.pack(">Q", count) + bytes.fromhex(top_hex)
    ).digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_top_is_the_rfc6962_merkle_tree_hash(size: int) -> None:
    tree = MerkleTree(b"", LEAVES[:size])
    assert tree.root == _wrapped(b"", size, RFC6962_ROOTS[size - 1])


def test_inclusion_path_is_the_rfc6962_audit_path() -> None:
    tree = MerkleTree(b"", LEAVES)
    proof = tree.prove(0)
    assert [s.hex() for s in proof.siblings] == PATH_0_OF_8
    assert root_from(b"", 8, LEAVES[0], proof) == tree.root
    rebuilt = InclusionProof(0, tuple(bytes.fromhex(h) for h in PATH_0_OF_8))
    assert root_from(b"", 8, LEAVES[0], rebuilt) == _wrapped(b"", 8, RFC6962_ROOTS[7])


def test_the_label_and_the_count_are_bound_into_the_root() -> None:
    assert MerkleTree(b"a", LEAVES).root != MerkleTree(b"b", LEAVES).root
    assert MerkleTree(b"", LEAVES[:7]).root != MerkleTree(b"", LEAVES).root
    assert MerkleTree(b"", []).root == _wrapped(b"", 0, hashlib.sha256(b"").hexdigest())
