"""One error hierarchy for :mod:`dp`: failed checks raise one of these, never return False."""

from __future__ import annotations

__all__ = [
    "InsecureRandomness",
    "InsufficientSurvivors",
    "InvalidParameter",
    "InvalidVector",
    "PrivacyError",
    "RoundingFailure",
    "WrapAroundRisk",
]


class PrivacyError(Exception):
    """Base of every error raised by :mod:`dp`."""


class InvalidParameter(PrivacyError, ValueError):
    """A privacy or encoding parameter is out of its domain (it cannot work at all)."""


class InvalidVector(PrivacyError, ValueError):
    """An input or ring vector is malformed: wrong shape or dtype, NaN/Inf, out of the ring."""


class WrapAroundRisk(PrivacyError):
    """The ring is too small: the noisy sum could wrap around with probability >= the bound."""


class InsecureRandomness(PrivacyError):
    """A deterministic (seeded) randomness source reached a path that demands the OS CSPRNG."""


class InsufficientSurvivors(PrivacyError):
    """Fewer clients survived than the noise was calibrated for: the sum is under-noised."""


class RoundingFailure(PrivacyError):
    """Conditional randomized rounding did not meet its norm bound within the retry budget."""
