"""A decryptor committee member (SPEC.md O6, O7): the only party that can help remove masks,
and only for one set per round.

Per round it (1) issues a fresh X25519 key, signed with its registered identity for that round;
(2) checks a proposed included set: at least ``min_cohort`` distinct registered clients, each
share signed by its client for this round and opening under this member's key to residues in
range; a bad share is a :class:`Complaint` naming the client, and nothing is signed;
(3) signs at most one set per round, and only one it checked; (4) releases the sum of its
shares once, only for the set it signed, only with ``threshold`` valid signatures of distinct
committee members on that same set; then it forgets the round's key and sum.

Its work and traffic are linear in the number of clients and independent of d.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg._crypto import (
    aead_open,
    ed25519_sign,
    ed25519_verify,
    sha256,
    x25519_agree,
    x25519_keypair,
)
from secagg._errors import (
    EncodingError,
    InvalidShare,
    InvalidSignature,
    KeyAgreementError,
    PolicyViolation,
)
from secagg._rng import RandomSource, SystemRandom
from secagg.oneshot._errors import Complaint, EquivocationRefused, ReleaseRefused
from secagg.oneshot.client import share_ad, share_key
from secagg.oneshot.config import OneShotConfig
from secagg.oneshot.messages import (
    LABEL_MEMBER_KEY,
    LABEL_SET,
    LABEL_UPLOAD,
    CheckRequest,
    MemberKey,
    ReleaseRequest,
    SetSignature,
    ShareSum,
    set_payload,
)
from secagg.oneshot.scheme import pack_residues, unpack_residues

__all__ = ["CommitteeMember"]

U64 = npt.NDArray[np.uint64]


@dataclass
class _RoundState:
    config: OneShotConfig
    key: X25519PrivateKey
    public: bytes
    checked: tuple[int, ...] | None = None
    sums: tuple[U64, U64] | None = None
    signed: tuple[int, ...] | None = None
    released: bool = False


class CommitteeMember:
    """One member's side of every round it sits on."""

    def __init__(
        self,
        member_id: int,
        identity: Ed25519PrivateKey,
        registry: Mapping[int, bytes],
        *,
        min_cohort: int = 3,
        rng: RandomSource | None = None,
        allow_deterministic_rng: bool = False,
    ) -> None:
        self.rng = rng or SystemRandom()
        if self.rng.deterministic and not allow_deterministic_rng:
            raise PolicyViolation("a deterministic random source outside test mode")
        if member_id not in registry:
            raise PolicyViolation(f"member {member_id} is not registered")
        self.member_id = member_id
        self.identity = identity
        self.registry = dict(registry)
        self.min_cohort = min_cohort
        self._rounds: dict[tuple[bytes, int], _RoundState] = {}
        self._closed: set[tuple[bytes, int]] = set()

    def _state(self, session_id: bytes, round_: int) -> _RoundState:
        key = (session_id, round_)
        if key in self._closed:
            raise EquivocationRefused(
                "this member already answered for that round", party=self.member_id
            )
        st = self._rounds.get(key)
        if st is None:
            raise ReleaseRefused("this member holds no key for that round", party=self.member_id)
        return st

    def open_round(self, cfg: OneShotConfig) -> MemberKey:
        """A fresh X25519 key for this round, signed; the same key if asked again for the same
        config, a refusal for another config under the same session and round."""
        if cfg.session_id is None:
            raise ReleaseRefused("the config has no session_id")
        if self.member_id not in cfg.committee:
            raise PolicyViolation(f"member {self.member_id} is not on this round's committee")
        key = (cfg.session_id, cfg.round)
        if key in self._closed:
            raise EquivocationRefused("that round is over for this member", party=self.member_id)
        st = self._rounds.get(key)
        if st is not None and st.config.digest != cfg.digest:
            raise EquivocationRefused("a second config for the same round", party=self.member_id)
        if st is None:
            sk, pk = x25519_keypair(self.rng)
            st = _RoundState(cfg, X25519PrivateKey.from_private_bytes(sk), pk)
            self._rounds[key] = st
        mk = MemberKey(self.member_id, st.public, b"")
        sig = ed25519_sign(self.identity, LABEL_MEMBER_KEY, cfg.digest, mk.payload())
        return MemberKey(self.member_id, st.public, sig)

    def check(self, req: CheckRequest) -> None:
        """Check a proposed set and its shares; raises :class:`Complaint` naming every client
        whose share is bad (then nothing is kept), or a refusal for a bad set."""
        st = self._state(req.session_id, req.round)
        cfg = st.config
        if st.signed is not None:
            raise EquivocationRefused(
                "this member already signed a set this round", party=self.member_id
            )
        inc = req.included
        self._check_set(cfg, inc)
        if tuple(s.client_id for s in req.shares) != inc:
            raise ReleaseRefused("the shares do not match the set", party=self.member_id)
        ring = cfg.ring
        pos = cfg.position(self.member_id)
        c = len(cfg.committee)
        acc = [np.zeros(ring.n, dtype=np.uint64) for _ in ring.primes]
        bad: list[int] = []
        for s in req.shares:
            try:
                if len(s.share_digests) != 32 * c or len(s.ephemeral) != 32:
                    raise InvalidShare("malformed share header")
                if s.share_digests[32 * (pos - 1) : 32 * pos] != sha256(s.sealed):
                    raise InvalidShare("the share is not the one the client signed")
                ed25519_verify(
                    self.registry[s.client_id],
                    s.signature,
                    LABEL_UPLOAD,
                    cfg.digest,
                    s.payload(),
                    who=s.client_id,
                )
                shared = x25519_agree(st.key, s.ephemeral)
                k = share_key(cfg, shared, s.client_id, self.member_id, s.ephemeral, st.public)
                plain = aead_open(k, s.sealed, share_ad(cfg, s.client_id, self.member_id))
                r = unpack_residues(plain, ring.n, ring.primes, ring.residue_bits)
            except (InvalidShare, InvalidSignature, KeyAgreementError, EncodingError):
                bad.append(s.client_id)
                continue
            for i, q in enumerate(ring.primes):
                acc[i] = (acc[i] + r[i]) % np.uint64(q)
        if bad:
            st.checked, st.sums = None, None
            raise Complaint(
                f"member {self.member_id}: bad shares from {bad}", bad, party=self.member_id
            )
        st.checked, st.sums = inc, (acc[0], acc[1])

    def _check_set(self, cfg: OneShotConfig, inc: tuple[int, ...]) -> None:
        floor = max(self.min_cohort, cfg.min_cohort)
        if len(inc) < floor:
            raise ReleaseRefused(
                f"a set of {len(inc)} clients is below the minimum cohort {floor}",
                party=self.member_id,
            )
        if len(inc) > cfg.n:
            raise ReleaseRefused(
                f"a set of {len(inc)} exceeds the n = {cfg.n} the ring is sized for",
                party=self.member_id,
            )
        if list(inc) != sorted(set(inc)):
            raise ReleaseRefused("the set must be sorted and distinct", party=self.member_id)
        unknown = [u for u in inc if u not in self.registry]
        if unknown:
            raise ReleaseRefused(
                f"unregistered clients {unknown[:5]} in the set", party=self.member_id
            )

    def sign(self, session_id: bytes, round_: int, included: tuple[int, ...]) -> SetSignature:
        """Sign ``included`` (once per round, and only the set this member last checked)."""
        st = self._state(session_id, round_)
        if st.signed is not None and st.signed != included:
            raise EquivocationRefused("a second, different set this round", party=self.member_id)
        if st.checked != included:
            raise ReleaseRefused("this member has not checked that set", party=self.member_id)
        st.signed = included
        sig = ed25519_sign(self.identity, LABEL_SET, st.config.digest, set_payload(included))
        return SetSignature(self.member_id, sig)

    def release(self, req: ReleaseRequest) -> ShareSum:
        """This member's share of the sum of secrets over the set it signed, once."""
        st = self._state(req.session_id, req.round)
        cfg = st.config
        if st.signed is None or st.signed != req.included:
            raise EquivocationRefused(
                "release asked for a set this member did not sign", party=self.member_id
            )
        payload = set_payload(req.included)
        good: set[int] = set()
        for sg in req.signatures:
            if sg.member_id not in cfg.committee or sg.member_id in good:
                continue
            try:
                ed25519_verify(
                    self.registry[sg.member_id],
                    sg.signature,
                    LABEL_SET,
                    cfg.digest,
                    payload,
                    who=sg.member_id,
                )
            except (InvalidSignature, KeyError):
                continue
            good.add(sg.member_id)
        if len(good) < cfg.threshold:
            raise ReleaseRefused(
                f"{len(good)} valid committee signatures on the set, {cfg.threshold} needed",
                party=self.member_id,
            )
        assert st.sums is not None and cfg.session_id is not None
        out = ShareSum(
            self.member_id,
            cfg.session_id,
            cfg.round,
            req.included,
            pack_residues(st.sums, cfg.ring.residue_bits),
        )
        self.forget(req.session_id, req.round)
        return out

    def forget(self, session_id: bytes, round_: int) -> None:
        """Drop a round's key and sums; the member never answers for it again."""
        self._rounds.pop((session_id, round_), None)
        self._closed.add((session_id, round_))
