"""protobuf <-> core messages, in one place (docs/architecture.md), with every size checked.

Decoding never trusts a length: keys are 32 bytes, signatures 64, digests 32, share values
66, ciphertexts exactly the AEAD size, id lists bounded by ``n``, packed vectors exactly
``ceil(d * b / 8)`` bytes, commitments, claims (48 bytes) and proofs (only in a round with a
norm bound, docs/protocol.md §7, SPEC.md D12) below their fixed maxima. A violation raises
:class:`WireError` (a ``secagg.InvalidMessage``), which the service maps to
``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import math

from protos.secagg.v1 import secagg_pb2 as pb
from secagg import InvalidMessage, RoundConfig, Stage, pack_bits, unpack_bits
from secagg.messages import (
    AdvertiseKeys,
    CheckRequest,
    CheckResponse,
    ClientMessage,
    ConsistencySignature,
    ForwardedShare,
    InclusionProof,
    KeyList,
    MaskedInput,
    ServerMessage,
    ShareBundle,
    ShareDigest,
    ShareKeys,
    SignatureBundle,
    SurvivorList,
    UnmaskShares,
)
from secagg.verify_round import (
    CHECK_SEED_BYTES,
    MAX_PROOF_BYTES,
    POINT_BYTES,
    max_commitment_bytes,
)

__all__ = [
    "STAGE_FROM_PB",
    "STAGE_TO_PB",
    "WireError",
    "client_from_pb",
    "client_to_pb",
    "config_from_pb",
    "config_to_pb",
    "max_message_bytes",
    "server_from_pb",
    "server_to_pb",
]

STAGE_TO_PB = {
    Stage.ADVERTISE_KEYS: pb.ADVERTISE_KEYS,
    Stage.SHARE_KEYS: pb.SHARE_KEYS,
    Stage.MASKED_INPUT: pb.MASKED_INPUT,
    Stage.CHECK: pb.CHECK,
    Stage.CONSISTENCY: pb.CONSISTENCY,
    Stage.UNMASK: pb.UNMASK,
}
STAGE_FROM_PB = {v: k for k, v in STAGE_TO_PB.items()}

_CT_BYTES = 12 + 8 + 2 * 66 + 16


class WireError(InvalidMessage):
    """A protobuf message is malformed or out of bounds."""


def max_message_bytes(cfg: RoundConfig) -> int:
    """The largest legitimate message of a round (a packed vector or a share bundle) + slack."""
    packed = math.ceil(cfg.upload_dim * cfg.ring_bits / 8)
    if cfg.norm_bound is not None:
        packed += max_commitment_bytes(cfg.d)
        packed = max(packed, MAX_PROOF_BYTES + (cfg.degree + 1) * (POINT_BYTES + 8))
    k = cfg.degree
    depth = max(cfg.n, 2).bit_length() + 1  # hashes in a Merkle proof (SPEC.md D14)
    bundle = k * (_CT_BYTES + 32 + 64 + 80 + 34 * depth + 32)
    keys = (k + 1) * 150 + (cfg.n + 7) // 8 + 34 * depth + 64
    bitmap = (cfg.n + 7) // 8
    return max(packed, bundle, keys, bitmap, k * 80) + (1 << 16)


def _b(raw: bytes, size: int, what: str) -> bytes:
    if len(raw) != size:
        raise WireError(f"{what} must be {size} bytes, got {len(raw)}")
    return bytes(raw)


def _id(x: int, cfg: RoundConfig, what: str) -> int:
    if not 1 <= x <= 2**32 - 1:
        raise WireError(f"{what} {x} is not a client id")
    return int(x)


def _bounded(items: object, limit: int, what: str) -> None:
    if len(items) > limit:  # type: ignore[arg-type]
        raise WireError(f"too many {what}: {len(items)} > {limit}")  # type: ignore[arg-type]


def config_to_pb(cfg: RoundConfig) -> pb.RoundConfig:
    assert cfg.session_id is not None
    enc = cfg.encoding
    return pb.RoundConfig(
        version=cfg.version,
        session_id=cfg.session_id,
        round=cfg.round,
        n=cfg.n,
        t=cfg.t,
        k=cfg.degree,
        d=cfg.d,
        bits=enc.bits,
        clip=cfg.clip,
        level_bits=cfg.level_bits,
        model_digest=cfg.model_digest,
        dp_digest=cfg.dp_digest,
        config_digest=cfg.digest,
        norm_bound=cfg.norm_bound,
    )


def config_from_pb(m: pb.RoundConfig) -> RoundConfig:
    """Rebuild the round config; its digest must match the one the server sent."""
    try:
        cfg = RoundConfig(
            n=m.n,
            t=m.t,
            d=m.d,
            k=None if m.k == m.n - 1 else m.k,
            clip=m.clip,
            bits=m.bits,
            level_bits=m.level_bits,
            session_id=bytes(m.session_id),
            round=m.round,
            model_digest=bytes(m.model_digest),
            dp_digest=bytes(m.dp_digest),
            version=m.version,
            norm_bound=int(m.norm_bound) if m.HasField("norm_bound") else None,
        )
    except ValueError as exc:
        raise WireError(f"bad round config: {exc}") from exc
    if cfg.digest != bytes(m.config_digest):
        raise WireError("the round config does not match its digest")
    return cfg


# -- client -> server --------------------------------------------------------------------------


def client_to_pb(msg: ClientMessage, cfg: RoundConfig) -> pb.ClientEnvelope:
    assert cfg.session_id is not None
    env = pb.ClientEnvelope(round=cfg.round, session_id=cfg.session_id, sender=msg.sender)
    if isinstance(msg, AdvertiseKeys):
        env.advertise_keys.CopyFrom(
            pb.AdvertiseKeys(c_pk=msg.c_pk, s_pk=msg.s_pk, signature=msg.signature)
        )
    elif isinstance(msg, ShareKeys):
        env.share_keys.CopyFrom(
            pb.ShareKeys(
                b_commitment=msg.b_commitment,
                share_digests=[_sd_to_pb(sd) for sd in msg.share_digests],
                ciphertexts=[pb.Ciphertext(holder=h, ciphertext=c) for h, c in msg.ciphertexts],
                signature=msg.signature,
            )
        )
    elif isinstance(msg, MaskedInput):
        env.masked_input.CopyFrom(
            pb.MaskedInput(
                packed=pack_bits(msg.masked, cfg.ring_bits),
                signature=msg.signature,
                commitment=msg.commitment,
            )
        )
    elif isinstance(msg, CheckResponse):
        env.check.CopyFrom(
            pb.CheckResponse(
                self_claim=msg.self_claim,
                pair_claims=[pb.Claim(neighbour=v, point=c) for v, c in msg.pair_claims],
                proof=msg.proof,
                signature=msg.signature,
            )
        )
    elif isinstance(msg, ConsistencySignature):
        env.consistency.CopyFrom(pb.ConsistencySignature(signature=msg.signature))
    else:
        env.unmask.CopyFrom(
            pb.UnmaskShares(
                b_shares=[pb.Share(owner=o, y=y) for o, y in msg.b_shares],
                s_shares=[pb.Share(owner=o, y=y) for o, y in msg.s_shares],
            )
        )
    return env


def _proof_to_pb(p: InclusionProof) -> pb.Proof:
    return pb.Proof(index=p.index, siblings=list(p.siblings))


def _proof_from_pb(m: pb.Proof, leaves: int) -> InclusionProof:
    """A Merkle proof into a tree of at most ``leaves`` leaves: depth and sizes bounded."""
    if not 0 <= m.index < max(leaves, 1):
        raise WireError(f"proof index {m.index} out of range")
    _bounded(m.siblings, max(1, leaves).bit_length() + 1, "proof hashes")
    return InclusionProof(int(m.index), tuple(_b(h, 32, "proof hash") for h in m.siblings))


def _sd_to_pb(sd: ShareDigest) -> pb.ShareDigest:
    return pb.ShareDigest(holder=sd.holder, s_digest=sd.s_digest, b_digest=sd.b_digest)


def _sd_from_pb(m: pb.ShareDigest, cfg: RoundConfig) -> ShareDigest:
    return ShareDigest(
        _id(m.holder, cfg, "holder"),
        _b(m.s_digest, 32, "share digest"),
        _b(m.b_digest, 32, "share digest"),
    )


def client_from_pb(env: pb.ClientEnvelope, cfg: RoundConfig) -> ClientMessage:
    """Decode a client message of ``cfg``'s round; freshness (session, round) is checked."""
    if env.round != cfg.round or bytes(env.session_id) != cfg.session_id:
        raise WireError("message for another round or session (replay?)")
    sender = _id(env.sender, cfg, "sender")
    kind = env.WhichOneof("body")
    k = cfg.degree
    if kind == "advertise_keys":
        a = env.advertise_keys
        return AdvertiseKeys(
            sender, _b(a.c_pk, 32, "c_pk"), _b(a.s_pk, 32, "s_pk"), _b(a.signature, 64, "sig")
        )
    if kind == "share_keys":
        s = env.share_keys
        _bounded(s.share_digests, k, "share digests")
        _bounded(s.ciphertexts, k, "ciphertexts")
        return ShareKeys(
            sender,
            _b(s.b_commitment, 32, "commitment"),
            tuple(_sd_from_pb(sd, cfg) for sd in s.share_digests),
            tuple(
                (_id(c.holder, cfg, "holder"), _b(c.ciphertext, _CT_BYTES, "ciphertext"))
                for c in s.ciphertexts
            ),
            _b(s.signature, 64, "signature"),
        )
    if kind == "masked_input":
        m = env.masked_input
        if cfg.norm_bound is None:
            if m.commitment:
                raise WireError("this round carries no commitments")
        elif not 0 < len(m.commitment) <= max_commitment_bytes(cfg.d):
            raise WireError(f"commitment of {len(m.commitment)} bytes")
        try:
            vec = unpack_bits(bytes(m.packed), cfg.ring_bits, cfg.upload_dim)
        except ValueError as exc:
            raise WireError(f"masked input: {exc}") from exc
        return MaskedInput(sender, vec, _b(m.signature, 64, "signature"), bytes(m.commitment))
    if kind == "check":
        c = env.check
        if cfg.norm_bound is None:
            raise WireError("this round has no contribution check")
        _bounded(c.pair_claims, k, "claims")
        if not 0 < len(c.proof) <= MAX_PROOF_BYTES:
            raise WireError(f"proof of {len(c.proof)} bytes")
        return CheckResponse(
            sender,
            _b(c.self_claim, POINT_BYTES, "claim"),
            tuple(
                (_id(p.neighbour, cfg, "neighbour"), _b(p.point, POINT_BYTES, "claim"))
                for p in c.pair_claims
            ),
            bytes(c.proof),
            _b(c.signature, 64, "signature"),
        )
    if kind == "consistency":
        return ConsistencySignature(sender, _b(env.consistency.signature, 64, "signature"))
    if kind == "unmask":
        u = env.unmask
        _bounded(u.b_shares, k, "shares")
        _bounded(u.s_shares, k, "shares")
        return UnmaskShares(
            sender,
            tuple((_id(s.owner, cfg, "owner"), _b(s.y, 66, "share")) for s in u.b_shares),
            tuple((_id(s.owner, cfg, "owner"), _b(s.y, 66, "share")) for s in u.s_shares),
        )
    raise WireError("empty client message")


# -- server -> client --------------------------------------------------------------------------


def server_to_pb(msg: ServerMessage, cfg: RoundConfig) -> pb.ServerEnvelope:
    assert cfg.session_id is not None
    env = pb.ServerEnvelope(round=cfg.round, session_id=cfg.session_id, recipient=msg.recipient)
    if isinstance(msg, KeyList):
        env.key_list.CopyFrom(
            pb.KeyList(
                entries=[
                    pb.AdvertiseEntry(
                        sender=e.sender, c_pk=e.c_pk, s_pk=e.s_pk, signature=e.signature
                    )
                    for e in msg.entries
                ],
                present=msg.present,
                key_root=msg.key_root,
                own_proof=_proof_to_pb(msg.own_proof),
            )
        )
    elif isinstance(msg, ShareBundle):
        env.share_bundle.CopyFrom(
            pb.ShareBundle(
                shares=[
                    pb.ForwardedShare(
                        owner=f.owner,
                        ciphertext=f.ciphertext,
                        b_commitment=f.b_commitment,
                        digest=_sd_to_pb(f.digest),
                        digest_proof=_proof_to_pb(f.digest_proof),
                        signature=f.signature,
                    )
                    for f in msg.shares
                ]
            )
        )
    elif isinstance(msg, SurvivorList):
        env.survivor_list.CopyFrom(pb.SurvivorList(bitmap=msg.bitmap))
    elif isinstance(msg, CheckRequest):
        env.check_request.CopyFrom(pb.CheckRequest(seed=msg.seed))
    else:
        env.signature_bundle.CopyFrom(
            pb.SignatureBundle(
                signatures=[pb.SignatureEntry(signer=v, signature=s) for v, s in msg.signatures]
            )
        )
    return env


def server_from_pb(env: pb.ServerEnvelope, cfg: RoundConfig) -> ServerMessage | pb.RoundOutcome:
    """Decode a server message; a ``RoundOutcome`` (the round ended for us) is returned as is."""
    if env.round != cfg.round or bytes(env.session_id) != cfg.session_id:
        raise WireError("server message for another round or session")
    me = _id(env.recipient, cfg, "recipient")
    kind = env.WhichOneof("body")
    n, k = cfg.n, cfg.degree
    if kind == "key_list":
        kl = env.key_list
        _bounded(kl.entries, k + 1, "key entries")
        return KeyList(
            me,
            tuple(
                AdvertiseKeys(
                    _id(e.sender, cfg, "sender"),
                    _b(e.c_pk, 32, "c_pk"),
                    _b(e.s_pk, 32, "s_pk"),
                    _b(e.signature, 64, "signature"),
                )
                for e in kl.entries
            ),
            _b(kl.present, (n + 7) // 8, "U1 bitmap"),
            _b(kl.key_root, 32, "key root"),
            _proof_from_pb(kl.own_proof, n),
        )
    if kind == "share_bundle":
        _bounded(env.share_bundle.shares, k, "forwarded shares")
        out = []
        for f in env.share_bundle.shares:
            out.append(
                ForwardedShare(
                    _id(f.owner, cfg, "owner"),
                    _b(f.ciphertext, _CT_BYTES, "ciphertext"),
                    _b(f.b_commitment, 32, "commitment"),
                    _sd_from_pb(f.digest, cfg),
                    _proof_from_pb(f.digest_proof, k),
                    _b(f.signature, 64, "signature"),
                )
            )
        return ShareBundle(me, tuple(out))
    if kind == "check_request":
        if cfg.norm_bound is None:
            raise WireError("this round has no contribution check")
        return CheckRequest(me, _b(env.check_request.seed, CHECK_SEED_BYTES, "check seed"))
    if kind == "survivor_list":
        return SurvivorList(me, _b(env.survivor_list.bitmap, (n + 7) // 8, "survivor bitmap"))
    if kind == "signature_bundle":
        _bounded(env.signature_bundle.signatures, k, "signatures")
        return SignatureBundle(
            me,
            tuple(
                (_id(s.signer, cfg, "signer"), _b(s.signature, 64, "signature"))
                for s in env.signature_bundle.signatures
            ),
        )
    if kind == "outcome":
        return env.outcome
    raise WireError("empty server message")
