"""Malicious clients for verified rounds (SPEC.md D11, D12): real :class:`SecAggClient` objects
whose MaskedInput or CHECK step deviates, each signing what it sends with its own identity (a
malicious client can always do that). Tests hand them to :func:`secagg.simulate` or
:func:`harness.make_cohort` through ``client_factory``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from proofs_tests.adversarial.harness import masks_witness
from proofs_tests.adversarial.norm_forger import Deviation, forge, forge_commitment
from secagg import _derive
from secagg._crypto import LABEL_CHECK, LABEL_MASKED, ed25519_sign
from secagg.client import ClientState, SecAggClient
from secagg.messages import CheckRequest, CheckResponse, MaskedInput, ShareBundle
from secagg.verify import CheckStatement, commit_short, make_context, point_bytes
from secagg.verify_round import (
    _claim_blinding,
    _session_seed,
    answer_check,
    check_digest,
    claim_bytes,
    mask_projection,
    projection,
)

U32 = npt.NDArray[np.uint32]


class _Cheater(SecAggClient):
    """Common plumbing: sign as itself, remember its honest input and its upload."""

    def _sign_masked(self, y: U32, commitment: bytes) -> MaskedInput:
        unsigned = MaskedInput(self.id, y, b"", commitment)
        sig = ed25519_sign(
            self._identity, LABEL_MASKED, self.config.digest, unsigned.signed_payload()
        )
        return MaskedInput(self.id, y, sig, commitment)

    def _sign_check(
        self, seed: bytes, self_claim: bytes, pairs: tuple[tuple[int, bytes], ...], proof: bytes
    ) -> CheckResponse:
        payload = _derive.u32(self.id) + check_digest(seed, self_claim, pairs, proof)
        sig = ed25519_sign(self._identity, LABEL_CHECK, self.config.digest, payload)
        return CheckResponse(self.id, self_claim, pairs, proof, sig)

    def _honest_claims(self, seed: bytes) -> tuple[bytes, tuple[tuple[int, bytes], ...]]:
        assert self._mask_keys is not None
        self_key, pairs = self._mask_keys
        proj = projection(self.config, seed)

        def claim(key: bytes) -> bytes:
            return claim_bytes(self.config, seed, mask_projection(self.config, proj, key), key)

        return claim(self_key), tuple((v, claim(key)) for v, key, _ in pairs)

    def _on_share_bundle(self, msg: ShareBundle) -> MaskedInput:
        assert self._input is not None
        self.honest_input = self._input.copy()
        return super()._on_share_bundle(msg)


class ForgingClient(_Cheater):
    """Uploads ``x_big`` (masked honestly, far above the bound) under a forged commitment and
    proves with :func:`norm_forger.forge` and ``deviation`` (the review's attack by default)."""

    def __init__(
        self, *args: Any, x_big: list[int], deviation: Deviation, tag: bytes, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.x_big = x_big
        self.deviation = deviation
        self.tag = tag

    def _on_share_bundle(self, msg: ShareBundle) -> MaskedInput:
        honest = super()._on_share_bundle(msg)
        cfg = self.config
        y = honest.masked.astype(np.int64)
        y += np.array(self.x_big, dtype=np.int64) - cfg.encoding.to_signed(self.honest_input)
        ring = (y & cfg.encoding.mask).astype(np.uint32)
        self._upload = ring
        return self._sign_masked(
            ring, forge_commitment(self.x_big, self.deviation, seed=self.tag).to_bytes()
        )

    def _on_check(self, msg: CheckRequest) -> CheckResponse:
        cfg = self.config
        assert self._mask_keys is not None and self._upload is not None
        self_key, pairs = self._mask_keys
        m_vals, blind, point = masks_witness(cfg, msg.seed, self_key, pairs)
        proj = projection(cfg, msg.seed)
        st = CheckStatement(
            _session_seed(cfg, msg.seed),
            cfg.ring_bits,
            tuple(proj.apply(self._upload)[0]),
            point,
            len(pairs) + 1,
        )
        rx = proj.apply(np.array(self.x_big, dtype=np.int64))[0]
        q = [(yv - r - m) >> cfg.ring_bits for yv, r, m in zip(st.y, rx, m_vals, strict=True)]
        ctx = make_context(self.id, cfg.session_id or b"", cfg.round)
        proof = forge(
            self.x_big, cfg.norm_bound or 0, ctx, slack=[0] * 16, deviation=self.deviation,
            check=(st, m_vals, blind), q=q, seed=self.tag,
        ).proof  # fmt: skip
        self_claim, pair_claims = self._honest_claims(msg.seed)
        self.state = ClientState.CHECKED
        return self._sign_check(msg.seed, self_claim, pair_claims, proof.to_bytes())


class ShiftingClient(_Cheater):
    """Commits to its vector and proves it honestly, but uploads it with ``delta`` added at
    ``index`` (the upload is not the committed vector)."""

    def __init__(self, *args: Any, index: int, delta: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.index, self.delta = index, delta

    def _on_share_bundle(self, msg: ShareBundle) -> MaskedInput:
        honest = super()._on_share_bundle(msg)  # keeps the honest upload for its own proof
        y = honest.masked.astype(np.int64)
        y[self.index] += self.delta
        return self._sign_masked(
            (y & self.config.encoding.mask).astype(np.uint32), honest.commitment
        )


class ForeignContextClient(_Cheater):
    """Answers the check with a valid proof made under another client's context (a proof
    copied from, or made for, client ``other``)."""

    def __init__(self, *args: Any, other: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.other = other

    def _on_check(self, msg: CheckRequest) -> CheckResponse:
        assert self._opening and self._upload is not None and self._mask_keys
        self_key, pairs = self._mask_keys
        ans = answer_check(
            self.config,
            self.other,
            self._opening,
            self._upload,
            msg.seed,
            self_key,
            pairs,
            self.rng,
        )
        self.state = ClientState.CHECKED
        return self._sign_check(msg.seed, ans.self_claim, ans.pair_claims, ans.proof)


class LyingClient(_Cheater):
    """Uploads its vector plus ``delta`` at ``index`` and hides it with a false claim: about its
    own mask (``about=None``) or about the mask it shares with neighbour ``about``. The lie keeps
    the proven relation true, so only the claims' checks can catch it."""

    def __init__(self, *args: Any, index: int, delta: int, about: int | None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.index, self.delta, self.about = index, delta, about

    def _on_share_bundle(self, msg: ShareBundle) -> MaskedInput:
        honest = super()._on_share_bundle(msg)
        y = honest.masked.astype(np.int64)
        y[self.index] += self.delta
        ring = (y & self.config.encoding.mask).astype(np.uint32)
        self._upload = ring
        return self._sign_masked(ring, honest.commitment)

    def _on_check(self, msg: CheckRequest) -> CheckResponse:
        cfg = self.config
        assert self._opening and self._upload is not None and self._mask_keys
        self_key, pairs = self._mask_keys
        proj = projection(cfg, msg.seed)
        e = np.zeros(cfg.d, dtype=np.int64)
        e[self.index] = self.delta
        re = proj.apply(e)[0]
        # The false claim: shift the claimed projection of one mask by R e (with its sign).
        keys: list[tuple[int | None, bytes, int]] = [(None, self_key, 1), *pairs]
        claims: dict[int | None, bytes] = {}
        m_vals = [0] * len(re)
        blind = 0
        for who, key, sign in keys:
            p = mask_projection(cfg, proj, key)
            b = _claim_blinding(cfg, msg.seed, key)
            if who == self.about:
                p = [a + sign * r for a, r in zip(p, re, strict=True)]
            claims[who] = point_bytes(commit_short(p, b))
            m_vals = [m + sign * a for m, a in zip(m_vals, p, strict=True)]
            blind += sign * b
        from secagg.verify import FIELD_ORDER, CheckWitness, prove_norm

        st = CheckStatement(
            _session_seed(cfg, msg.seed), cfg.ring_bits, tuple(proj.apply(self._upload)[0]),
            commit_short(m_vals, blind % FIELD_ORDER), len(pairs) + 1,
        )  # fmt: skip
        ctx = make_context(self.id, cfg.session_id or b"", cfg.round)
        proof = prove_norm(
            self._opening,
            cfg.norm_bound or 0,
            ctx,
            self.rng,
            (st, CheckWitness(tuple(m_vals), blind % FIELD_ORDER)),
        )
        self.state = ClientState.CHECKED
        pair_claims = tuple((v, claims[v]) for v, _, _ in pairs)
        return self._sign_check(msg.seed, claims[None], pair_claims, proof.to_bytes())


def factory(
    cheaters: dict[int, tuple[type[SecAggClient], dict[str, Any]]],
) -> Callable[..., SecAggClient]:
    """A ``client_factory`` that builds the listed cheaters and honest clients otherwise."""

    def make(config: Any, u: int, *args: Any, **kw: Any) -> SecAggClient:
        cls, extra = cheaters.get(u, (SecAggClient, {}))
        return cls(config, u, *args, **kw, **extra)

    return make
