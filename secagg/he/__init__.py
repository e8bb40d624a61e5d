"""Homomorphic-encryption variant of secure aggregation (docs/protocol.md §6), on TenSEAL.

Three roles, three kinds of key material:

* :class:`HeKeyHolder` generates a fresh key set per round and decrypts only that round's final
  sum, once, and only if it holds at least ``min_cohort`` distinct registered contributors,
  each exactly once (per-round tags, :mod:`secagg.he.tags`);
* :class:`HeClient` (or :func:`encrypt_update`) holds an encrypt-only public context;
* :class:`HeAccumulator` (the aggregator) holds a parameters-only context (~90 bytes, no key)
  and adds ciphertexts as they arrive.

Parameters come from an allow-list of 128-bit sets (:mod:`secagg.he.params`). BFV (the default)
sums the ring-encoded integers exactly; CKKS carries the same integers approximately and the key
holder rounds them back to the grid and floods them with noise before release. Untrusted bytes
are parsed in worker processes by :class:`SafeDeserializer`. :func:`simulate_he` runs a round
in memory; :func:`simulate_round` picks pairwise masking or HE from the config's type.
Pure: no sockets, no clocks (except the optional worker timeout).
"""

from secagg.he._errors import (
    DecryptionRefused,
    DeserializerCrashed,
    ForgedSum,
    HeError,
    InvalidCiphertext,
    InvalidUpload,
    WeakParameters,
)
from secagg.he._ops import ChunkSpec, ContextKind, HeBackend, InProcessBackend
from secagg.he.accumulator import HeAccumulator
from secagg.he.client import HeClient, encrypt_update
from secagg.he.config import HE_PROTOCOL_VERSION, HeRoundConfig, PackingLayout
from secagg.he.keyholder import HeKeyHolder
from secagg.he.messages import (
    HeContribution,
    HeRelease,
    HeRoundKeys,
    HeSumMessage,
    HeUpload,
    context_digest,
)
from secagg.he.params import (
    ALLOWED_PARAMS,
    BFV_4096,
    CKKS_4096,
    CKKS_8192,
    DEFAULT_PARAMS,
    HeParams,
    HeScheme,
    get_params,
)
from secagg.he.sandbox import SafeDeserializer
from secagg.he.simulate import HeSimulationResult, simulate_he, simulate_round
from secagg.he.tags import SEALED_TAG_BYTES, check_slots

__all__ = [
    "ALLOWED_PARAMS",
    "BFV_4096",
    "CKKS_4096",
    "CKKS_8192",
    "DEFAULT_PARAMS",
    "HE_PROTOCOL_VERSION",
    "SEALED_TAG_BYTES",
    "ChunkSpec",
    "ContextKind",
    "DecryptionRefused",
    "DeserializerCrashed",
    "ForgedSum",
    "HeAccumulator",
    "HeBackend",
    "HeClient",
    "HeContribution",
    "HeError",
    "HeKeyHolder",
    "HeParams",
    "HeRelease",
    "HeRoundConfig",
    "HeRoundKeys",
    "HeScheme",
    "HeSimulationResult",
    "HeSumMessage",
    "HeUpload",
    "InProcessBackend",
    "InvalidCiphertext",
    "InvalidUpload",
    "PackingLayout",
    "SafeDeserializer",
    "WeakParameters",
    "check_slots",
    "context_digest",
    "encrypt_update",
    "get_params",
    "simulate_he",
    "simulate_round",
]
