"""The aggregator of a one-shot round (SPEC.md O5, O6): add uploads as they arrive, close at
the deadline, have the committee check, sign and release for one set, reconstruct the sum of
secrets from ``threshold`` share sums and unmask.

Uploads are summed as they arrive and not kept (memory is one round's sum, not n uploads), so
a member's :class:`~secagg.oneshot.Complaint` about a client ends the round naming that client
(the service suspends it); the next round runs without it (threat_models/oneshot.md, T8).

It never holds a key: what it learns is the sum of the included clients' encoded inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from secagg._crypto import ed25519_verify
from secagg._errors import (
    ConfigError,
    EncodingError,
    InvalidSignature,
    KeyAgreementError,
    PolicyViolation,
    UnexpectedMessage,
)
from secagg.oneshot._errors import (
    EquivocationRefused,
    InvalidUpload,
    OneShotInsufficient,
    UnmaskFailed,
)
from secagg.oneshot.client import check_member_keys
from secagg.oneshot.config import OneShotConfig
from secagg.oneshot.messages import (
    LABEL_SET,
    LABEL_UPLOAD,
    CheckRequest,
    MemberKey,
    OneShotResult,
    OneShotUpload,
    ReleaseRequest,
    SetSignature,
    ShareForMember,
    ShareSum,
    set_payload,
)
from secagg.oneshot.ring import lagrange_at_zero
from secagg.oneshot.scheme import unmask, unpack_residues

__all__ = ["OneShotAggregator"]

U64 = npt.NDArray[np.uint64]
_SEALED_OVERHEAD = 12 + 16


class OneShotAggregator:
    """Collects one round's uploads and drives the committee; raises typed errors only."""

    def __init__(
        self,
        config: OneShotConfig,
        registry: Mapping[int, bytes],
        member_keys: Sequence[MemberKey],
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        try:
            check_member_keys(config, member_keys, registry)
        except (PolicyViolation, InvalidSignature, KeyAgreementError) as exc:
            raise EquivocationRefused(f"bad committee keys: {exc}") from exc
        self.config = config
        self.registry = dict(registry)
        self.member_keys = tuple(member_keys)
        ring = config.ring
        total = config.chunks * ring.n
        self._sum = [np.zeros(total, dtype=np.uint64) for _ in ring.primes]
        self._shares: dict[int, OneShotUpload] = {}
        self.rejected: dict[int, str] = {}
        self.closed = False
        self._included: tuple[int, ...] | None = None
        self._signatures: dict[int, SetSignature] = {}
        self._sums: dict[int, tuple[U64, U64]] = {}
        self._digests: dict[int, bytes] = {}
        self._share_digests: dict[int, bytes] = {}

    @property
    def included(self) -> frozenset[int]:
        return frozenset(self._shares)

    def add(self, up: OneShotUpload) -> None:
        """Check and add one upload; :class:`InvalidUpload` names the sender and excludes it."""
        cfg, u = self.config, up.client_id
        if self.closed:
            raise UnexpectedMessage("uploads are closed for this round", culprit=u)
        if u not in self.registry:
            raise InvalidUpload(f"client {u} is not registered", culprit=u)
        if u in self._shares:
            raise UnexpectedMessage(f"client {u} already uploaded", culprit=u)
        try:
            if (up.session_id, up.round) != (cfg.session_id, cfg.round):
                raise InvalidUpload("an upload for another round")
            if len(up.masked) != cfg.masked_bytes:
                raise InvalidUpload(
                    f"masked chunks are {len(up.masked)} bytes, not {cfg.masked_bytes}"
                )
            want = cfg.share_plain_bytes + _SEALED_OVERHEAD
            if len(up.shares) != len(cfg.committee) or any(len(s) != want for s in up.shares):
                raise InvalidUpload("wrong number or size of sealed shares")
            if len(up.ephemeral) != 32:
                raise InvalidUpload("the ephemeral key is not 32 bytes")
            # id (4) || ephemeral (32) || masked digest (32) || share digests (32 c)
            payload = up.payload()
            ed25519_verify(self.registry[u], up.signature, LABEL_UPLOAD, cfg.digest, payload, who=u)
            ring = cfg.ring
            r = unpack_residues(up.masked, cfg.chunks * ring.n, ring.primes, ring.residue_bits)
        except (InvalidUpload, InvalidSignature, EncodingError) as exc:
            self.rejected.setdefault(u, str(exc))
            raise InvalidUpload(f"upload of client {u} refused: {exc}", culprit=u) from exc
        for i, q in enumerate(cfg.ring.primes):
            self._sum[i] += r[i]
            self._sum[i] %= np.uint64(q)
        # Only the sealed shares and the signed header are kept (not the masked chunks).
        self._shares[u] = OneShotUpload(
            up.session_id, up.round, u, b"", up.ephemeral, up.shares, up.signature
        )
        self._digests[u] = payload[36:68]
        self._share_digests[u] = payload[68:]

    def close(self) -> tuple[int, ...]:
        """Stop taking uploads; the proposed set, or :class:`OneShotInsufficient`."""
        self.closed = True
        inc = tuple(sorted(self._shares))
        if len(inc) < self.config.min_cohort:
            raise OneShotInsufficient(
                f"only {len(inc)} uploads, below the minimum cohort {self.config.min_cohort}"
            )
        self._included = inc
        return inc

    def check_request(self, member: int) -> CheckRequest:
        """What ``member`` must check: the set and each included client's share for it."""
        if self._included is None:
            raise UnexpectedMessage("no set to check")
        pos = self.config.position(member)
        cfg = self.config
        assert cfg.session_id is not None
        shares = tuple(
            ShareForMember(
                u,
                self._shares[u].ephemeral,
                self._digests[u],
                self._share_digests[u],
                self._shares[u].shares[pos - 1],
                self._shares[u].signature,
            )
            for u in self._included
        )
        return CheckRequest(cfg.session_id, cfg.round, self._included, shares)

    def add_signature(self, sig: SetSignature) -> None:
        """A member's signature on the set; a bad one is ignored (counted as a dropout)."""
        cfg = self.config
        if self._included is None:
            raise UnexpectedMessage("no set yet")
        if sig.member_id not in cfg.committee:
            raise UnexpectedMessage(f"{sig.member_id} is not on the committee")
        ed25519_verify(
            self.registry[sig.member_id],
            sig.signature,
            LABEL_SET,
            cfg.digest,
            set_payload(self._included),
            who=sig.member_id,
        )
        self._signatures[sig.member_id] = sig

    def release_request(self) -> ReleaseRequest:
        cfg = self.config
        if self._included is None or len(self._signatures) < cfg.threshold:
            raise OneShotInsufficient(
                f"{len(self._signatures)} committee signatures, {cfg.threshold} needed"
            )
        assert cfg.session_id is not None
        return ReleaseRequest(
            cfg.session_id, cfg.round, self._included, tuple(self._signatures.values())
        )

    def add_share_sum(self, ans: ShareSum) -> None:
        cfg = self.config
        if ans.member_id not in self._signatures or ans.included != self._included:
            raise UnexpectedMessage(f"an answer from {ans.member_id} for another set")
        if (ans.session_id, ans.round) != (cfg.session_id, cfg.round):
            raise UnexpectedMessage("an answer for another round")
        ring = cfg.ring
        try:
            self._sums[ans.member_id] = unpack_residues(
                ans.residues, ring.n, ring.primes, ring.residue_bits
            )
        except EncodingError as exc:
            raise UnexpectedMessage(f"malformed share sum from {ans.member_id}: {exc}") from exc

    def finish(self) -> OneShotResult:
        """Reconstruct the sum of secrets, unmask, decode. With more than ``threshold`` answers
        the extra ones must agree (an inconsistent member or client aborts the round)."""
        cfg = self.config
        if self._included is None or len(self._sums) < cfg.threshold:
            raise OneShotInsufficient(f"{len(self._sums)} share sums, {cfg.threshold} needed")
        ring = cfg.ring
        members = sorted(self._sums)
        xs = tuple(cfg.position(m) for m in members)
        s_sum: list[U64] = []
        for i, q in enumerate(ring.primes):
            s_sum.append(self._interpolate(xs[: cfg.threshold], members, i, q, 0))
            if len(xs) > cfg.threshold:
                # Every extra answer must lie on the same polynomial.
                alt = self._interpolate(xs[-cfg.threshold :], members[-cfg.threshold :], i, q, 0)
                if not np.array_equal(alt, s_sum[i]):
                    raise UnmaskFailed("the committee's share sums do not lie on one polynomial")
        y = self._sum
        x = unmask(cfg, (y[0], y[1]), (s_sum[0], s_sum[1]), len(self._included))
        assert cfg.session_id is not None
        return OneShotResult(
            cfg.session_id,
            cfg.round,
            self._included,
            x,
            x.astype(np.float64) / cfg.encoding.scale,
            cfg.error_bound(len(self._included)),
            tuple(members[: cfg.threshold]),
            dict(self.rejected),
        )

    def _interpolate(
        self, xs: tuple[int, ...], members: Sequence[int], i: int, q: int, _: int
    ) -> U64:
        by_pos = {self.config.position(m): m for m in members}
        w = lagrange_at_zero(xs, q)
        acc = np.zeros(self.config.ring.n, dtype=np.uint64)
        qq = np.uint64(q)
        for wj, x in zip(w, xs, strict=True):
            acc = (acc + np.uint64(wj) * self._sums[by_pos[x]][i]) % qq
        return acc
