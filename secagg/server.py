"""The server side of protocol.md §4 as a sans-I/O state machine.

The server relays and sums; it is not trusted for privacy, so its checks protect the round's
correctness and availability: a malformed or unauthenticated client message is refused with a
typed error, the sender is excluded from the round (treated as a dropout, reason recorded in
``rejected``), and the round goes on. The server aborts (raises and produces nothing) only when
the spec says the round cannot complete: too few parties for the threshold, or a secret whose
reconstruction contradicts its commitment.

Contribution verification (protocol.md §7, SPEC.md D11), when ``config.norm_bound`` is set: each
masked input's commitment and norm proof are verified on arrival, before anything is unmasked;
a sender whose proof fails is excluded like any refused sender (a dropout: its masks are
removed with its neighbours' shares, its input never enters the sum). After unmasking, the sum
of the survivors' commitments must open to the unmasked sum, or the round aborts with
:class:`~secagg.AggregateMismatch` and publishes nothing. :meth:`SecAggServer.preverify` lets
a transport verify proofs outside its lock.

Driving it::

    server = SecAggServer(config, registry)
    server.receive(client_message)          # any number, for the current stage
    outgoing = server.close_stage()         # at the stage deadline: {client id: message}
    ...                                     # after the UNMASK stage closes:
    server.result.ring_sum, server.result.included
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import _derive
from secagg._crypto import (
    LABEL_ADVERTISE,
    LABEL_CONSISTENCY,
    LABEL_MASKED,
    LABEL_SHARE_KEYS,
    b_commitment,
    check_x25519_public,
    ct_equal,
    ed25519_verify,
    x25519_agree,
    x25519_public_from_private,
)
from secagg._errors import (
    ConfigError,
    InsufficientSurvivors,
    InvalidContribution,
    InvalidMessage,
    InvalidShare,
    ProtocolAbort,
    UnexpectedMessage,
)
from secagg.config import RoundConfig, Stage
from secagg.graph import graph_seed, neighbour_graph
from secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencySignature,
    ForwardedShare,
    KeyList,
    MaskedInput,
    ServerMessage,
    ShareBundle,
    ShareKeys,
    SignatureBundle,
    SurvivorList,
    UnmaskShares,
    stage_of,
)
from secagg.prg import apply_masks
from secagg.shamir import SHARE_BYTES, reconstruct_many, secret_to_bytes, share_from_bytes
from secagg.verify_round import check_aggregate, verify_contribution

if TYPE_CHECKING:
    from secagg.verify import Commitment

__all__ = ["RoundResult", "SecAggServer", "ServerState"]

U32 = npt.NDArray[np.uint32]
_CT_BYTES = 12 + _derive.PLAINTEXT_BYTES + 16


class ServerState(enum.Enum):
    COLLECTING = "collecting"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class RoundResult:
    """The unmasked sum ``sum_{u in included} x_u mod 2^b`` (``d`` elements) and who is in it."""

    ring_sum: U32 = field(compare=False)
    included: frozenset[int]


class SecAggServer:
    """One round's aggregator state. ``registry`` maps ids to raw Ed25519 public keys."""

    def __init__(self, config: RoundConfig, registry: Mapping[int, bytes]) -> None:
        if config.session_id is None:
            raise ConfigError("the server needs a config bound to a session")
        self.config = config
        self._registry = dict(registry)
        self.stage = Stage.ADVERTISE_KEYS
        self.state = ServerState.COLLECTING
        self.rejected: dict[int, str] = {}
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._masked: set[int] = set()
        self._consistency: dict[int, bytes] = {}
        self._unmask: dict[int, UnmaskShares] = {}
        self._acc = np.zeros(config.upload_dim, dtype=np.uint32)
        self._commitments: dict[int, Commitment] = {}
        self._proof_cache: dict[bytes, Commitment | InvalidContribution] = {}
        self._cache_lock = threading.Lock()
        self._seed = b""
        self.graph: Mapping[int, frozenset[int]] = {}
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self.u4: frozenset[int] = frozenset()
        self.u5: frozenset[int] = frozenset()
        self._result: RoundResult | None = None
        self.abort_reason: ProtocolAbort | None = None

    @property
    def graph_seed(self) -> bytes:
        """Seed of the neighbour graph (public: every client derives it too), once U1 is fixed."""
        return self._seed

    @property
    def result(self) -> RoundResult:
        if self._result is None:
            raise UnexpectedMessage("the round has no result", party=0)
        return self._result

    # -- receiving ------------------------------------------------------------------------

    def receive(self, message: ClientMessage) -> None:
        """Accept one client message for the current stage, or refuse it with a typed error.

        A refused sender is excluded from the rest of the round (a dropout, never summed).
        """
        if self.state is not ServerState.COLLECTING:
            raise UnexpectedMessage(f"the round is {self.state.value}", party=0)
        sender = message.sender
        if sender not in self._registry:
            raise InvalidMessage(f"unregistered sender {sender}", party=0, culprit=sender)
        if sender in self.rejected:
            raise UnexpectedMessage(f"client {sender} was excluded", party=0, culprit=sender)
        if stage_of(message) is not self.stage:
            raise self._reject(
                sender, UnexpectedMessage(f"{type(message).__name__} during {self.stage.name}")
            )
        try:
            handler = {
                AdvertiseKeys: self._on_advertise,
                ShareKeys: self._on_share_keys,
                MaskedInput: self._on_masked,
                ConsistencySignature: self._on_consistency,
                UnmaskShares: self._on_unmask,
            }[type(message)]
            handler(message)  # type: ignore[operator]
        except ProtocolAbort as exc:
            raise self._reject(sender, exc) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._reject(sender, InvalidMessage(f"malformed message: {exc}")) from None

    def _reject(self, sender: int, exc: ProtocolAbort) -> ProtocolAbort:
        exc.party, exc.culprit = 0, sender
        self.rejected[sender] = f"{self.stage.name}: {type(exc).__name__}: {exc}"
        return exc

    def _expect(self, sender: int, allowed: frozenset[int], seen: Mapping[int, object] | set[int]):  # type: ignore[no-untyped-def]
        if sender in seen:
            raise UnexpectedMessage(f"duplicate message from {sender} (replay)")
        if sender not in allowed:
            raise UnexpectedMessage(f"client {sender} is not part of this stage")

    def _on_advertise(self, m: AdvertiseKeys) -> None:
        if m.sender in self._adverts:
            raise UnexpectedMessage(f"duplicate message from {m.sender} (replay)")
        check_x25519_public(m.c_pk)
        check_x25519_public(m.s_pk)
        if m.c_pk == m.s_pk:
            raise InvalidMessage("channel and mask keys must differ")
        for other in self._adverts.values():
            if {m.c_pk, m.s_pk} & {other.c_pk, other.s_pk}:
                raise InvalidMessage(f"public key already used by client {other.sender}")
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_ADVERTISE,
            self.config.digest,
            m.signed_payload(),
            who=m.sender,
        )
        self._adverts[m.sender] = m

    def _on_share_keys(self, m: ShareKeys) -> None:
        self._expect(m.sender, self.u1, self._shares)
        nbrs = self.graph[m.sender]
        if len(m.b_commitment) != 32:
            raise InvalidMessage("the commitment must be 32 bytes")
        holders = [h for h, _ in m.ciphertexts]
        if len(holders) != len(nbrs) or set(holders) != nbrs:
            raise InvalidMessage("ciphertexts must go to exactly the sender's neighbours")
        if any(len(ct) != _CT_BYTES for _, ct in m.ciphertexts):
            raise InvalidMessage("share ciphertext of the wrong size")
        dig = [sd.holder for sd in m.share_digests]
        if len(dig) != len(nbrs) or set(dig) != nbrs:
            raise InvalidMessage("share digests must cover exactly the sender's neighbours")
        if any(len(sd.s_digest) != 32 or len(sd.b_digest) != 32 for sd in m.share_digests):
            raise InvalidMessage("share digests must be 32 bytes")
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_SHARE_KEYS,
            self.config.digest,
            m.signed_payload(self._seed),
            who=m.sender,
        )
        self._shares[m.sender] = m

    def _on_masked(self, m: MaskedInput) -> None:
        self._expect(m.sender, self.u2, self._masked)
        cfg = self.config
        y = m.masked
        if not isinstance(y, np.ndarray) or y.dtype != np.uint32 or y.shape != (cfg.upload_dim,):
            raise InvalidMessage(f"masked input must be {cfg.upload_dim} uint32 ring elements")
        if y.size and int(y.max()) > cfg.encoding.mask:
            raise InvalidMessage("masked input has elements outside Z_2^b")
        if cfg.norm_bound is None and (m.commitment or m.proof):
            raise InvalidMessage("this round carries no commitments or proofs")
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_MASKED,
            cfg.digest,
            m.signed_payload(),
            who=m.sender,
        )
        if cfg.norm_bound is not None:  # protocol.md §7: before anything is unmasked
            checked = self._check_proof(m)
            if isinstance(checked, InvalidContribution):
                raise InvalidContribution(str(checked))
            self._commitments[m.sender] = checked
        np.add(self._acc, y, out=self._acc)  # streaming sum: no individual vector is kept
        self._masked.add(m.sender)

    def preverify(self, m: ClientMessage) -> None:
        """Verify a masked input's norm proof now, so that :meth:`receive` finds the answer
        cached (a proof takes milliseconds to seconds to verify).

        Thread-safe and free of round state apart from the cache: a transport calls it
        outside its lock. Never raises; a failure is cached and raised by :meth:`receive`.
        """
        if self.config.norm_bound is not None and isinstance(m, MaskedInput):
            self._check_proof(m)

    def _check_proof(self, m: MaskedInput) -> Commitment | InvalidContribution:
        h = hashlib.sha256(m.sender.to_bytes(4, "big") + len(m.commitment).to_bytes(4, "big"))
        h.update(m.commitment + m.proof)
        key = h.digest()
        with self._cache_lock:
            got = self._proof_cache.get(key)
        if got is None:
            try:
                got = verify_contribution(self.config, m.sender, m.commitment, m.proof)
            except InvalidContribution as exc:
                got = exc
            with self._cache_lock:
                if len(self._proof_cache) < 4 * self.config.n:  # bounded: one or two per client
                    self._proof_cache[key] = got
        return got

    def _on_consistency(self, m: ConsistencySignature) -> None:
        self._expect(m.sender, self.u3, self._consistency)
        payload = _derive.consistency_payload(self._seed, self.u3)
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_CONSISTENCY,
            self.config.digest,
            payload,
            who=m.sender,
        )
        self._consistency[m.sender] = m.signature

    def _on_unmask(self, m: UnmaskShares) -> None:
        self._expect(m.sender, self.u4, self._unmask)
        nbrs = self.graph[m.sender]
        b_owners = [v for v, _ in m.b_shares]
        s_owners = [v for v, _ in m.s_shares]
        if len(set(b_owners)) != len(b_owners) or len(set(s_owners)) != len(s_owners):
            raise InvalidMessage("two shares for the same owner")
        if set(b_owners) & set(s_owners):
            raise InvalidMessage("both share types for one owner (threats.md SA-01)")
        if not set(b_owners) <= (self.u3 & nbrs):
            raise InvalidMessage("b-shares must be for surviving neighbours only")
        if not set(s_owners) <= ((self.u2 - self.u3) & nbrs):
            raise InvalidMessage("s-shares must be for dropped neighbours only")
        for kind, items in ((b"b", m.b_shares), (b"s", m.s_shares)):
            for owner, y in items:
                if len(y) != SHARE_BYTES:
                    raise InvalidShare("share of the wrong size")
                expected = self._signed_digest(owner, m.sender, kind)
                got = _derive.share_digest(kind, self.config.digest, owner, m.sender, y)
                if not ct_equal(got, expected):
                    raise InvalidShare(
                        f"share of {owner}'s secret does not match the digest {owner} signed"
                    )
        self._unmask[m.sender] = m

    def _signed_digest(self, owner: int, holder: int, kind: bytes) -> bytes:
        for sd in self._shares[owner].share_digests:
            if sd.holder == holder:
                return sd.b_digest if kind == b"b" else sd.s_digest
        raise InvalidShare(f"{owner} gave no share to {holder}")

    # -- closing stages -------------------------------------------------------------------

    def close_stage(self) -> dict[int, ServerMessage]:
        """End the current stage (its deadline passed) and return what each client gets next."""
        if self.state is not ServerState.COLLECTING:
            raise UnexpectedMessage(f"the round is {self.state.value}", party=0)
        try:
            closer = {
                Stage.ADVERTISE_KEYS: self._close_advertise,
                Stage.SHARE_KEYS: self._close_share_keys,
                Stage.MASKED_INPUT: self._close_masked,
                Stage.CONSISTENCY: self._close_consistency,
                Stage.UNMASK: self._close_unmask,
            }[self.stage]
            return closer()
        except ProtocolAbort as exc:
            exc.party = 0
            self.state = ServerState.ABORTED
            self.abort_reason = exc
            self._acc = np.zeros(0, dtype=np.uint32)
            raise

    def _need(self, count: int, what: str) -> None:
        if count < self.config.t:
            raise InsufficientSurvivors(
                f"too few clients: {max(count, 0)} {what}, threshold t={self.config.t}"
            )

    def _close_advertise(self) -> dict[int, ServerMessage]:
        self.u1 = frozenset(self._adverts)
        self._need(len(self.u1) - 1, "other clients advertised keys")
        cfg = self.config
        self._seed = graph_seed(cfg.digest, ((u, a.c_pk, a.s_pk) for u, a in self._adverts.items()))
        self.graph = neighbour_graph(self.u1, cfg.degree, self._seed)
        entries = tuple(self._adverts[u] for u in sorted(self.u1))
        self.stage = Stage.SHARE_KEYS
        return {u: KeyList(u, entries) for u in sorted(self.u1)}

    def _close_share_keys(self) -> dict[int, ServerMessage]:
        self.u2 = frozenset(self._shares)
        self._need(len(self.u2) - 1, "other clients shared keys")
        out: dict[int, ServerMessage] = {}
        for w in sorted(self.u2):
            fwd = []
            for u in sorted(self.graph[w] & self.u2):
                sk = self._shares[u]
                ct = next(c for h, c in sk.ciphertexts if h == w)
                fwd.append(ForwardedShare(u, ct, sk.b_commitment, sk.share_digests, sk.signature))
            out[w] = ShareBundle(w, tuple(fwd))
        self.stage = Stage.MASKED_INPUT
        return out

    def _close_masked(self) -> dict[int, ServerMessage]:
        self.u3 = frozenset(self._masked)
        with self._cache_lock:
            self._proof_cache.clear()
        self._need(len(self.u3) - 1, "other clients sent masked input")
        self.stage = Stage.CONSISTENCY
        return {u: SurvivorList(u, self.u3) for u in sorted(self.u3)}

    def _close_consistency(self) -> dict[int, ServerMessage]:
        self.u4 = frozenset(self._consistency)
        self._need(len(self.u4) - 1, "other clients signed the survivor set")
        self.stage = Stage.UNMASK
        out: dict[int, ServerMessage] = {}
        for u in sorted(self.u4):
            sigs = tuple((v, self._consistency[v]) for v in sorted(self.graph[u] & self.u4))
            out[u] = SignatureBundle(u, sigs)
        return out

    def _close_unmask(self) -> dict[int, ServerMessage]:
        cfg = self.config
        session, rnd = cfg.session_id, cfg.round
        assert session is not None
        self.u5 = frozenset(self._unmask)
        b_shares: dict[int, dict[int, int]] = {v: {} for v in self.u3}
        s_shares: dict[int, dict[int, int]] = {v: {} for v in self.u2 - self.u3}
        for holder, m in self._unmask.items():
            for owner, y in m.b_shares:
                b_shares[owner][holder] = share_from_bytes(y)
            for owner, y in m.s_shares:
                s_shares[owner][holder] = share_from_bytes(y)

        plus: list[bytes] = []
        minus: list[bytes] = []
        # Every secret needed must have t shares, or the round aborts before anything is used.
        for owners, shares_of, what in (
            (self.u3, b_shares, "seed"),
            (
                [v for v in self.u2 - self.u3 if self.graph[v] & self.u3],
                s_shares,
                "mask key (dropped client)",
            ),
        ):
            for u in owners:
                if len(shares_of[u]) < cfg.t:
                    raise InsufficientSurvivors(
                        f"{len(shares_of[u])} shares of client {u}'s {what}, t={cfg.t}"
                    )
        # Survivors: remove PRG(b_u) (protocol.md §4.5), after checking the commitment.
        secrets_b = reconstruct_many(b_shares, cfg.t)
        for u in sorted(self.u3):
            try:
                b_u = secret_to_bytes(secrets_b[u])
            except InvalidShare:  # not even a 32-byte value: fails the check below, naming u
                b_u = b""
            if not ct_equal(b_commitment(session, u, b_u), self._shares[u].b_commitment):
                raise InvalidShare(
                    f"client {u}'s seed shares are inconsistent with its commitment", culprit=u
                )
            minus.append(_derive.self_mask_key(b_u, session, rnd, u))
        # Dropped after sharing: rebuild s_sk_v and remove the masks it shared with survivors.
        needed = {v: s_shares[v] for v in self.u2 - self.u3 if self.graph[v] & self.u3}
        secrets_s = reconstruct_many(needed, cfg.t)
        for v in sorted(needed):
            partners = sorted(self.graph[v] & self.u3)
            s_pk_v = self._adverts[v].s_pk
            try:
                s_sk = secret_to_bytes(secrets_s[v])
                sk_v = X25519PrivateKey.from_private_bytes(s_sk)
                ok = ct_equal(x25519_public_from_private(s_sk), s_pk_v)
            except (ValueError, InvalidShare):  # InvalidShare: not a 32-byte value
                ok = False
            if not ok:
                raise InvalidShare(
                    f"client {v}'s key shares do not rebuild its public key", culprit=v
                )
            for u in partners:
                s_pk_u = self._adverts[u].s_pk
                key = _derive.pair_mask_key(
                    x25519_agree(sk_v, s_pk_u), session, rnd, u, v, s_pk_u, s_pk_v
                )
                # u added sign(u, v) * PRG(s_uv); take it back out.
                (minus if u < v else plus).append(key)
        acc = self._acc
        apply_masks(acc, plus, minus)
        np.bitwise_and(acc, np.uint32(cfg.encoding.mask), out=acc)
        if cfg.norm_bound is not None:
            # protocol.md §7: the survivors' commitments must open to the unmasked sum, or
            # nothing is published (AggregateMismatch; close_stage drops the sum).
            check_aggregate(cfg, {u: self._commitments[u] for u in self.u3}, acc)
        self._result = RoundResult(np.ascontiguousarray(acc[: cfg.d]), self.u3)
        self.state = ServerState.DONE
        return {}
