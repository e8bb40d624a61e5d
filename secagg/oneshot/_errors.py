"""Errors of the one-shot variant: each refusal is typed, and names a culprit where it can."""

from __future__ import annotations

from collections.abc import Iterable

from secagg._errors import (
    AggregateMismatch,
    InsufficientSurvivors,
    InvalidMessage,
    InvalidShare,
    ProtocolAbort,
)

__all__ = [
    "Complaint",
    "EquivocationRefused",
    "InvalidUpload",
    "OneShotInsufficient",
    "ReleaseRefused",
    "UnmaskFailed",
]


class InvalidUpload(InvalidMessage):
    """A client's upload is malformed (sizes, residues out of range, bad signature, unknown or
    duplicate sender, wrong round): the sender is named and left out of the round."""


class Complaint(InvalidShare):
    """A committee member could not open or check the share of one or more clients; it signs
    nothing, and the aggregator leaves ``culprits`` out of the round (SPEC.md O6)."""

    def __init__(self, message: str, culprits: Iterable[int], *, party: int | None = None):
        self.culprits = tuple(sorted(set(culprits)))
        super().__init__(message, party=party, culprit=self.culprits[0] if self.culprits else None)


class EquivocationRefused(ProtocolAbort):
    """A committee member was asked to sign a second, different set, or to release for a set it
    did not sign, or to answer twice in one round: it refuses (SPEC.md O7)."""


class ReleaseRefused(ProtocolAbort):
    """A committee member will not release its share sum: too small a set, unregistered
    clients, too few matching signatures, an unknown round or a closed one."""


class OneShotInsufficient(InsufficientSurvivors):
    """Too few uploads, or too few committee members answered: nothing is released."""


class UnmaskFailed(AggregateMismatch):
    """After removing the summed masks, some coefficient is not within the error bound of a
    multiple of Delta (or out of the sum's range): some client's masked chunks do not match
    the secret it shared, or its shares were not on one polynomial. Nothing is published; the
    aggregator cannot tell which client it was (threat_models/oneshot.md, T9)."""
