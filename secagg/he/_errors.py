"""Errors of the homomorphic variant: every failed check raises one of these (all SecAggError)."""

from __future__ import annotations

from secagg._errors import ConfigError, SecAggError

__all__ = [
    "DecryptionRefused",
    "DeserializerCrashed",
    "ForgedSum",
    "HeError",
    "InvalidCiphertext",
    "InvalidUpload",
    "WeakParameters",
]


class HeError(SecAggError):
    """Base of every error raised by :mod:`secagg.he`."""


class WeakParameters(HeError, ConfigError):
    """Encryption parameters outside the allow-list of 128-bit parameter sets (docs/threats.md
    HE-04), whether asked for by name, built by hand, or found inside a serialized context."""


class InvalidCiphertext(HeError):
    """Ciphertext or context bytes that are the wrong size, do not parse, or carry the wrong
    metadata (parameters, level, scale, slot count, keys): docs/threats.md HE-05 and HE-06."""


class DeserializerCrashed(InvalidCiphertext):
    """The native library died while parsing this input (a signal or an exit in the worker
    process). The input is rejected and the worker pool restarted (docs/threats.md HE-05)."""


class DecryptionRefused(HeError):
    """The key holder will not decrypt: not a round it issued keys for, already decrypted, or
    not a sum of at least ``min_cohort`` contributions (docs/threats.md HE-02, HE-03)."""


class InvalidUpload(InvalidCiphertext):
    """An upload whose signature does not verify under its sender's registered identity, or
    whose sealed tag is malformed: refused before it is added (threat_models/he.md)."""


class ForgedSum(DecryptionRefused):
    """The sum is not the claimed contributors' uploads, each once: a claimed contributor is
    unregistered or unsigned, a sealed tag does not open, or the check slots do not hold the
    sum of the claimed contributors' tags (threat_models/he.md, "Tags"). Nothing is released."""
