"""TenSEAL glue shared by every role and by the sandbox's worker processes: contexts built only
from the allow-list, a context's parameters read back and checked, and ciphertexts parsed with
every metadata check. Nothing here trusts a byte it is given (docs/threats.md HE-04..HE-06).

``_sealapi_cpp`` ships inside the TenSEAL wheel; importing it registers SEAL's ``Modulus`` type
with pybind11, without which a context's coefficient moduli cannot be read back in Python.
"""

from __future__ import annotations

import ctypes
import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import _sealapi_cpp  # type: ignore[import-not-found]  # noqa: F401  (registers seal::Modulus)
import tenseal as ts  # type: ignore[import-untyped]

from secagg.he._errors import InvalidCiphertext, WeakParameters
from secagg.he.params import HeParams, HeScheme, find_params

__all__ = [
    "ChunkSpec",
    "ContextKind",
    "HeBackend",
    "InProcessBackend",
    "accumulate_pairs",
    "load_chunk",
    "load_context",
    "new_context",
    "params_of",
    "serialize_parameters",
    "serialize_public",
    "worker_accumulate",
    "worker_check_context",
]

PARAMETERS_CONTEXT_MAX = 512  # a keyless context is ~90 bytes of parameters


class ContextKind(enum.Enum):
    """Which keys a context may carry: none (aggregator), the public key only (clients)."""

    PARAMETERS = "parameters"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """What every ciphertext of a round must look like; picklable (it travels to workers)."""

    params: HeParams
    parameters_context: bytes


def new_context(params: HeParams) -> Any:
    """A fresh context with a fresh secret key, for the key holder only.

    Security: key generation draws from SEAL's own CSPRNG (not injectable). The parameters are
    read back and compared with the allow-list, so TenSEAL cannot silently pick other primes.
    """
    bits = list(params.coeff_bits)
    if params.scheme is HeScheme.BFV:
        ctx = ts.context(
            ts.SCHEME_TYPE.BFV, params.poly_modulus_degree, params.plain_modulus, bits, n_threads=1
        )
    else:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree, coeff_mod_bit_sizes=bits, n_threads=1
        )
        ctx.global_scale = float(2**params.scale_bits)
    if params_of(ctx) != params:
        raise WeakParameters(f"TenSEAL built other parameters than {params.name}")
    return ctx


def serialize_public(ctx: Any) -> bytes:
    """Encrypt-only: the public key, no secret key, no Galois or relinearisation keys."""
    data: bytes = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


def serialize_parameters(ctx: Any) -> bytes:
    """Parameters only (no key at all): enough to parse and add ciphertexts, nothing more."""
    data: bytes = ctx.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


def params_of(ctx: Any) -> HeParams:
    """The allow-listed set a loaded context uses, or :class:`WeakParameters`."""
    parms = ctx.seal_context().data.key_context_data().parms()
    scheme_name = str(parms.scheme().name).lower()
    if scheme_name not in ("bfv", "ckks"):
        raise WeakParameters(f"scheme {scheme_name} is not supported")
    scheme = HeScheme(scheme_name)
    moduli = tuple(int(q.value()) for q in parms.coeff_modulus())
    plain = int(parms.plain_modulus().value()) if scheme is HeScheme.BFV else 0
    scale_bits = 0
    if scheme is HeScheme.CKKS:
        try:
            scale = float(ctx.global_scale)
        except ValueError:
            raise WeakParameters("a CKKS context without a scale") from None
        exp = math.log2(scale) if scale > 0 else -1.0
        if exp != int(exp):
            raise WeakParameters(f"CKKS scale {scale} is not a power of two")
        scale_bits = int(exp)
    return find_params(scheme, int(parms.poly_modulus_degree()), moduli, plain, scale_bits)


def load_context(data: bytes, params: HeParams, kind: ContextKind) -> Any:
    """Parse a serialized context, then refuse it unless it uses exactly ``params`` and carries
    exactly the keys ``kind`` allows (docs/threats.md HE-01, HE-04)."""
    # Only the upper bound before parsing (memory); the lower one after the parameters are
    # known to be right, so that a context of other parameters is reported as such.
    if kind is ContextKind.PARAMETERS:
        lo, hi = 16, PARAMETERS_CONTEXT_MAX
    else:
        lo, hi = params.public_context_bounds()
    if not 16 <= len(data) <= hi:
        raise InvalidCiphertext(f"a {kind.value} context of {len(data)} bytes (at most {hi})")
    try:
        ctx = ts.context_from(bytes(data), n_threads=1)
    except Exception as exc:  # the native library raises assorted types
        raise InvalidCiphertext(f"the {kind.value} context does not parse: {exc}") from None
    got = params_of(ctx)
    if got != params:
        raise WeakParameters(f"the context is for {got.name}, the round uses {params.name}")
    if ctx.has_secret_key() or ctx.is_private():
        raise InvalidCiphertext(f"a {kind.value} context must not carry the secret key (HE-01)")
    if ctx.has_galois_keys() or ctx.has_relin_keys():
        raise InvalidCiphertext(f"a {kind.value} context must not carry Galois or relin keys")
    if ctx.has_public_key() != (kind is ContextKind.PUBLIC):
        want = "must carry" if kind is ContextKind.PUBLIC else "must not carry"
        raise InvalidCiphertext(f"a {kind.value} context {want} the public key")
    if len(data) < lo:
        raise InvalidCiphertext(f"a {kind.value} context of {len(data)} bytes is below {lo}")
    return ctx


def load_chunk(ctx: Any, params: HeParams, data: bytes) -> Any:
    """Parse one ciphertext chunk and check its metadata before anyone adds it (HE-05, HE-06):
    size within :meth:`HeParams.chunk_bounds`, one fresh two-polynomial ciphertext at the first
    data level, ``slots`` values, the round's scale (CKKS), not transparent."""
    lo, hi = params.chunk_bounds()
    if not lo <= len(data) <= hi:
        raise InvalidCiphertext(f"a ciphertext of {len(data)} bytes is outside [{lo}, {hi}]")
    try:
        if params.scheme is HeScheme.BFV:
            vec = ts.bfv_vector_from(ctx, bytes(data))
        else:
            vec = ts.ckks_vector_from(ctx, bytes(data))
        cts = vec.ciphertext()
        size = int(vec.size())
    except Exception as exc:
        raise InvalidCiphertext(f"the ciphertext does not parse: {exc}") from None
    if len(cts) != 1 or size != params.slots:
        raise InvalidCiphertext(
            f"a chunk must be one ciphertext of {params.slots} slots, got {len(cts)} of {size}"
        )
    ct = cts[0]
    first = list(ctx.seal_context().data.first_parms_id())
    if int(ct.size()) != 2 or list(ct.parms_id()) != first or ct.is_transparent():
        raise InvalidCiphertext("not a fresh ciphertext at the first data level (HE-06)")
    if params.scheme is HeScheme.CKKS:
        if float(ct.scale) != float(2**params.scale_bits) or not ct.is_ntt_form():
            raise InvalidCiphertext(f"CKKS scale {ct.scale} is not 2^{params.scale_bits} (HE-06)")
    elif ct.is_ntt_form():
        raise InvalidCiphertext("a BFV ciphertext in NTT form (HE-06)")
    return vec


_CONTEXTS: dict[bytes, Any] = {}


def _parameters_context(spec: ChunkSpec) -> Any:
    ctx = _CONTEXTS.get(spec.parameters_context)
    if ctx is None:
        ctx = load_context(spec.parameters_context, spec.params, ContextKind.PARAMETERS)
        if len(_CONTEXTS) >= 8:
            _CONTEXTS.clear()
        _CONTEXTS[spec.parameters_context] = ctx
    return ctx


def accumulate_pairs(spec: ChunkSpec, pairs: Sequence[tuple[bytes | None, bytes]]) -> list[bytes]:
    """For each ``(running_sum, chunk)``: parse and check both, add, serialize the new sum. A
    ``None`` sum returns the chunk re-serialized by SEAL (a canonical copy)."""
    ctx = _parameters_context(spec)
    out: list[bytes] = []
    for total, chunk in pairs:
        vec = load_chunk(ctx, spec.params, chunk)
        if total is not None:
            acc = load_chunk(ctx, spec.params, total)
            acc.add_(vec)
            vec = acc
        out.append(bytes(vec.serialize()))
    return out


class HeBackend(Protocol):
    """Where untrusted HE bytes are parsed: in process (:class:`InProcessBackend`) or in
    sandboxed workers (:class:`secagg.he.SafeDeserializer`)."""

    def check_context(self, data: bytes, params: HeParams, kind: ContextKind) -> None:
        """Raise unless ``data`` is a context of ``params`` carrying only what ``kind`` allows."""
        ...

    def accumulate(
        self, spec: ChunkSpec, sums: Sequence[bytes | None], chunks: Sequence[bytes]
    ) -> list[bytes]:
        """``[sum_i + chunk_i]`` serialized; all or nothing."""
        ...


class InProcessBackend:
    """Parses in the calling process. For inputs the caller already trusts (simulation, tests,
    benchmarks); a service facing the network uses :class:`secagg.he.SafeDeserializer`."""

    def check_context(self, data: bytes, params: HeParams, kind: ContextKind) -> None:
        load_context(data, params, kind)

    def accumulate(
        self, spec: ChunkSpec, sums: Sequence[bytes | None], chunks: Sequence[bytes]
    ) -> list[bytes]:
        return accumulate_pairs(spec, list(zip(sums, chunks, strict=True)))


# -- worker-process entry points (see secagg.he.sandbox) ------------------------------------
# They return ("ok", value) or ("err", error class name, message) instead of raising, so that
# nothing but plain data crosses the process boundary.

_Result = tuple[str, Any] | tuple[str, str, str]


def _crash_if_marked(marker: bytes | None, blobs: Sequence[bytes | None]) -> None:
    """Test-only hook: die like a native crash (SIGSEGV) on an input holding ``marker``."""
    if marker and any(b is not None and marker in b for b in blobs):
        ctypes.string_at(0)  # reads address 0: the process gets SIGSEGV


def worker_accumulate(
    spec: ChunkSpec, pairs: Sequence[tuple[bytes | None, bytes]], marker: bytes | None
) -> _Result:
    _crash_if_marked(marker, [c for _, c in pairs])
    try:
        return ("ok", accumulate_pairs(spec, pairs))
    except (InvalidCiphertext, WeakParameters) as exc:
        return ("err", type(exc).__name__, str(exc))


def worker_check_context(
    data: bytes, params: HeParams, kind: ContextKind, marker: bytes | None
) -> _Result:
    _crash_if_marked(marker, [data])
    try:
        load_context(data, params, kind)
        return ("ok", None)
    except (InvalidCiphertext, WeakParameters) as exc:
        return ("err", type(exc).__name__, str(exc))
