"""The key holder: issues a fresh key set per round and decrypts that round's final sum, once.

Rules (the only path to a ``decrypt()`` call in the code base; a test checks that):

1. :meth:`HeKeyHolder.open_round` generates a fresh secret key for one ``(session, round)`` and
   hands out an encrypt-only context (clients) and a keyless one (aggregator). Never twice for
   the same pair.
2. :meth:`HeKeyHolder.release` decrypts only a :class:`HeSumMessage` carrying a
   ``(session, round)`` it issued keys for and has not decrypted yet. Malformed bytes are
   refused before decryption; from the first decryption on, the key is destroyed whatever the
   outcome: one decryption per round.
3. It releases only a sum of distinct registered contributors, each counted once: every
   claimed contributor must be in the registry and have signed its sealed tag and chunk digest
   (Ed25519, :mod:`secagg.he.tags`), every sealed tag must open under the round's tag key, and
   the check slots of every ciphertext must hold exactly the sum of the claimed contributors'
   tags (BFV: after subtracting every claimed pad modulo ``t``, the check slots are zero).
   Then the count field must lie in ``[min_cohort, n]`` and equal the number of claimed
   contributors, every coordinate must be reachable by that many inputs, padding must be zero
   (docs/threats.md HE-03; threat_models/he.md). Its own ``min_cohort`` is a policy floor,
   independent of the round's parameters. It never sees an individual ciphertext.
4. CKKS (docs/threats.md HE-02): the decryption is rounded to the encoding grid (refused if any slot
   is further than 1/4 from it: noise beyond the parameter set's bound), then every coordinate
   gets uniform integer noise in ``[-flood, flood]`` grid units before release. Raw decryptions
   never leave this object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg._crypto import ed25519_verify, x25519_keypair
from secagg._errors import ConfigError, InvalidSignature
from secagg._rng import RandomSource, SystemRandom, uniform_floats
from secagg.he._errors import DecryptionRefused, ForgedSum, HeError, InvalidCiphertext
from secagg.he._ops import (
    ChunkSpec,
    HeBackend,
    load_chunk,
    new_context,
    serialize_parameters,
    serialize_public,
)
from secagg.he.config import HeRoundConfig
from secagg.he.messages import HeRelease, HeRoundKeys, HeSumMessage
from secagg.he.params import HeScheme
from secagg.he.tags import LABEL_HE_UPLOAD, open_tag_seed, tag_values, upload_payload

__all__ = ["HeKeyHolder"]

_MAX_OPEN_ROUNDS = 64
_CKKS_ROUNDING_SLACK = 0.25


class HeKeyHolder:
    """Holds one secret key per open round. ``registry`` maps every consortium member's id to
    its Ed25519 identity key (the only contributors it accepts). ``backend`` (e.g. a
    :class:`secagg.he.SafeDeserializer`) re-serializes the aggregator's bytes in a sandbox
    before they are parsed next to the secret key; ``rng`` draws the round tag keys and the
    CKKS flooding noise."""

    def __init__(
        self,
        registry: Mapping[int, bytes],
        *,
        min_cohort: int = 3,
        rng: RandomSource | None = None,
        backend: HeBackend | None = None,
        allow_deterministic_rng: bool = False,
    ) -> None:
        if min_cohort < 2:
            raise ConfigError("min_cohort must be at least 2: a sum of one input is that input")
        rng = rng if rng is not None else SystemRandom()
        if rng.deterministic and not allow_deterministic_rng:
            raise ConfigError("a deterministic RNG is for tests only (flooding noise)")
        self.min_cohort = min_cohort
        self.registry = dict(registry)
        self.backend = backend
        self._rng = rng
        self._open: dict[tuple[bytes, int], tuple[HeRoundConfig, Any, bytes, bytes]] = {}
        self._spent: set[tuple[bytes, int]] = set()

    @property
    def open_rounds(self) -> frozenset[tuple[bytes, int]]:
        return frozenset(self._open)

    def open_round(self, config: HeRoundConfig) -> HeRoundKeys:
        """Fresh keys for ``config``'s session and round."""
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        key = (config.session_id, config.round)
        if key in self._open or key in self._spent:
            raise HeError("keys for this session and round were already issued")
        if len(self._open) >= _MAX_OPEN_ROUNDS:
            raise HeError(f"more than {_MAX_OPEN_ROUNDS} rounds open: close some first")
        ctx = new_context(config.he_params)
        tag_sk, tag_pk = x25519_keypair(self._rng)  # Security: fresh per round, never leaves
        keys = HeRoundKeys(config, serialize_public(ctx), serialize_parameters(ctx), tag_pk)
        self._open[key] = (config, ctx, tag_sk, tag_pk)
        return keys

    def forget(self, session_id: bytes, round_: int) -> None:
        """Destroy a round's key unused (the round was aborted)."""
        key = (bytes(session_id), round_)
        if self._open.pop(key, None) is not None:
            self._spent.add(key)

    def _claimed_tags(
        self, cfg: HeRoundConfig, message: HeSumMessage, tag_sk: bytes, tag_pk: bytes
    ) -> npt.NDArray[np.int64]:
        """The sum of the claimed contributors' tags, one row per ciphertext (all slots for BFV,
        the check slots for CKKS), after checking who they are; :class:`ForgedSum` otherwise."""
        params, lay = cfg.he_params, cfg.layout
        contribs = message.contributions
        if tuple(c.client_id for c in contribs) != tuple(message.included):
            raise ForgedSum("the signed contributions do not match the claimed contributors")
        width = lay.ciphertext_slots if params.scheme is HeScheme.BFV else lay.check_slots
        total = np.zeros(lay.chunks * width, dtype=np.int64)
        for c in contribs:
            pk = self.registry.get(c.client_id)
            if pk is None:
                raise ForgedSum(f"claimed contributor {c.client_id} is not registered")
            if len(c.upload_digest) != 32:
                raise ForgedSum(f"contributor {c.client_id}'s upload digest is malformed")
            try:
                ed25519_verify(
                    pk,
                    c.signature,
                    LABEL_HE_UPLOAD,
                    cfg.digest,
                    upload_payload(c.client_id, c.sealed_tag, c.upload_digest),
                    who=c.client_id,
                )
            except InvalidSignature:
                raise ForgedSum(
                    f"claimed contributor {c.client_id} did not sign this contribution"
                ) from None
            seed = open_tag_seed(cfg.digest, c.client_id, c.sealed_tag, tag_sk, tag_pk)
            vals = tag_values(seed, cfg.digest, c.client_id, params, cfg.n, total.size)
            if params.scheme is HeScheme.BFV:
                total = np.mod(total + vals, params.plain_modulus)
            else:
                total += vals
        return total.reshape(lay.chunks, width)

    def release(self, message: HeSumMessage) -> HeRelease:
        """Decrypt a round's final sum and release it (see the module docstring), or raise
        :class:`DecryptionRefused` / :class:`InvalidCiphertext`."""
        key = (bytes(message.session_id), message.round)
        if key in self._spent:
            raise DecryptionRefused("this round's sum was already decrypted: one decryption only")
        entry = self._open.get(key)
        if entry is None:
            raise DecryptionRefused("no key set was issued for this session and round")
        cfg, ctx, tag_sk, tag_pk = entry
        params, lay, enc = cfg.he_params, cfg.layout, cfg.encoding
        claimed = len(set(message.included))
        if claimed != len(message.included) or claimed < self.min_cohort:
            raise DecryptionRefused(
                f"{claimed} contributors claimed, below the minimum cohort {self.min_cohort}"
            )
        if len(message.chunks) != lay.chunks:
            raise InvalidCiphertext(f"{len(message.chunks)} chunks, the round has {lay.chunks}")
        tags = self._claimed_tags(cfg, message, tag_sk, tag_pk)
        chunks = list(message.chunks)
        if self.backend is not None:  # parse the aggregator's bytes in a sandbox first
            spec = ChunkSpec(params, serialize_parameters(ctx))
            chunks = self.backend.accumulate(spec, [None] * len(chunks), chunks)
        vectors = [load_chunk(ctx, params, c) for c in chunks]

        # From here on the key is spent, whatever the outcome.
        del self._open[key]
        self._spent.add(key)
        raw = np.stack([np.asarray(v.decrypt()) for v in vectors])
        if raw.shape != (lay.chunks, lay.ciphertext_slots):
            raise DecryptionRefused("the decrypted sum has the wrong number of slots")
        if params.scheme is HeScheme.CKKS:
            limit = float(2 ** (params.payload_bits - 1))
            if not np.all(np.isfinite(raw)) or np.any(np.abs(raw) >= limit):
                raise DecryptionRefused("the decrypted slots are out of range: not a valid sum")
            grid = np.rint(raw)
            if np.any(np.abs(raw - grid) > _CKKS_ROUNDING_SLACK):
                raise DecryptionRefused(
                    "CKKS noise beyond the parameter set's bound: nothing is released (HE-02)"
                )
            slots = grid.astype(np.int64)
            check = slots[:, lay.slots_per_chunk :] - tags
        else:  # remove every claimed pad; BFV decrypts to centred values mod t
            t = params.plain_modulus
            slots = np.mod(raw.astype(np.int64) - tags, t)
            slots = np.where(slots > t // 2, slots - t, slots)
            check = slots[:, lay.slots_per_chunk :]
        if np.any(check != 0):
            raise ForgedSum(
                "the check slots do not hold the claimed contributors' tags: the sum is not "
                "their uploads, each once (threat_models/he.md); nothing is released"
            )
        fields = lay.unpack(slots[:, : lay.slots_per_chunk].reshape(-1))
        count = int(fields[0])
        if not self.min_cohort <= count <= cfg.n:
            raise DecryptionRefused(
                f"the sum holds {count} contributions; the key holder releases only sums of "
                f"{self.min_cohort}..{cfg.n} (HE-03)"
            )
        if count != claimed:
            raise DecryptionRefused(
                f"the aggregator claims {claimed} contributions, the sum holds {count}"
            )
        data = fields[1:]
        if np.any(np.abs(data) > count * enc.max_abs):
            raise DecryptionRefused("a coordinate exceeds what the contributions can reach")
        flood = cfg.flood_units
        if flood:
            u = uniform_floats(self._rng, data.shape[0])
            data = data + (np.floor(u * (2 * flood + 1)).astype(np.int64) - flood)
        return HeRelease(
            session_id=key[0],
            round=key[1],
            count=count,
            int_sum=data,
            aggregate=data.astype(np.float64) / enc.scale,
            error_bound=cfg.error_bound(count),
            flood=flood,
        )
