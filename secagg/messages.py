"""Protocol messages (docs/protocol.md §4): frozen, slotted dataclasses, one per stage and
direction.

Client -> server: :class:`AdvertiseKeys`, :class:`ShareKeys`, :class:`MaskedInput`,
:class:`CheckResponse` (verified rounds, SPEC.md D12), :class:`ConsistencySignature`,
:class:`UnmaskShares`. Server -> client: :class:`KeyList`, :class:`ShareBundle`,
:class:`CheckRequest` (verified rounds), :class:`SurvivorList`, :class:`SignatureBundle`.
Transport code converts these to and from protobuf in one place; nothing here is ever pickled.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg.config import Stage
from secagg.graph import bitmap_members, cohort_bitmap
from secagg.merkle import InclusionProof, MerkleTree

__all__ = [
    "LABEL_DIGEST_TREE",
    "LABEL_MASKED_DIGEST",
    "AdvertiseKeys",
    "CheckRequest",
    "CheckResponse",
    "ClientMessage",
    "ConsistencySignature",
    "ForwardedShare",
    "InclusionProof",
    "KeyList",
    "MaskedInput",
    "ServerMessage",
    "ShareBundle",
    "ShareDigest",
    "ShareKeys",
    "SignatureBundle",
    "SurvivorList",
    "UnmaskShares",
    "digest_tree",
    "masked_digest",
    "share_keys_payload",
    "stage_of",
]

_U32 = struct.Struct(">I")
LABEL_MASKED_DIGEST = b"secagg/v2/masked-input-digest"


@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """§4.0: two fresh X25519 public keys, signed with the sender's identity key."""

    sender: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes

    def signed_payload(self) -> bytes:
        return _U32.pack(self.sender) + self.c_pk + self.s_pk


@dataclass(frozen=True, slots=True)
class ShareDigest:
    """Digests of the two shares the owner gave one holder (so a lying holder is caught)."""

    holder: int
    s_digest: bytes
    b_digest: bytes

    def leaf(self) -> bytes:
        return _U32.pack(self.holder) + self.s_digest + self.b_digest


LABEL_DIGEST_TREE = b"secagg/v2/share-digests"


def digest_tree(digests: tuple[ShareDigest, ...]) -> MerkleTree:
    """The Merkle tree over an owner's share digests in holder order (SPEC.md D14)."""
    return MerkleTree(
        LABEL_DIGEST_TREE, [d.leaf() for d in sorted(digests, key=lambda x: x.holder)]
    )


def share_keys_payload(sender: int, b_commitment: bytes, graph_seed: bytes, root: bytes) -> bytes:
    """What an owner signs at §4.2: its commitment, the graph, and the root of its digests."""
    return _U32.pack(sender) + b_commitment + graph_seed + root


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """§4.2: one AEAD ciphertext of shares per neighbour, the self-mask seed commitment and the
    share digests, signed through the root of their Merkle tree (SPEC.md D14)."""

    sender: int
    b_commitment: bytes
    share_digests: tuple[ShareDigest, ...]
    ciphertexts: tuple[tuple[int, bytes], ...]
    signature: bytes

    def signed_payload(self, graph_seed: bytes) -> bytes:
        root = digest_tree(self.share_digests).root
        return share_keys_payload(self.sender, self.b_commitment, graph_seed, root)


def masked_digest(sender: int, commitment: bytes) -> hashlib._Hash:
    """The upload digest before its vector (SPEC.md D5): feed it the vector as little-endian
    uint32 words, e.g. while masking (:func:`secagg.prg.apply_masks`), then sign ``digest()``."""
    head = _U32.pack(sender)
    if commitment:  # length-prefixed; absent in unverified rounds
        head += _U32.pack(len(commitment)) + commitment
    return hashlib.sha256(LABEL_MASKED_DIGEST + head)


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """§4.3: the masked ring vector ``masked`` (uint32, each < 2^b) before bit-packing.

    In a verified round (``RoundConfig.norm_bound``, docs/protocol.md §7, SPEC.md D12)
    ``commitment`` carries the sender's row commitments to its (unmasked) vector; it is empty
    otherwise. The signature covers both.
    """

    sender: int
    masked: npt.NDArray[np.uint32] = field(compare=False)
    signature: bytes
    commitment: bytes = b""

    def signed_payload(self) -> bytes:
        """A digest of the upload (SPEC.md D14: one SHA-256 pass, not Ed25519's two SHA-512
        passes over megabytes), domain-separated from every other signed payload."""
        h = masked_digest(self.sender, self.commitment)
        h.update(np.ascontiguousarray(self.masked, dtype="<u4").data)
        return h.digest()


@dataclass(frozen=True, slots=True)
class CheckResponse:
    """SPEC.md D12: the sender's claims (commitments to the projections of its self mask and
    of each pairwise mask it added, 48 bytes each) and its norm + consistency proof."""

    sender: int
    self_claim: bytes
    pair_claims: tuple[tuple[int, bytes], ...]
    proof: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ConsistencySignature:
    """§4.4: the sender's signature over the survivor set (and the graph seed)."""

    sender: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class UnmaskShares:
    """§4.5: shares of ``b_v`` for surviving neighbours and of ``s_sk_v`` for dropped ones."""

    sender: int
    b_shares: tuple[tuple[int, bytes], ...]
    s_shares: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class KeyList:
    """Server -> client after §4.0 (SPEC.md D14): who advertised (U1, a bitmap over the sorted
    registry ids), the root of the tree of their signed keys, the proof that the recipient's
    own entry is in it, and the entries of the recipient and its neighbours only."""

    recipient: int
    entries: tuple[AdvertiseKeys, ...]
    present: bytes
    key_root: bytes
    own_proof: InclusionProof

    def members(self, cohort: list[int]) -> list[int]:
        return bitmap_members(cohort, self.present)


@dataclass(frozen=True, slots=True)
class ForwardedShare:
    """One owner's ciphertext for the recipient, with what the recipient needs to check it."""

    owner: int
    ciphertext: bytes
    b_commitment: bytes
    digest: ShareDigest
    digest_proof: InclusionProof
    signature: bytes


@dataclass(frozen=True, slots=True)
class ShareBundle:
    """Server -> client after §4.2: the ciphertexts addressed to the recipient (defines U2)."""

    recipient: int
    shares: tuple[ForwardedShare, ...]


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """Server -> client after §4.3 in a verified round: the seed of the public projection,
    revealed only once every masked input is in (SPEC.md D12)."""

    recipient: int
    seed: bytes


@dataclass(frozen=True, slots=True)
class SurvivorList:
    """Server -> client after §4.3 (after the CHECK stage when verified): ``survivors`` is U3,
    the clients whose masked input arrived (and passed the check)."""

    recipient: int
    bitmap: bytes

    @classmethod
    def of(cls, recipient: int, cohort: list[int], survivors: frozenset[int]) -> SurvivorList:
        return cls(recipient, cohort_bitmap(cohort, survivors))

    def members(self, cohort: list[int]) -> frozenset[int]:
        return frozenset(bitmap_members(cohort, self.bitmap))


@dataclass(frozen=True, slots=True)
class SignatureBundle:
    """Server -> client after §4.4: consistency signatures of the recipient's neighbours."""

    recipient: int
    signatures: tuple[tuple[int, bytes], ...]


ClientMessage = (
    AdvertiseKeys | ShareKeys | MaskedInput | CheckResponse | ConsistencySignature | UnmaskShares
)
ServerMessage = KeyList | ShareBundle | CheckRequest | SurvivorList | SignatureBundle

_STAGE_OF: dict[type, Stage] = {
    AdvertiseKeys: Stage.ADVERTISE_KEYS,
    ShareKeys: Stage.SHARE_KEYS,
    MaskedInput: Stage.MASKED_INPUT,
    CheckResponse: Stage.CHECK,
    ConsistencySignature: Stage.CONSISTENCY,
    UnmaskShares: Stage.UNMASK,
}


def stage_of(message: ClientMessage) -> Stage:
    """The stage a client message belongs to."""
    return _STAGE_OF[type(message)]
