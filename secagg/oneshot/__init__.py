"""One-shot secure aggregation (SPEC.md O1..O9): each client sends one message and leaves.

A client masks its encoded vector with RLWE key-additive masks ``a_k * s + e_k`` under a fresh
ternary secret ``s`` and Shamir-shares ``s`` coefficient-wise to a small decryptor committee,
each share sealed to its member, all in its single upload. The aggregator sums the uploads;
the committee (``threshold`` > c / 2 of c members, each answering once per round, for one
signed set of at least ``min_cohort`` registered clients) releases only the sum of the shares,
from which the aggregator removes ``a_k * sum(s)`` and rounds the summed errors away.

Roles: :class:`OneShotClient`, :class:`CommitteeMember`, :class:`OneShotAggregator`;
:func:`simulate_oneshot` runs a round in memory. Pure: no sockets, clocks or global RNG.
"""

from secagg.oneshot._errors import (
    Complaint,
    EquivocationRefused,
    InvalidUpload,
    OneShotInsufficient,
    ReleaseRefused,
    UnmaskFailed,
)
from secagg.oneshot.client import OneShotClient, check_member_keys
from secagg.oneshot.committee import CommitteeMember
from secagg.oneshot.config import (
    HE_STANDARD_128,
    ONESHOT_PROTOCOL_VERSION,
    RING_DIM,
    OneShotConfig,
    OneShotPolicy,
    error_bound,
    plaintext_bits_for,
)
from secagg.oneshot.messages import (
    CheckRequest,
    MemberKey,
    OneShotResult,
    OneShotUpload,
    ReleaseRequest,
    SetSignature,
    ShareForMember,
    ShareSum,
)
from secagg.oneshot.server import OneShotAggregator
from secagg.oneshot.simulate import MEMBER_STAGES, OneShotSimulationResult, simulate_oneshot

__all__ = [
    "HE_STANDARD_128",
    "MEMBER_STAGES",
    "ONESHOT_PROTOCOL_VERSION",
    "RING_DIM",
    "CheckRequest",
    "CommitteeMember",
    "Complaint",
    "EquivocationRefused",
    "InvalidUpload",
    "MemberKey",
    "OneShotAggregator",
    "OneShotClient",
    "OneShotConfig",
    "OneShotInsufficient",
    "OneShotPolicy",
    "OneShotResult",
    "OneShotSimulationResult",
    "OneShotUpload",
    "ReleaseRefused",
    "ReleaseRequest",
    "SetSignature",
    "ShareForMember",
    "ShareSum",
    "UnmaskFailed",
    "check_member_keys",
    "error_bound",
    "plaintext_bits_for",
    "simulate_oneshot",
]
