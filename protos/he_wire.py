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
from secagg.he import HeRoundConfig, HeScheme, WeakParameters, get_params

__all__ = [
    "WireError",
    "config_from_pb",
    "config_to_pb",
    "int_sum_from_bytes",
    "int_sum_to_bytes",
    "max_message_bytes",
]


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
    sums = cfg.layout.chunks * (chunk_hi + 16)
    keys = 2 * p.public_context_bounds()[1] + 8192
    release = 8 * cfg.d
    return max(sums, keys, release) + (1 << 16)
