"""protobuf <-> :mod:`secagg.he`, in one place, with every size bounded before anything is
parsed: a config must reproduce its digest, a sum or upload has exactly the round's number of
chunks, each within the parameter set's byte bounds, a released sum exactly ``8 d`` bytes.
Ciphertext bytes themselves are parsed only by a :class:`secagg.he.SafeDeserializer`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protos.secagg.he.v1 import he_pb2 as pb
from protos.wire import WireError
from secagg import ConfigError
from secagg.he import (
    SEALED_TAG_BYTES,
    HeContribution,
    HeRoundConfig,
    HeScheme,
    WeakParameters,
    get_params,
)

__all__ = [
    "WireError",
    "check_upload_fields",
    "config_from_pb",
    "config_to_pb",
    "contribution_from_pb",
    "contribution_to_pb",
    "int_sum_from_bytes",
    "int_sum_to_bytes",
    "max_message_bytes",
]

_SIGNATURE_BYTES = 64
_DIGEST_BYTES = 32


def check_upload_fields(sealed_tag: bytes, signature: bytes) -> None:
    """An upload's sealed tag and signature have exactly their fixed sizes."""
    if len(sealed_tag) != SEALED_TAG_BYTES or len(signature) != _SIGNATURE_BYTES:
        raise WireError(
            f"an upload carries a {SEALED_TAG_BYTES}-byte sealed tag and a "
            f"{_SIGNATURE_BYTES}-byte signature on its first chunk"
        )


def contribution_to_pb(c: HeContribution) -> pb.Contribution:
    return pb.Contribution(
        client_id=c.client_id,
        sealed_tag=c.sealed_tag,
        upload_digest=c.upload_digest,
        signature=c.signature,
    )


def contribution_from_pb(msg: pb.Contribution) -> HeContribution:
    """Sizes checked; the key holder checks the signature and opens the tag."""
    check_upload_fields(bytes(msg.sealed_tag), bytes(msg.signature))
    if len(msg.upload_digest) != _DIGEST_BYTES:
        raise WireError(f"an upload digest is {_DIGEST_BYTES} bytes")
    return HeContribution(
        msg.client_id, bytes(msg.sealed_tag), bytes(msg.upload_digest), bytes(msg.signature)
    )


def config_to_pb(cfg: HeRoundConfig) -> pb.HeRoundConfig:
    if cfg.session_id is None:
        raise WireError("the config has no session_id yet")
    return pb.HeRoundConfig(
        version=cfg.version,
        session_id=cfg.session_id,
        round=cfg.round,
        n=cfg.n,
        d=cfg.d,
        params=cfg.params,
        clip=cfg.clip,
        bits=cfg.encoding.bits,
        level_bits=cfg.level_bits,
        flood=cfg.flood_units,
        config_digest=cfg.digest,
    )


def config_from_pb(msg: pb.HeRoundConfig) -> HeRoundConfig:
    """Rebuild and validate; the digest must match (both sides derived the same encoding).
    :class:`secagg.he.WeakParameters` passes through: a non-allow-listed set is refused as such.
    """
    if len(msg.session_id) != 16 or len(msg.config_digest) != 32:
        raise WireError("session_id must be 16 bytes and config_digest 32")
    if len(msg.params) > 64:
        raise WireError("parameter set name too long")
    scheme_is_ckks = get_params(msg.params).scheme is HeScheme.CKKS
    try:
        cfg = HeRoundConfig(
            n=msg.n,
            d=msg.d,
            params=msg.params,
            clip=msg.clip,
            bits=msg.bits or None,
            level_bits=msg.level_bits,
            flood=msg.flood if scheme_is_ckks else None,
            session_id=bytes(msg.session_id),
            round=msg.round,
            version=msg.version,
        )
    except WeakParameters:
        raise
    except ConfigError as exc:
        raise WireError(f"bad round config: {exc}") from None
    if cfg.digest != bytes(msg.config_digest):
        raise WireError("config_digest does not match the parameters")
    return cfg


def int_sum_to_bytes(x: npt.NDArray[np.int64]) -> bytes:
    return np.ascontiguousarray(x, dtype="<i8").tobytes()


def int_sum_from_bytes(raw: bytes, d: int) -> npt.NDArray[np.int64]:
    if len(raw) != 8 * d:
        raise WireError(f"a released sum must be {8 * d} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


def max_message_bytes(cfg: HeRoundConfig) -> int:
    """The largest legitimate message of a round (the sum sent to the key holder, a round info
    with its public context, or a released sum), plus slack."""
    p = cfg.he_params
    chunk_hi = p.chunk_bounds()[1]
    sums = cfg.layout.chunks * (chunk_hi + 16) + cfg.n * (SEALED_TAG_BYTES + 128)
    keys = 2 * p.public_context_bounds()[1] + 8192  # (the 32-byte tag key fits the slack)
    release = 8 * cfg.d
    return max(sums, keys, release) + (1 << 16)
