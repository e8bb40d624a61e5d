"""The server side of docs/protocol.md §4 as a sans-I/O state machine.

The server relays and sums; it is not trusted for privacy, so its checks protect the round's
correctness and availability: a malformed or unauthenticated client message is refused with a
typed error, the sender is excluded from the round (treated as a dropout, reason recorded in
``rejected``), and the round goes on. The server aborts (raises and produces nothing) only when
the spec says the round cannot complete: too few parties for the threshold, or a secret whose
reconstruction contradicts its commitment.

Contribution verification (docs/protocol.md §7, SPEC.md D11, D12), when ``config.norm_bound`` is
set: every masked input carries row commitments to its vector. Once the MaskedInput stage
closes the server reveals a seed it drew at the start (the CHECK stage): each client answers
with commitments to the projections of its masks and a proof that its upload is its committed,
norm-bounded vector, masked. A failing proof, or two neighbours whose claims about their shared
mask disagree, excludes the sender(s) before anything is unmasked: their uploads leave the sum
(a dropout, whose masks are removed with its neighbours' shares). After unmasking every claim
the reconstructed secrets allow is recomputed; a false one names its author in ``cheaters``
and the round aborts with :class:`~secagg.AggregateMismatch`, publishing nothing. Until the
CHECK stage closes the server keeps each upload (``d`` words per client) so that an excluded
one can be taken out again. :meth:`SecAggServer.preverify` lets a transport verify proofs
outside its lock.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import _derive
from secagg._crypto import (
    LABEL_ADVERTISE,
    LABEL_CHECK,
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
    AggregateMismatch,
    ConfigError,
    InsufficientSurvivors,
    InvalidContribution,
    InvalidMessage,
    InvalidShare,
    InvalidSignature,
    ProtocolAbort,
    UnexpectedMessage,
)
from secagg._rng import RandomSource, SystemRandom
from secagg.accumulate import Accumulator, LocalAccumulator
from secagg.config import RoundConfig, Stage
from secagg.graph import LABEL_KEY_TREE, Ring, cohort_bitmap, graph_seed, key_leaf
from secagg.merkle import MerkleTree
from secagg.messages import (
    AdvertiseKeys,
    CheckRequest,
    CheckResponse,
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
    digest_tree,
    stage_of,
)
from secagg.shamir import SHARE_BYTES, reconstruct_many, secret_to_bytes, share_from_bytes
from secagg.verify_round import (
    POINT_BYTES,
    check_digest,
    claim_bytes,
    claims_hold,
    mask_projection,
    mask_projections,
    parse_commitment,
    parse_point,
    projected_sum_matches,
    projection,
    verify_check,
)

if TYPE_CHECKING:
    from secagg.verify import Commitment, Projection

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

    def __init__(
        self,
        config: RoundConfig,
        registry: Mapping[int, bytes],
        *,
        rng: RandomSource | None = None,
        accumulator: Accumulator | None = None,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the server needs a config bound to a session")
        self.config = config
        self._registry = dict(registry)
        # The cohort: every registered id, sorted (the positions of U1's and U3's bitmaps).
        self._cohort = sorted(self._registry)
        if len(self._cohort) != config.n:
            raise ConfigError(
                f"the registry has {len(self._cohort)} members but the round says n={config.n}"
            )
        self._u1_bitmap = b""
        self._u3_bitmap = b""
        self.stage = Stage.ADVERTISE_KEYS
        self.state = ServerState.COLLECTING
        self.rejected: dict[int, str] = {}
        #: Clients excluded or named for a provably false contribution (not for dropping out).
        self.cheaters: dict[int, str] = {}
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._key_owner: dict[bytes, int] = {}  # every advertised public key -> its sender
        self._shares: dict[int, ShareKeys] = {}
        self._masked: set[int] = set()
        self._consistency: dict[int, bytes] = {}
        self._unmask: dict[int, UnmaskShares] = {}
        # The running sum (secagg.accumulate): here, or sharded on an engine.
        self._acc: Accumulator = (
            accumulator if accumulator is not None else LocalAccumulator(config.upload_dim)
        )
        # Verified rounds (SPEC.md D12): the check seed is drawn now and kept secret until
        # every upload is in; uploads are kept until the CHECK stage closes.
        self._check_seed = b""
        self._proj: Projection | None = None
        # Secret weights of the batched claim check come from here too (verify_round.claims_hold).
        self._rng: RandomSource = rng if rng is not None else SystemRandom()
        if config.verified:
            self._check_seed = self._rng.bytes(32)
            self._proj = projection(config, self._check_seed)
        self._commitments: dict[int, Commitment] = {}
        self._uploads: dict[int, U32] = {}
        self._y_proj: dict[int, list[int]] = {}
        self._claims: dict[int, CheckResponse] = {}
        self._disputes: list[tuple[int, int]] = []
        self._proof_cache: dict[bytes, InvalidContribution | None] = {}
        self._cache_lock = threading.Lock()
        self._seed = b""
        self.graph: Mapping[int, frozenset[int]] = {}
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.uploaded: frozenset[int] = frozenset()
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
                CheckResponse: self._on_check,
                ConsistencySignature: self._on_consistency,
                UnmaskShares: self._on_unmask,
            }[type(message)]
            handler(message)  # type: ignore[operator]
        except ProtocolAbort as exc:
            raise self._reject(sender, exc) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._reject(sender, InvalidMessage(f"malformed message: {exc}")) from None

    def advert_is_signed(self, message: AdvertiseKeys) -> bool:
        """Whether ``message`` carries a valid signature of the registered member it names
        (no state changes). Where the transport does not authenticate members (Flower's Grid
        relays any node's reply), a caller drops an advertisement that fails this instead of
        handing it to :meth:`receive`, which would exclude the named member for the round on
        the word of whoever sent it."""
        if message.sender not in self._registry:
            return False
        try:
            self._verify_advert(message)
        except InvalidSignature:
            return False
        return True

    def _verify_advert(self, m: AdvertiseKeys) -> None:
        """The member's signature on its advertisement, under this round's config digest."""
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_ADVERTISE,
            self.config.digest,
            m.signed_payload(),
            who=m.sender,
        )

    def _reject(self, sender: int, exc: ProtocolAbort) -> ProtocolAbort:
        exc.party, exc.culprit = 0, sender
        self.rejected[sender] = f"{self.stage.name}: {type(exc).__name__}: {exc}"
        if isinstance(exc, InvalidContribution):
            self.cheaters[sender] = self.rejected[sender]
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
        for pk in (m.c_pk, m.s_pk):  # O(1) per advertisement, not a scan of U1 so far
            other = self._key_owner.get(pk)
            if other is not None:
                raise InvalidMessage(f"public key already used by client {other}")
        self._verify_advert(m)
        self._adverts[m.sender] = m
        self._key_owner[m.c_pk] = self._key_owner[m.s_pk] = m.sender

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
        if not cfg.verified and m.commitment:
            raise InvalidMessage("this round carries no commitments")
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_MASKED,
            cfg.digest,
            m.signed_payload(),
            who=m.sender,
        )
        if cfg.verified:  # docs/protocol.md §7, SPEC.md D12: the commitment, and R y for the check
            assert self._proj is not None
            self._commitments[m.sender] = parse_commitment(cfg, m.commitment)
            self._y_proj[m.sender] = self._proj.apply(y)[0]
            self._uploads[m.sender] = np.array(y, dtype=np.uint32, copy=True)
        self._acc.add(m.sender, y)  # streaming sum
        self._masked.add(m.sender)

    def _held(self, u: int) -> list[int]:
        """The neighbours whose pairwise mask ``u`` added: those that shared keys (U2)."""
        return sorted(self.graph[u] & self.u2)

    def _check_claims(self, m: CheckResponse) -> tuple[Any, list[tuple[Any, int]]]:
        """Shape and parse a CheckResponse's claims (cheap checks, no proof)."""
        held = self._held(m.sender)
        got = [v for v, _ in m.pair_claims]
        if got != held:
            raise InvalidContribution(
                "the claims must cover exactly the neighbours this client masked with"
            )
        if len(m.self_claim) != POINT_BYTES or any(len(c) != POINT_BYTES for _, c in m.pair_claims):
            raise InvalidContribution(f"a claim is {POINT_BYTES} bytes")
        pts = [(parse_point(c), 1 if m.sender < v else -1) for v, c in m.pair_claims]
        return parse_point(m.self_claim), pts

    def preverify(self, m: ClientMessage) -> None:
        """Verify a CheckResponse's proof now, so that :meth:`receive` finds the answer cached
        (a proof takes milliseconds to a second to verify).

        Thread-safe and free of round state apart from the cache: a transport calls it
        outside its lock once the MaskedInput stage has closed. Never raises; a failure is
        cached and raised by :meth:`receive`.
        """
        if (
            self.config.verified
            and isinstance(m, CheckResponse)
            and self.stage is Stage.CHECK
            and m.sender in self._commitments
        ):
            self._check_proof(m)

    def _check_proof(self, m: CheckResponse) -> InvalidContribution | None:
        h = hashlib.sha256(m.sender.to_bytes(4, "big"))
        h.update(check_digest(self._check_seed, m.self_claim, m.pair_claims, m.proof))
        key = h.digest()
        with self._cache_lock:
            if key in self._proof_cache:
                return self._proof_cache[key]
        got: InvalidContribution | None = None
        try:
            self_pt, pairs = self._check_claims(m)
            verify_check(
                self.config,
                m.sender,
                self._commitments[m.sender],
                self._check_seed,
                self._y_proj[m.sender],
                self_pt,
                pairs,
                m.proof,
            )
        except InvalidContribution as exc:
            got = exc
        with self._cache_lock:
            if len(self._proof_cache) < 4 * self.config.n:  # bounded: one or two per client
                self._proof_cache[key] = got
        return got

    def _on_check(self, m: CheckResponse) -> None:
        self._expect(m.sender, self.uploaded, self._claims)
        ed25519_verify(
            self._registry[m.sender],
            m.signature,
            LABEL_CHECK,
            self.config.digest,
            _derive.u32(m.sender)
            + check_digest(self._check_seed, m.self_claim, m.pair_claims, m.proof),
            who=m.sender,
        )
        failed = self._check_proof(m)
        if failed is not None:
            raise InvalidContribution(str(failed))
        self._claims[m.sender] = m

    def _on_consistency(self, m: ConsistencySignature) -> None:
        self._expect(m.sender, self.u3, self._consistency)
        payload = _derive.consistency_payload(self._seed, self._u3_bitmap)
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
            raise InvalidMessage("both share types for one owner (docs/threats.md SA-01)")
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

    def _pair_key(self, sk_v: X25519PrivateKey, v: int, u: int) -> bytes:
        """The pairwise mask key of ``(u, v)`` from ``v``'s rebuilt mask key."""
        cfg = self.config
        assert cfg.session_id is not None
        s_pk_u, s_pk_v = self._adverts[u].s_pk, self._adverts[v].s_pk
        shared = x25519_agree(sk_v, s_pk_u)
        return _derive.pair_mask_key(shared, cfg.session_id, cfg.round, u, v, s_pk_u, s_pk_v)

    def _check_claims_after_unmask(
        self,
        ring_sum: U32,
        self_keys: Mapping[int, bytes],
        dropped_keys: Mapping[tuple[int, int], bytes],
        rebuilt: Mapping[int, X25519PrivateKey],
    ) -> None:
        """SPEC.md D12, after unmasking: every claim the rebuilt secrets allow is recomputed.

        A false self-mask claim, or a false claim about a dropped neighbour, names its author
        (``cheaters``; the evidence is its own signed CheckResponse) and aborts the round: its
        upload is in the sum and cannot be taken out without revealing it. Disputed pairs,
        both already out of the sum, are settled when either end's mask key was rebuilt.
        Last, the unmasked sum's projection must equal that of the uploads minus the masks.
        """
        cfg = self.config
        proj = self._proj
        assert proj is not None
        seed = self._check_seed
        survivors = sorted(self.u3)
        pairs = sorted(dropped_keys.items())
        batched = claims_hold(
            cfg,
            seed,
            proj,
            [self_keys[u] for u in survivors] + [key for _, key in pairs],
            [self._claims[u].self_claim for u in survivors]
            + [dict(self._claims[u].pair_claims)[v] for (u, v), _ in pairs],
            [1] * len(survivors) + [1 if u < v else -1 for (u, v), _ in pairs],
            self._rng,
        )
        # All claims hold (one combined check), or find and name the first liar one by one.
        masks_total = (
            batched if batched is not None else self._claims_one_by_one(survivors, pairs, self_keys)
        )
        for u, v in self._disputes:
            have = next((w for w in (u, v) if w in rebuilt), None)
            if have is None:
                continue  # neither mask key was rebuilt: the dispute stays unresolved
            other = v if have == u else u
            key = self._pair_key(rebuilt[have], have, other)
            truth = claim_bytes(cfg, seed, mask_projection(cfg, proj, key), key)
            for w, peer in ((u, v), (v, u)):
                if not ct_equal(dict(self._claims[w].pair_claims)[peer], truth):
                    self._name(w, f"its claim about the mask shared with {peer} is false")
                    self.rejected[w] = f"CHECK: false claim about the mask shared with {peer}"
                elif w not in self.cheaters:
                    self.rejected[w] = (
                        f"CHECK: left out because {peer} made a false claim about their mask"
                    )
        uploads = [sum(col) for col in zip(*(self._y_proj[u] for u in self.u3), strict=True)]
        if not projected_sum_matches(cfg, proj, ring_sum[: cfg.d], uploads, masks_total):
            raise AggregateMismatch(
                "the unmasked sum does not project to the checked uploads minus their masks "
                "(an internal inconsistency): nothing is published"
            )

    def _claims_one_by_one(
        self,
        survivors: list[int],
        pairs: list[tuple[tuple[int, int], bytes]],
        self_keys: Mapping[int, bytes],
    ) -> list[int]:
        """Recompute every claim on its own (after a failed batch): the first false one names
        its author and aborts the round; else the masks' total projection."""
        cfg = self.config
        proj = self._proj
        assert proj is not None
        seed = self._check_seed
        masks_total = [0] * len(next(iter(self._y_proj.values())))
        own = mask_projections(cfg, proj, [self_keys[u] for u in survivors])
        for u, a_u in zip(survivors, own, strict=True):
            claims = self._claims[u]
            if not ct_equal(claim_bytes(cfg, seed, a_u, self_keys[u]), claims.self_claim):
                self._name(u, "its claim about its own mask is false (seen after unmasking)")
                raise AggregateMismatch(
                    f"client {u} lied about its own mask: its upload is not the vector it "
                    "committed to; nothing is published",
                    culprit=u,
                )
            masks_total = [t + a for t, a in zip(masks_total, a_u, strict=True)]
        shared = mask_projections(cfg, proj, [key for _, key in pairs])
        for ((u, v), key), p_uv in zip(pairs, shared, strict=True):
            claim = dict(self._claims[u].pair_claims)[v]
            if not ct_equal(claim_bytes(cfg, seed, p_uv, key), claim):
                self._name(u, f"its claim about the mask shared with dropped client {v} is false")
                raise AggregateMismatch(
                    f"client {u} lied about the mask it shares with {v}: nothing is published",
                    culprit=u,
                )
            sign = 1 if u < v else -1
            masks_total = [t + sign * p for t, p in zip(masks_total, p_uv, strict=True)]
        return masks_total

    def _name(self, u: int, why: str) -> None:
        self.cheaters[u] = f"named after unmasking: {why}"
        self.rejected[u] = self.cheaters[u]

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
                Stage.CHECK: self._close_check,
                Stage.CONSISTENCY: self._close_consistency,
                Stage.UNMASK: self._close_unmask,
            }[self.stage]
            return closer()
        except ProtocolAbort as exc:
            exc.party = 0
            self.state = ServerState.ABORTED
            self.abort_reason = exc
            self._acc.discard()
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
        # SPEC.md D14: U1 as a bitmap over the cohort, its signed keys under a Merkle root;
        # each client gets the root, its own entry's proof and its neighbours' entries.
        u1 = sorted(self.u1)
        self._u1_bitmap = cohort_bitmap(self._cohort, u1)
        tree = MerkleTree(
            LABEL_KEY_TREE,
            [
                key_leaf(a.sender, a.c_pk, a.s_pk, a.signature)
                for a in (self._adverts[u] for u in u1)
            ],
        )
        self._seed = graph_seed(cfg.digest, self._u1_bitmap, tree.root)
        self.graph = Ring(self._cohort, cfg.degree, self._seed, self._u1_bitmap).graph()
        self.stage = Stage.SHARE_KEYS
        out: dict[int, ServerMessage] = {}
        for i, u in enumerate(u1):
            entries = tuple(self._adverts[v] for v in sorted(self.graph[u] | {u}))
            out[u] = KeyList(u, entries, self._u1_bitmap, tree.root, tree.prove(i))
        return out

    def _close_share_keys(self) -> dict[int, ServerMessage]:
        self.u2 = frozenset(self._shares)
        self._need(len(self.u2) - 1, "other clients shared keys")
        trees = {u: digest_tree(sk.share_digests) for u, sk in self._shares.items()}
        out: dict[int, ServerMessage] = {}
        for w in sorted(self.u2):
            fwd = []
            for u in sorted(self.graph[w] & self.u2):
                sk = self._shares[u]
                ct = next(c for h, c in sk.ciphertexts if h == w)
                digests = sorted(sk.share_digests, key=lambda d: d.holder)
                i = next(j for j, d in enumerate(digests) if d.holder == w)
                fwd.append(
                    ForwardedShare(
                        u, ct, sk.b_commitment, digests[i], trees[u].prove(i), sk.signature
                    )
                )
            out[w] = ShareBundle(w, tuple(fwd))
        self.stage = Stage.MASKED_INPUT
        return out

    def _close_masked(self) -> dict[int, ServerMessage]:
        self.uploaded = frozenset(self._masked)
        self._need(len(self.uploaded) - 1, "other clients sent masked input")
        if self.config.verified:  # SPEC.md D12: only now is the seed revealed
            self.stage = Stage.CHECK
            return {u: CheckRequest(u, self._check_seed) for u in sorted(self.uploaded)}
        self.u3 = self.uploaded
        return self._survivor_lists()

    def _close_check(self) -> dict[int, ServerMessage]:
        """Compare the two claims of every pair of responders; take every upload that is not
        going on (failed, silent or disputed) out of the sum, before anything is unmasked."""
        ok = set(self._claims)
        claim_of = {u: dict(m.pair_claims) for u, m in self._claims.items()}
        disputed: set[int] = set()
        for u in sorted(ok):
            for v in self._held(u):
                if v > u and v in ok and not ct_equal(claim_of[u][v], claim_of[v][u]):
                    self._disputes.append((u, v))
                    disputed |= {u, v}
        for u, v in self._disputes:
            for w, other in ((u, v), (v, u)):
                self.rejected.setdefault(
                    w,
                    f"CHECK: its claim about the mask shared with {other} disagrees with "
                    f"{other}'s: both left out (the false one is named after unmasking)",
                )
        self.u3 = frozenset(ok - disputed)
        for u in sorted(self.uploaded - self.u3):
            self._acc.subtract(u, self._uploads[u])
        self._uploads.clear()
        with self._cache_lock:
            self._proof_cache.clear()
        self._need(len(self.u3) - 1, "other clients passed the contribution check")
        return self._survivor_lists()

    def _survivor_lists(self) -> dict[int, ServerMessage]:
        """U3 as a bitmap over the cohort (SPEC.md D14), the same for every survivor."""
        self._u3_bitmap = cohort_bitmap(self._cohort, self.u3)
        self.stage = Stage.CONSISTENCY
        return {u: SurvivorList(u, self._u3_bitmap) for u in sorted(self.u3)}

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
        # Survivors: remove PRG(b_u) (docs/protocol.md §4.5), after checking the commitment.
        secrets_b = reconstruct_many(b_shares, cfg.t)
        self_keys: dict[int, bytes] = {}
        for u in sorted(self.u3):
            try:
                b_u = secret_to_bytes(secrets_b[u])
            except InvalidShare:  # not even a 32-byte value: fails the check below, naming u
                b_u = b""
            if not ct_equal(b_commitment(session, u, b_u), self._shares[u].b_commitment):
                raise InvalidShare(
                    f"client {u}'s seed shares are inconsistent with its commitment", culprit=u
                )
            self_keys[u] = _derive.self_mask_key(b_u, session, rnd, u)
            minus.append(self_keys[u])
        # Dropped after sharing: rebuild s_sk_v and remove the masks it shared with survivors.
        needed = {v: s_shares[v] for v in self.u2 - self.u3 if self.graph[v] & self.u3}
        secrets_s = reconstruct_many(needed, cfg.t)
        rebuilt: dict[int, X25519PrivateKey] = {}
        dropped_keys: dict[tuple[int, int], bytes] = {}  # (survivor, dropped) -> pair mask key
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
            rebuilt[v] = sk_v
            for u in partners:
                key = self._pair_key(sk_v, v, u)
                dropped_keys[(u, v)] = key
                # u added sign(u, v) * PRG(s_uv); take it back out.
                (minus if u < v else plus).append(key)
        acc = self._acc.unmask(plus, minus, cfg.encoding.mask)
        if cfg.verified:
            self._check_claims_after_unmask(acc, self_keys, dropped_keys, rebuilt)
        self._result = RoundResult(np.ascontiguousarray(acc[: cfg.d]), self.u3)
        self.state = ServerState.DONE
        return {}
