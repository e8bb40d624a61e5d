"""protobuf <-> :mod:`secagg.oneshot`, in one place, with every size bounded before use: a config
must reproduce its digest; keys, signatures and digests have their fixed sizes; an upload has
exactly one sealed share per committee member of the round's share size and exactly the
round's masked bytes; a share sum is exactly one share's packed size.
"""

from __future__ import annotations

from collections.abc import Iterable

from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from protos.wire import WireError
from secagg import ConfigError
from secagg.oneshot import (
    CheckRequest,
    MemberKey,
    OneShotConfig,
    OneShotUpload,
    ReleaseRequest,
    SetSignature,
    ShareForMember,
    ShareSum,
)

__all__ = [
    "UploadAssembler",
    "WireError",
    "check_from_pb",
    "check_to_pb",
    "config_from_pb",
    "config_to_pb",
    "max_message_bytes",
    "member_key_from_pb",
    "member_key_to_pb",
    "release_from_pb",
    "release_to_pb",
    "set_signature_from_pb",
    "set_signature_to_pb",
    "share_sum_from_pb",
    "share_sum_to_pb",
    "upload_parts",
]

_SIG = 64
_KEY = 32
_DIGEST = 32
_SEAL_OVERHEAD = 28
PART_BYTES = 1 << 20  # masked bytes per upload part


def config_to_pb(cfg: OneShotConfig) -> pb.OneShotConfig:
    if cfg.session_id is None:
        raise WireError("the config has no session_id yet")
    return pb.OneShotConfig(
        version=cfg.version,
        session_id=cfg.session_id,
        round=cfg.round,
        n=cfg.n,
        d=cfg.d,
        committee=list(cfg.committee),
        threshold=cfg.threshold,
        min_cohort=cfg.min_cohort,
        clip=cfg.clip,
        bits=cfg.encoding.bits,
        level_bits=cfg.level_bits,
        config_digest=cfg.digest,
        task_digest=cfg.task_digest,
        model_digest=cfg.model_digest,
    )


def config_from_pb(msg: pb.OneShotConfig) -> OneShotConfig:
    """Rebuild and validate; the digest must match (both sides derived the same ring)."""
    if len(msg.session_id) != 16 or len(msg.config_digest) != _DIGEST:
        raise WireError("session_id must be 16 bytes and config_digest 32")
    if len(msg.committee) > 64:
        raise WireError("committee too large")
    for name in ("task_digest", "model_digest"):
        if len(getattr(msg, name)) not in (0, _DIGEST):
            raise WireError(f"{name} must be 32 bytes")
    try:
        cfg = OneShotConfig(
            n=msg.n,
            d=msg.d,
            committee=tuple(msg.committee),
            threshold=msg.threshold,
            min_cohort=msg.min_cohort,
            clip=msg.clip,
            bits=msg.bits or None,
            level_bits=msg.level_bits,
            session_id=bytes(msg.session_id),
            round=msg.round,
            version=msg.version,
            task_digest=bytes(msg.task_digest) or bytes(_DIGEST),
            model_digest=bytes(msg.model_digest) or bytes(_DIGEST),
        )
    except ConfigError as exc:
        raise WireError(f"bad round config: {exc}") from None
    if cfg.digest != bytes(msg.config_digest):
        raise WireError("config_digest does not match the parameters")
    return cfg


def member_key_to_pb(k: MemberKey) -> pb.MemberKey:
    return pb.MemberKey(member_id=k.member_id, public_key=k.public_key, signature=k.signature)


def member_key_from_pb(msg: pb.MemberKey) -> MemberKey:
    if len(msg.public_key) != _KEY or len(msg.signature) != _SIG:
        raise WireError("a member key is 32 bytes with a 64-byte signature")
    return MemberKey(msg.member_id, bytes(msg.public_key), bytes(msg.signature))


def set_signature_to_pb(s: SetSignature) -> pb.SetSignature:
    return pb.SetSignature(member_id=s.member_id, signature=s.signature)


def set_signature_from_pb(msg: pb.SetSignature) -> SetSignature:
    if len(msg.signature) != _SIG:
        raise WireError("a set signature is 64 bytes")
    return SetSignature(msg.member_id, bytes(msg.signature))


def _share_to_pb(s: ShareForMember) -> pb.ShareForMember:
    return pb.ShareForMember(
        client_id=s.client_id,
        ephemeral=s.ephemeral,
        masked_digest=s.masked_digest,
        share_digests=s.share_digests,
        sealed=s.sealed,
        signature=s.signature,
    )


def _share_from_pb(cfg: OneShotConfig, msg: pb.ShareForMember) -> ShareForMember:
    # Sizes only: a wrong size here is the aggregator's fault (it checked the upload); the
    # member's own checks (signature, AEAD) name the client.
    if (
        len(msg.ephemeral) != _KEY
        or len(msg.masked_digest) != _DIGEST
        or len(msg.share_digests) != _DIGEST * len(cfg.committee)
        or len(msg.sealed) != cfg.share_plain_bytes + _SEAL_OVERHEAD
        or len(msg.signature) != _SIG
    ):
        raise WireError(f"malformed share of client {msg.client_id}")
    return ShareForMember(
        msg.client_id,
        bytes(msg.ephemeral),
        bytes(msg.masked_digest),
        bytes(msg.share_digests),
        bytes(msg.sealed),
        bytes(msg.signature),
    )


def check_to_pb(cfg: OneShotConfig, req: CheckRequest) -> pb.CheckTask:
    return pb.CheckTask(
        config=config_to_pb(cfg),
        included=list(req.included),
        shares=[_share_to_pb(s) for s in req.shares],
    )


def check_from_pb(msg: pb.CheckTask) -> tuple[OneShotConfig, CheckRequest]:
    cfg = config_from_pb(msg.config)
    if len(msg.included) > cfg.n or len(msg.shares) != len(msg.included):
        raise WireError("a check task has one share per included client, at most n")
    assert cfg.session_id is not None
    shares = tuple(_share_from_pb(cfg, s) for s in msg.shares)
    return cfg, CheckRequest(cfg.session_id, cfg.round, tuple(msg.included), shares)


def release_to_pb(cfg: OneShotConfig, req: ReleaseRequest) -> pb.ReleaseTask:
    return pb.ReleaseTask(
        config=config_to_pb(cfg),
        included=list(req.included),
        signatures=[set_signature_to_pb(s) for s in req.signatures],
    )


def release_from_pb(msg: pb.ReleaseTask) -> tuple[OneShotConfig, ReleaseRequest]:
    cfg = config_from_pb(msg.config)
    if len(msg.included) > cfg.n or len(msg.signatures) > len(cfg.committee):
        raise WireError("a release task names at most n clients and c signatures")
    assert cfg.session_id is not None
    sigs = tuple(set_signature_from_pb(s) for s in msg.signatures)
    return cfg, ReleaseRequest(cfg.session_id, cfg.round, tuple(msg.included), sigs)


def share_sum_to_pb(s: ShareSum) -> pb.ShareSum:
    return pb.ShareSum(included=list(s.included), residues=s.residues)


def share_sum_from_pb(cfg: OneShotConfig, member: int, msg: pb.ShareSum) -> ShareSum:
    if len(msg.residues) != cfg.share_plain_bytes or len(msg.included) > cfg.n:
        raise WireError(f"a share sum is {cfg.share_plain_bytes} bytes")
    assert cfg.session_id is not None
    return ShareSum(member, cfg.session_id, cfg.round, tuple(msg.included), bytes(msg.residues))


def upload_parts(up: OneShotUpload) -> Iterable[pb.UploadPart]:
    """An upload as a stream of parts (header on part 0, masked bytes in 1 MiB slices)."""
    count = max(1, -(-len(up.masked) // PART_BYTES))
    for i in range(count):
        part = pb.UploadPart(
            round=up.round,
            session_id=up.session_id,
            sender=up.client_id,
            index=i,
            masked=up.masked[i * PART_BYTES : (i + 1) * PART_BYTES],
        )
        if i == 0:
            part.ephemeral = up.ephemeral
            part.shares.extend(up.shares)
            part.signature = up.signature
        yield part


class UploadAssembler:
    """Rebuilds one upload from its parts, refusing anything out of order, mixed, oversized or
    with header fields outside part 0; the masked length must end up exact."""

    def __init__(self, cfg: OneShotConfig) -> None:
        self.cfg = cfg
        self.header: pb.UploadPart | None = None
        self._masked = bytearray()
        self.parts = 0

    def add(self, part: pb.UploadPart) -> None:
        cfg = self.cfg
        if part.index != self.parts:
            raise WireError("upload parts out of order")
        if self.header is None:
            if len(part.shares) != len(cfg.committee):
                raise WireError("part 0 must carry one sealed share per committee member")
            if any(len(s) != cfg.share_plain_bytes + _SEAL_OVERHEAD for s in part.shares):
                raise WireError("a sealed share has the wrong size")
            if len(part.ephemeral) != _KEY or len(part.signature) != _SIG:
                raise WireError("part 0 carries a 32-byte ephemeral key and a 64-byte signature")
            self.header = part
        else:
            h = self.header
            if (part.sender, part.round, part.session_id) != (h.sender, h.round, h.session_id):
                raise WireError("upload parts mixed from different uploads")
            if part.shares or part.ephemeral or part.signature:
                raise WireError("header fields ride on part 0 only")
        if len(self._masked) + len(part.masked) > cfg.masked_bytes:
            raise WireError("more masked bytes than the round allows")
        self._masked += part.masked
        self.parts += 1

    def upload(self) -> OneShotUpload:
        h = self.header
        if h is None:
            raise WireError("an empty upload")
        if len(self._masked) != self.cfg.masked_bytes:
            raise WireError(
                f"masked chunks are {len(self._masked)} bytes, the round wants "
                f"{self.cfg.masked_bytes}"
            )
        return OneShotUpload(
            bytes(h.session_id),
            h.round,
            h.sender,
            bytes(self._masked),
            bytes(h.ephemeral),
            tuple(bytes(s) for s in h.shares),
            bytes(h.signature),
        )


def max_message_bytes(cfg: OneShotConfig) -> int:
    """The largest legitimate message of a round (a check task with every client's share, or
    one upload part), plus slack."""
    share = cfg.share_plain_bytes + _SEAL_OVERHEAD
    check = cfg.n * (share + _DIGEST * (len(cfg.committee) + 1) + _KEY + _SIG + 32)
    part = PART_BYTES + len(cfg.committee) * (share + 8) + 1024
    return max(check, part) + (1 << 16)
