"""Round parameters of the homomorphic variant and how an update is packed into slots.

Encoding (docs/protocol.md §5, reused): a client clips, scales and randomly rounds its vector with
:class:`secagg.RingEncoding`, giving integers in ``[-m, m]`` with ``n * m < 2^(w-1)`` for the
field width ``w``: the sum of ``n`` encoded vectors fits in ``w`` bits, signed.

Packing: a count field of value 1 comes first (the key holder reads the number of contributions
from the decrypted sum), then the ``d`` coordinates. ``k = payload_bits // w`` fields share one
slot as balanced base-``2^w`` digits, ``slot = sum_j f_j * 2^(w j)``. Because addition is
linear and every field sum stays below ``2^(w-1)`` in magnitude, the slot sums decompose back
into the field sums exactly: no offsets, no carries between fields, no wrap-around modulo the
plaintext modulus (BFV) or the scale's headroom (CKKS). Slots are laid out plane by plane (field
``j`` of slot ``s`` is value ``s + j * total_slots``) so packing is a reshape and a weighted sum.
Every ciphertext ends with ``check_slots`` slots that hold no data, only the clients' tags
(:mod:`secagg.he.tags`); BFV also pads every data slot with a tag modulo ``t``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import numpy.typing as npt

from secagg._crypto import sha256
from secagg._errors import ConfigError
from secagg.config import RoundConfig
from secagg.encoding import DEFAULT_LEVEL_BITS, RingEncoding
from secagg.he._errors import DecryptionRefused
from secagg.he.params import DEFAULT_PARAMS, HeParams, HeScheme, get_params
from secagg.he.tags import check_slots

__all__ = ["HE_PROTOCOL_VERSION", "HeRoundConfig", "PackingLayout"]

HE_PROTOCOL_VERSION = 2  # 2: per-round contribution tags and signed uploads
MAX_D = 1 << 28
LABEL_HE_CONFIG = b"secagg/he/v1/config"

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PackingLayout:
    """Where each field lives: ``values`` fields (count first), ``fields_per_slot`` per slot,
    ``slots_per_chunk`` data slots per ciphertext, followed in every ciphertext by
    ``check_slots`` slots that carry only the clients' tags (:mod:`secagg.he.tags`)."""

    field_bits: int
    fields_per_slot: int
    slots_per_chunk: int
    values: int
    check_slots: int = 0

    @property
    def ciphertext_slots(self) -> int:
        """Slots of one ciphertext: data then check slots."""
        return self.slots_per_chunk + self.check_slots

    @property
    def chunks(self) -> int:
        """Ciphertexts per upload."""
        used = -(-self.values // self.fields_per_slot)
        return -(-used // self.slots_per_chunk)

    @property
    def total_slots(self) -> int:
        return self.chunks * self.slots_per_chunk

    def pack(self, fields: I64) -> I64:
        """Signed fields (length ``values``) -> slot values, ``chunks * slots_per_chunk``."""
        f = np.zeros(self.fields_per_slot * self.total_slots, dtype=np.int64)
        f[: self.values] = fields
        planes = f.reshape(self.fields_per_slot, self.total_slots)
        out = np.zeros(self.total_slots, dtype=np.int64)
        for j in range(self.fields_per_slot):
            out += planes[j] << np.int64(self.field_bits * j)
        return out

    def unpack(self, slots: I64) -> I64:
        """Slot sums -> field sums (length ``values``), exactly inverting :meth:`pack` for any sum
        whose fields stay below ``2^(w-1)``; raises :class:`DecryptionRefused` on anything else
        (a slot with digits left over, or a non-zero padding field: not a sum of packed inputs)."""
        v = np.array(slots, dtype=np.int64)
        if v.shape != (self.total_slots,):
            raise DecryptionRefused("the decrypted sum has the wrong number of slots")
        w = np.int64(self.field_bits)
        half = np.int64(1) << (w - 1)
        full = np.int64(1) << w
        planes = np.empty((self.fields_per_slot, self.total_slots), dtype=np.int64)
        for j in range(self.fields_per_slot):
            digit = np.mod(v + half, full) - half
            planes[j] = digit
            v = (v - digit) >> w
        if np.any(v):
            raise DecryptionRefused("a slot does not decompose into field sums: not a valid sum")
        flat = planes.reshape(-1)
        if np.any(flat[self.values :]):
            raise DecryptionRefused("padding fields are not zero: not a valid sum")
        return flat[: self.values].copy()


@dataclass(frozen=True)
class HeRoundConfig:
    """Everything the parties of one HE round agree on (the analogue of
    :class:`secagg.RoundConfig`).

    ``n`` is the most clients the sum must hold without wrapping; ``params`` names an
    allow-listed parameter set (:mod:`secagg.he.params`), which fixes the scheme. ``bits`` and
    ``level_bits`` choose the ring encoding as in pairwise masking. ``flood`` (CKKS only) is the
    magnitude, in grid units, of the uniform integer noise the key holder adds to every released
    coordinate (docs/threats.md HE-02); ``None`` means ``n``, which at most doubles the worst-case
    rounding error.
    """

    n: int
    d: int
    params: str = DEFAULT_PARAMS.name
    clip: float = 1.0
    bits: int | None = None
    level_bits: int = DEFAULT_LEVEL_BITS
    flood: int | None = None
    session_id: bytes | None = None
    round: int = 0
    version: int = HE_PROTOCOL_VERSION

    def __post_init__(self) -> None:
        p = self.he_params  # WeakParameters for anything not allow-listed
        if not 2 <= self.n <= p.max_clients:
            raise ConfigError(f"n must be in [2, {p.max_clients}] for {p.name}")
        if not 1 <= self.d <= MAX_D:
            raise ConfigError(f"d must be in [1, {MAX_D}]")
        if self.session_id is not None and len(self.session_id) != 16:
            raise ConfigError("session_id must be 16 bytes")
        if not 0 <= self.round < 2**64:
            raise ConfigError("round must fit in 64 bits")
        if self.version != HE_PROTOCOL_VERSION:
            raise ConfigError(f"unsupported HE protocol version {self.version}")
        if self.flood is not None:
            if p.scheme is not HeScheme.CKKS:
                raise ConfigError("noise flooding applies to CKKS only (BFV sums are exact)")
            if not 0 <= self.flood < 2**31:
                raise ConfigError("flood must be in [0, 2^31)")
        w = self.encoding.bits
        if w > p.payload_bits:
            raise ConfigError(
                f"{w}-bit fields do not fit the {p.payload_bits}-bit slots of {p.name}: "
                "lower level_bits or bits"
            )

    @classmethod
    def from_round_config(
        cls, config: RoundConfig, params: str = DEFAULT_PARAMS.name
    ) -> HeRoundConfig:
        """The HE round that carries what ``config`` (pairwise masking) would: same n, d, clip,
        encoding, session and round."""
        return cls(
            n=config.n,
            d=config.d,
            params=params,
            clip=config.clip,
            bits=config.bits,
            level_bits=config.level_bits,
            session_id=config.session_id,
            round=config.round,
        )

    @property
    def he_params(self) -> HeParams:
        return get_params(self.params)

    @property
    def scheme(self) -> HeScheme:
        return self.he_params.scheme

    @cached_property
    def encoding(self) -> RingEncoding:
        return RingEncoding.choose(self.n, self.clip, self.bits, self.level_bits)

    @cached_property
    def layout(self) -> PackingLayout:
        p = self.he_params
        w = self.encoding.bits
        r = check_slots(p, self.n)
        return PackingLayout(w, p.payload_bits // w, p.slots - r, self.d + 1, r)

    @property
    def flood_units(self) -> int:
        """Flooding noise magnitude in grid units (0 for BFV)."""
        if self.scheme is HeScheme.BFV:
            return 0
        return self.n if self.flood is None else self.flood

    def error_bound(self, included: int) -> float:
        """Worst-case absolute error per coordinate of a released sum of ``included`` inputs:
        the randomized rounding of each input, plus the flooding noise (CKKS)."""
        return (included + self.flood_units) / self.encoding.scale

    def with_session(self, session_id: bytes, round_: int | None = None) -> HeRoundConfig:
        return replace(self, session_id=session_id, round=self.round if round_ is None else round_)

    def canonical(self) -> bytes:
        if self.session_id is None:
            raise ConfigError("the config has no session_id yet")
        enc, lay = self.encoding, self.layout
        doc = {
            "version": self.version,
            "mode": "he",
            "session_id": self.session_id.hex(),
            "round": self.round,
            "n": self.n,
            "d": self.d,
            "params": self.params,
            "bits": enc.bits,
            "clip": float(enc.clip).hex(),
            "scale": float(enc.scale).hex(),
            "fields_per_slot": lay.fields_per_slot,
            "chunks": lay.chunks,
            "check_slots": lay.check_slots,
            "flood": self.flood_units,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def digest(self) -> bytes:
        """Binds a public context (and its signature) to one session and round."""
        return sha256(LABEL_HE_CONFIG, self.canonical())

    def describe(self) -> str:
        lay = self.layout
        return (
            f"{self.params}: {lay.fields_per_slot} x {lay.field_bits}-bit fields per slot, "
            f"{lay.chunks} ciphertexts for d={self.d}"
        )
