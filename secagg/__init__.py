"""Secure aggregation core (docs/protocol.md): pure, sans-I/O, no torch or grpc.

Apps call :func:`simulate` for an in-memory round, or drive :class:`SecAggClient` and
:class:`SecAggServer` over their own transport.
"""

from secagg._errors import (
    AggregateMismatch,
    ConfigError,
    EncodingError,
    InconsistentView,
    InsufficientSurvivors,
    InvalidContribution,
    InvalidMessage,
    InvalidShare,
    InvalidSignature,
    KeyAgreementError,
    NormBoundExceeded,
    PolicyViolation,
    ProtocolAbort,
    SecAggError,
    UnexpectedMessage,
)
from secagg._rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.client import ClientState, SecAggClient
from secagg.config import PROTOCOL_VERSION, ClientPolicy, RoundConfig, Stage
from secagg.encoding import RingEncoding, pack_bits, unpack_bits
from secagg.server import RoundResult, SecAggServer, ServerState
from secagg.simulate import SimulationResult, simulate
from secagg.state import StateError, export_client, restore_client

__all__ = [
    "PROTOCOL_VERSION",
    "AggregateMismatch",
    "ClientPolicy",
    "ClientState",
    "ConfigError",
    "DeterministicRandom",
    "EncodingError",
    "InconsistentView",
    "InsufficientSurvivors",
    "InvalidContribution",
    "InvalidMessage",
    "InvalidShare",
    "InvalidSignature",
    "KeyAgreementError",
    "NormBoundExceeded",
    "PolicyViolation",
    "ProtocolAbort",
    "RandomSource",
    "RingEncoding",
    "RoundConfig",
    "RoundResult",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "ServerState",
    "SimulationResult",
    "Stage",
    "StateError",
    "SystemRandom",
    "UnexpectedMessage",
    "export_client",
    "pack_bits",
    "restore_client",
    "simulate",
    "unpack_bits",
]
