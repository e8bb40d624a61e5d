"""The client of an HE round: encode, pack, encrypt under the key holder's public key.

Security: the client holds a public context only (no secret key), so it cannot decrypt anyone's
ciphertext, its own included; unlike NVFlare, where every client shares the secret key, a client
colluding with the aggregator learns nothing beyond the released sum. The public context must
come from the key holder: the transport checks the key holder's signature over
:func:`secagg.he.context_digest` before handing the bytes here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts  # type: ignore[import-untyped]

from secagg._errors import ConfigError, EncodingError
from secagg._rng import RandomSource, SystemRandom
from secagg.he._ops import ContextKind, load_context
from secagg.he.config import HeRoundConfig
from secagg.he.messages import HeUpload
from secagg.he.params import HeScheme

__all__ = ["HeClient", "encrypt_update"]


class HeClient:
    """Loads the round's public context once (checked against the allow-list and for keys it
    must not carry), then encrypts updates for that round."""

    def __init__(
        self,
        config: HeRoundConfig,
        public_context: bytes,
        *,
        rng: RandomSource | None = None,
        allow_deterministic_rng: bool = False,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        rng = rng if rng is not None else SystemRandom()
        if rng.deterministic and not allow_deterministic_rng:
            raise ConfigError("a deterministic RNG is for tests only (rounding coins)")
        self.config = config
        self._rng = rng
        self._ctx: Any = load_context(public_context, config.he_params, ContextKind.PUBLIC)

    def encrypt(self, x: npt.ArrayLike) -> HeUpload:
        """Clip, scale, randomly round (:class:`secagg.RingEncoding`), prepend the count field,
        pack and encrypt: one ciphertext per ``slots`` packed slots."""
        cfg = self.config
        arr = np.asarray(x)
        if arr.shape != (cfg.d,):
            raise EncodingError(f"input has shape {arr.shape}, expected ({cfg.d},)")
        enc, lay, params = cfg.encoding, cfg.layout, cfg.he_params
        fields = np.empty(cfg.d + 1, dtype=np.int64)
        fields[0] = 1  # the count: the decrypted sum says how many contributions it holds
        fields[1:] = enc.to_signed(enc.encode(arr, self._rng))
        slots = lay.pack(fields)
        step = lay.slots_per_chunk
        chunks: list[bytes] = []
        for lo in range(0, lay.total_slots, step):
            part = slots[lo : lo + step]
            if params.scheme is HeScheme.BFV:
                vec = ts.bfv_vector(self._ctx, part.tolist())
            else:
                vec = ts.ckks_vector(self._ctx, part.astype(np.float64).tolist())
            chunks.append(bytes(vec.serialize()))
        assert cfg.session_id is not None
        return HeUpload(cfg.session_id, cfg.round, tuple(chunks))


def encrypt_update(
    config: HeRoundConfig,
    public_context: bytes,
    x: npt.ArrayLike,
    *,
    rng: RandomSource | None = None,
) -> HeUpload:
    """One-shot :class:`HeClient` (loads the context each call: keep a client for many)."""
    return HeClient(config, public_context, rng=rng).encrypt(x)
