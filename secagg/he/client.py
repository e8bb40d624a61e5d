"""The client of an HE round: encode, pack, tag, encrypt under the key holder's public key, sign.

Security: the client holds a public context only (no secret key), so it cannot decrypt anyone's
ciphertext, its own included; unlike NVFlare, where every client shares the secret key, a client
colluding with the aggregator learns nothing beyond the released sum. The public context must
come from the key holder: the transport checks the key holder's signature over
:func:`secagg.he.context_digest` (which covers the round's tag key too) before handing the bytes
here. Each upload carries a fresh per-round tag (:mod:`secagg.he.tags`) sealed to the key holder
and is signed with the client's registered identity, so the key holder can check that the sum
holds it exactly once without ever seeing it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg._crypto import check_x25519_public, ed25519_sign
from secagg._errors import ConfigError, EncodingError
from secagg._rng import RandomSource, SystemRandom
from secagg.he._ops import ContextKind, load_context
from secagg.he.config import HeRoundConfig
from secagg.he.messages import HeUpload
from secagg.he.params import HeScheme
from secagg.he.tags import (
    LABEL_HE_UPLOAD,
    TAG_SEED_BYTES,
    seal_tag_seed,
    tag_values,
    upload_digest,
    upload_payload,
)

__all__ = ["HeClient", "encrypt_update"]


class HeClient:
    """Loads the round's public context once (checked against the allow-list and for keys it
    must not carry), then encrypts updates for that round."""

    def __init__(
        self,
        config: HeRoundConfig,
        public_context: bytes,
        tag_key: bytes,
        client_id: int,
        identity: Ed25519PrivateKey,
        *,
        rng: RandomSource | None = None,
        allow_deterministic_rng: bool = False,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        rng = rng if rng is not None else SystemRandom()
        if rng.deterministic and not allow_deterministic_rng:
            raise ConfigError("a deterministic RNG is for tests only (rounding coins, tags)")
        if not 0 < client_id < 2**32:
            raise ConfigError("client_id must be in [1, 2^32)")
        check_x25519_public(tag_key)
        self.config = config
        self.client_id = client_id
        self._identity = identity
        self._tag_key = bytes(tag_key)
        self._rng = rng
        self._ctx: Any = load_context(public_context, config.he_params, ContextKind.PUBLIC)

    def encrypt(self, x: npt.ArrayLike) -> HeUpload:
        """Clip, scale, randomly round (:class:`secagg.RingEncoding`), prepend the count field,
        pack, add this round's tags, encrypt (one ciphertext per ``slots_per_chunk`` data slots
        and ``check_slots`` tag slots), seal the tag seed to the key holder and sign.

        Security: the tag seed is fresh from ``rng`` (the OS CSPRNG) per upload and dropped
        here; only the key holder can open its sealed copy.
        """
        cfg = self.config
        arr = np.asarray(x)
        if arr.shape != (cfg.d,):
            raise EncodingError(f"input has shape {arr.shape}, expected ({cfg.d},)")
        enc, lay, params = cfg.encoding, cfg.layout, cfg.he_params
        fields = np.empty(cfg.d + 1, dtype=np.int64)
        fields[0] = 1  # the count: the decrypted sum says how many contributions it holds
        fields[1:] = enc.to_signed(enc.encode(arr, self._rng))
        data = lay.pack(fields).reshape(lay.chunks, lay.slots_per_chunk)
        slots = np.zeros((lay.chunks, lay.ciphertext_slots), dtype=np.int64)
        slots[:, : lay.slots_per_chunk] = data
        seed = self._rng.bytes(TAG_SEED_BYTES)
        if params.scheme is HeScheme.BFV:  # every slot padded modulo t
            pads = tag_values(seed, cfg.digest, self.client_id, params, cfg.n, slots.size)
            slots = np.mod(slots + pads.reshape(slots.shape), params.plain_modulus)
        else:  # CKKS: tags in the check slots only
            count = lay.chunks * lay.check_slots
            tags = tag_values(seed, cfg.digest, self.client_id, params, cfg.n, count)
            slots[:, lay.slots_per_chunk :] = tags.reshape(lay.chunks, lay.check_slots)
        chunks: list[bytes] = []
        for row in slots:
            if params.scheme is HeScheme.BFV:
                vec = ts.bfv_vector(self._ctx, row.tolist())
            else:
                vec = ts.ckks_vector(self._ctx, row.astype(np.float64).tolist())
            chunks.append(bytes(vec.serialize()))
        sealed = seal_tag_seed(cfg.digest, self.client_id, seed, self._tag_key, self._rng)
        del seed
        payload = upload_payload(self.client_id, sealed, upload_digest(chunks))
        sig = ed25519_sign(self._identity, LABEL_HE_UPLOAD, cfg.digest, payload)
        assert cfg.session_id is not None
        return HeUpload(cfg.session_id, cfg.round, tuple(chunks), self.client_id, sealed, sig)


def encrypt_update(
    config: HeRoundConfig,
    public_context: bytes,
    tag_key: bytes,
    client_id: int,
    identity: Ed25519PrivateKey,
    x: npt.ArrayLike,
    *,
    rng: RandomSource | None = None,
) -> HeUpload:
    """One-shot :class:`HeClient` (loads the context each call: keep a client for many)."""
    return HeClient(config, public_context, tag_key, client_id, identity, rng=rng).encrypt(x)
