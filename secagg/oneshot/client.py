"""A one-shot client: one call, one message (SPEC.md O4).

It checks the round (its policy floor, the committee's signed round keys), encodes its input,
masks it under a fresh ternary secret, Shamir-shares the secret coefficient-wise to the
committee (each share sealed to its member with X25519 + HKDF + ChaCha20-Poly1305) and signs
the lot with its registered Ed25519 identity. The secret is not kept: the client can leave.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg._crypto import (
    aead_seal,
    check_x25519_public,
    ed25519_sign,
    ed25519_verify,
    hkdf,
    x25519_agree,
    x25519_keypair,
)
from secagg._errors import ConfigError, EncodingError, PolicyViolation, UnexpectedMessage
from secagg._rng import RandomSource, SystemRandom
from secagg.oneshot.config import OneShotConfig, OneShotPolicy
from secagg.oneshot.messages import (
    LABEL_MEMBER_KEY,
    LABEL_SHARE_AD,
    LABEL_SHARE_KEY,
    LABEL_UPLOAD,
    MemberKey,
    OneShotUpload,
)
from secagg.oneshot.ring import cbd_errors, shamir_share, ternary
from secagg.oneshot.scheme import mask, pack_residues

__all__ = ["OneShotClient", "check_member_keys", "share_ad", "share_key"]

_U32 = struct.Struct(">I")


def share_key(
    cfg: OneShotConfig, shared: bytes, client: int, member: int, eph: bytes, pk: bytes
) -> bytes:
    """The AEAD key of one (client, member) share, bound to the round and both keys."""
    info = LABEL_SHARE_KEY + cfg.digest + _U32.pack(client) + _U32.pack(member) + eph + pk
    return hkdf(shared, info, 32)


def share_ad(cfg: OneShotConfig, client: int, member: int) -> bytes:
    return LABEL_SHARE_AD + cfg.digest + _U32.pack(client) + _U32.pack(member)


def check_member_keys(
    cfg: OneShotConfig, keys: Sequence[MemberKey], identities: Mapping[int, bytes]
) -> None:
    """One key per committee member, in committee order, each signed for this round by the
    member's registered identity (else the aggregator could hand out keys of its own)."""
    if tuple(k.member_id for k in keys) != cfg.committee:
        raise PolicyViolation("the round keys do not match the committee")
    for k in keys:
        if k.member_id not in identities:
            raise PolicyViolation(f"committee member {k.member_id} is not registered")
        check_x25519_public(k.public_key)
        ed25519_verify(
            identities[k.member_id],
            k.signature,
            LABEL_MEMBER_KEY,
            cfg.digest,
            k.payload(),
            who=k.member_id,
        )


class OneShotClient:
    """Makes this client's single upload for one round."""

    def __init__(
        self,
        config: OneShotConfig,
        client_id: int,
        identity: Ed25519PrivateKey,
        identities: Mapping[int, bytes],
        *,
        policy: OneShotPolicy | None = None,
        rng: RandomSource | None = None,
        allow_deterministic_rng: bool = False,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        self.rng = rng or SystemRandom()
        if self.rng.deterministic and not allow_deterministic_rng:
            raise PolicyViolation("a deterministic random source outside test mode")
        (policy or OneShotPolicy()).check(config, frozenset(identities))
        if client_id not in identities:
            raise PolicyViolation(f"client {client_id} is not registered")
        self.config = config
        self.client_id = client_id
        self.identity = identity
        self.identities = identities
        self._done = False

    def upload(self, x: npt.ArrayLike, member_keys: Sequence[MemberKey]) -> OneShotUpload:
        """Encode, mask, share and sign ``x``; one call per round."""
        if self._done:
            raise UnexpectedMessage("a one-shot client uploads once per round")
        enc = self.config.encoding
        return self.upload_ints(enc.to_signed(enc.encode(x, self.rng)), member_keys)

    def upload_ints(self, ints: npt.ArrayLike, member_keys: Sequence[MemberKey]) -> OneShotUpload:
        """Mask, share and sign signed integers already on the round's grid (``|v| <=
        encoding.max_abs``), e.g. a distributed-DP ring vector, centred (SPEC.md O9)."""
        if self._done:
            raise UnexpectedMessage("a one-shot client uploads once per round")
        cfg, rng = self.config, self.rng
        arr = np.asarray(ints)
        if arr.dtype.kind not in "iu" or arr.shape != (cfg.d,):
            raise EncodingError(f"the round wants {cfg.d} integers")
        ints = arr.astype(np.int64)
        if ints.size and int(np.abs(ints).max()) > cfg.encoding.max_abs:
            raise EncodingError("an integer is beyond the round's per-client bound")
        check_member_keys(cfg, member_keys, self.identities)
        ring = cfg.ring
        self._done = True
        s = ternary(ring.n, rng)
        e = cbd_errors(cfg.chunks * ring.n, rng)
        masked = pack_residues(mask(cfg, ints, s, e), ring.residue_bits)
        per_prime = [
            shamir_share(np.mod(s, q).astype(np.uint64), q, cfg.threshold, len(cfg.committee), rng)
            for q in ring.primes
        ]
        del s, e
        eph_sk, eph_pk = x25519_keypair(rng)
        eph = X25519PrivateKey.from_private_bytes(eph_sk)
        shares = []
        for j, k in enumerate(member_keys):
            plain = pack_residues((per_prime[0][j], per_prime[1][j]), ring.residue_bits)
            key = share_key(
                cfg,
                x25519_agree(eph, k.public_key),
                self.client_id,
                k.member_id,
                eph_pk,
                k.public_key,
            )
            shares.append(aead_seal(key, plain, share_ad(cfg, self.client_id, k.member_id), rng))
        assert cfg.session_id is not None
        up = OneShotUpload(cfg.session_id, cfg.round, self.client_id, masked, eph_pk, tuple(shares))
        sig = ed25519_sign(self.identity, LABEL_UPLOAD, cfg.digest, up.payload())
        return OneShotUpload(
            cfg.session_id, cfg.round, self.client_id, masked, eph_pk, tuple(shares), sig
        )
