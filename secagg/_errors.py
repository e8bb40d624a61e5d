"""One error hierarchy for the protocol core: every failed check raises one of these."""

from __future__ import annotations

__all__ = [
    "AggregateMismatch",
    "ConfigError",
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
    "SecAggError",
    "UnexpectedMessage",
]


class SecAggError(Exception):
    """Base of every error raised by :mod:`secagg`."""


class ConfigError(SecAggError, ValueError):
    """A round configuration is malformed (not a policy question: it cannot work at all)."""


class EncodingError(SecAggError, ValueError):
    """An input cannot be encoded into the ring (NaN/Inf, wrong shape or dtype, out of range)."""


class NormBoundExceeded(EncodingError):
    """This client's encoded vector is above the round's norm bound: it cannot prove otherwise,
    so it does not take part in the round (docs/protocol.md §7)."""


class ProtocolAbort(SecAggError):
    """The round must stop: continuing could reveal more than the protocol promises.

    ``party`` names who detected it (a client id, or 0 for the server) and ``culprit`` names a
    party the evidence points to, when there is one.
    """

    def __init__(self, message: str, *, party: int | None = None, culprit: int | None = None):
        super().__init__(message)
        self.party = party
        self.culprit = culprit


class PolicyViolation(ProtocolAbort):
    """The server's round parameters fall below the client's local policy floor
    (docs/protocol.md §2)."""


class UnexpectedMessage(ProtocolAbort):
    """A message arrived out of order, twice, for another party, or for another round."""


class InvalidMessage(ProtocolAbort):
    """A message is malformed: wrong sizes, unknown ids, values out of range."""


class InvalidSignature(ProtocolAbort):
    """An Ed25519 signature does not verify against the registered identity key."""


class KeyAgreementError(ProtocolAbort):
    """An X25519 public key is malformed or of low order, or the shared secret is all zero."""


class InvalidShare(ProtocolAbort):
    """A Shamir share or its ciphertext fails authentication, its commitment, or reconstruction."""


class InconsistentView(ProtocolAbort):
    """The server showed this party a view (keys, graph, survivors) that contradicts another."""


class InsufficientSurvivors(ProtocolAbort):
    """Too few parties remain for the threshold or the minimum cohort: no output is produced."""


class InvalidContribution(InvalidMessage):
    """A masked input's commitment or norm proof is malformed or does not verify (docs/protocol.md
    §7): the sender is excluded before anything is unmasked."""


class AggregateMismatch(ProtocolAbort):
    """After unmasking, the sum of the survivors' commitments does not open to the unmasked sum:
    some client's masked vector is not the one it committed to. Nothing is published. The
    aggregator cannot tell which client cheated (it never sees an individual vector)."""
