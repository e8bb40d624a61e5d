"""The client side of docs/protocol.md §4 as a sans-I/O state machine.

Rules (each check raises a :class:`~secagg.ProtocolAbort` subclass and moves the client to the
terminal ``aborted`` state, after which it answers nothing):

* Before sending anything the round config passes the local :class:`~secagg.ClientPolicy`
  (§2): the server's ``t``, ``k``, ``n`` are never trusted.
* §4.0/§4.1: the key list must hold only registered ids, each once, with valid signatures for
  every neighbour; the neighbour graph is recomputed here from the keys, never taken from the
  server; this client's own entry must be exactly what it sent.
* §4.2: shares go only to neighbours, encrypted and authenticated with ``config_digest``.
* §4.3: each owner's ciphertext must decrypt, name the right parties, and match the digests the
  owner signed. A key set masks exactly one input (docs/threats.md SA-19): the stage cannot be
  replayed. In a verified round (``config.norm_bound``, docs/protocol.md §7) the client also sends
  row commitments to its vector; an input above the bound is refused when it is set
  (:class:`~secagg.NormBoundExceeded`).
* CHECK (verified rounds only, SPEC.md D12): once every upload is in, the server reveals a
  seed; the client answers once with commitments to the projections of its own masks and a
  zero-knowledge proof that its upload is its committed, norm-bounded vector, masked.
* §4.4: the survivor set U3 must contain this client, only neighbours it holds shares from,
  and at least ``t`` of them; at least ``t`` neighbours must sign the same set.
* §4.5: for each neighbour, the share of ``b`` if it survived, of ``s_sk`` if it dropped after
  sharing, never both, never for anyone outside U2 (docs/threats.md SA-01).

The transition table::

    state      | input            | output                | next
    -----------+------------------+-----------------------+----------
    INIT       | advertise()      | AdvertiseKeys         | ADVERTISED
    ADVERTISED | KeyList          | ShareKeys             | SHARED
    SHARED     | ShareBundle      | MaskedInput           | MASKED
    MASKED     | CheckRequest     | CheckResponse         | CHECKED  (verified rounds)
    MASKED     | SurvivorList     | ConsistencySignature  | SIGNED   (unverified rounds)
    CHECKED    | SurvivorList     | ConsistencySignature  | SIGNED
    SIGNED     | SignatureBundle  | UnmaskShares          | DONE
    any        | anything else    | raises                | ABORTED
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import _derive
from secagg._crypto import (
    LABEL_ADVERTISE,
    LABEL_CHECK,
    LABEL_CONSISTENCY,
    LABEL_MASKED,
    LABEL_SHARE_KEYS,
    aead_open,
    aead_seal,
    b_commitment,
    check_x25519_public,
    ct_equal,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    x25519_agree,
    x25519_keypair,
)
from secagg._errors import (
    EncodingError,
    InconsistentView,
    InsufficientSurvivors,
    InvalidMessage,
    InvalidShare,
    PolicyViolation,
    ProtocolAbort,
    UnexpectedMessage,
)
from secagg._rng import RandomSource, SystemRandom
from secagg.config import ClientPolicy, RoundConfig
from secagg.graph import (
    LABEL_KEY_TREE,
    Cohort,
    Ring,
    bitmap_bit,
    bitmap_count,
    check_bitmap,
    graph_seed,
    key_leaf,
)
from secagg.merkle import root_from, verify_inclusion
from secagg.messages import (
    LABEL_DIGEST_TREE,
    AdvertiseKeys,
    CheckRequest,
    CheckResponse,
    ConsistencySignature,
    ForwardedShare,
    KeyList,
    MaskedInput,
    ServerMessage,
    ShareBundle,
    ShareDigest,
    ShareKeys,
    SignatureBundle,
    SurvivorList,
    UnmaskShares,
    masked_digest,
    share_keys_payload,
)
from secagg.prg import apply_masks
from secagg.shamir import bytes_to_secret, share_from_bytes, share_to_bytes, split
from secagg.verify_round import answer_check, check_digest, check_norm, commit_input

if TYPE_CHECKING:
    from secagg.verify import Opening

__all__ = ["ClientState", "SecAggClient"]

U32 = npt.NDArray[np.uint32]
_T = TypeVar("_T")


class ClientState(enum.Enum):
    INIT = "init"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    CHECKED = "checked"
    SIGNED = "signed"
    DONE = "done"
    ABORTED = "aborted"


class SecAggClient:
    """One client's side of one round. Fresh keys per instance: never reuse across rounds.

    ``registry`` maps every consortium member's id to its raw Ed25519 public key.
    ``ring_input`` (uint32, each < 2^b, length d) may be given now or with :meth:`set_input`
    any time before the MaskedInput stage.

    Security: X25519 keys, the self-mask seed and Shamir coefficients come from ``rng`` (the
    OS CSPRNG unless a test policy allows a deterministic source); they are dropped when the
    round ends or aborts.
    """

    def __init__(
        self,
        config: RoundConfig,
        client_id: int,
        identity: Ed25519PrivateKey,
        registry: Mapping[int, bytes] | Cohort,
        ring_input: U32 | None = None,
        *,
        policy: ClientPolicy | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.config = config
        self.id = client_id
        self.policy = policy if policy is not None else ClientPolicy()
        self.rng: RandomSource = rng if rng is not None else SystemRandom()
        self._identity = identity
        self._registry = Cohort.of(registry)  # shared when given one, never mutated
        self.state = ClientState.INIT
        self._input: U32 | None = None
        if ring_input is not None:
            self.set_input(ring_input)
        # Round state, filled stage by stage.
        self._c_sk = b""
        self._s_sk = b""
        self._channels: dict[int, bytes] = {}  # neighbour -> channel key (derived, SPEC.md D1)
        self._b = b""
        self._advert: AdvertiseKeys | None = None
        self._keys: dict[int, AdvertiseKeys] = {}
        self._seed = b""
        self.neighbours: frozenset[int] = frozenset()
        self._ring: Ring | None = None
        self._u3_bitmap = b""
        # Who advertised keys (U1), the bitmap over the cohort: U3 must lie inside.
        self._u1_bitmap = b""
        self._held: dict[int, tuple[int, int]] = {}  # owner -> (y_s, y_b) this client holds
        self._survivors: frozenset[int] = frozenset()
        # Verified rounds only, from MaskedInput to CHECK: what the proof needs.
        self._opening: Opening | None = None
        self._upload: U32 | None = None
        self._mask_keys: tuple[bytes, tuple[tuple[int, bytes, int], ...]] | None = None
        self.abort_reason: ProtocolAbort | None = None

    # -- public surface -------------------------------------------------------------------

    def set_input(self, ring_input: U32) -> None:
        """Provide the encoded vector (ring elements) this client contributes."""
        arr = np.asarray(ring_input)
        if arr.dtype != np.uint32 or arr.ndim != 1 or arr.shape[0] != self.config.d:
            raise EncodingError(f"ring input must be a uint32 vector of length {self.config.d}")
        if arr.size and int(arr.max()) > self.config.encoding.mask:
            raise EncodingError("ring input has elements outside Z_2^b")
        if self.state not in (ClientState.INIT, ClientState.ADVERTISED, ClientState.SHARED):
            raise UnexpectedMessage("the input can no longer be changed", party=self.id)
        check_norm(self.config, arr)  # a verified round: above the bound, no proof exists
        self._input = np.array(arr, dtype=np.uint32, copy=True)

    def advertise(self) -> AdvertiseKeys:
        """Check the round against the local policy, then start it (§4.0)."""
        return self._guard(ClientState.INIT, self._advertise)

    def receive(
        self, message: ServerMessage
    ) -> ShareKeys | MaskedInput | CheckResponse | ConsistencySignature | UnmaskShares:
        """Process one server message and return the reply (the h11-style whole I/O surface)."""
        if getattr(message, "recipient", None) != self.id:
            self._fail(UnexpectedMessage("message addressed to another client"))
        if isinstance(message, KeyList):
            return self._guard(ClientState.ADVERTISED, lambda: self._on_key_list(message))
        if isinstance(message, ShareBundle):
            return self._guard(ClientState.SHARED, lambda: self._on_share_bundle(message))
        if isinstance(message, CheckRequest):
            if not self.config.verified:
                self._fail(UnexpectedMessage("a check request in a round without verification"))
            return self._guard(ClientState.MASKED, lambda: self._on_check(message))
        if isinstance(message, SurvivorList):
            before = ClientState.CHECKED if self.config.verified else ClientState.MASKED
            return self._guard(before, lambda: self._on_survivors(message))
        if isinstance(message, SignatureBundle):
            return self._guard(ClientState.SIGNED, lambda: self._on_signatures(message))
        self._fail(UnexpectedMessage(f"unknown message {type(message).__name__}"))

    # -- machinery ------------------------------------------------------------------------

    def _guard(self, expected: ClientState, step: Callable[[], _T]) -> _T:
        if self.state is not expected:
            self._fail(
                UnexpectedMessage(
                    f"client {self.id} is in state {self.state.value}, not {expected.value}"
                )
            )
        try:
            return step()
        except ProtocolAbort as exc:
            self._fail(exc)
        except (ValueError, KeyError, TypeError) as exc:  # malformed input from the server
            self._fail(InvalidMessage(f"malformed server message: {exc}"))

    def _fail(self, exc: ProtocolAbort) -> NoReturn:
        if exc.party is None:
            exc.party = self.id
        self.state = ClientState.ABORTED
        self.abort_reason = exc
        self._forget()
        raise exc

    def _forget(self) -> None:
        """Drop every round secret (a key set serves one round only)."""
        self._c_sk = self._s_sk = self._b = b""
        self._channels = {}
        self._held = {}
        self._input = None
        self._opening = None
        self._upload = None
        self._mask_keys = None

    def _cohort(self) -> npt.NDArray[np.int64]:
        """Every registered id, sorted: the positions of the round's bitmaps (SPEC.md D14).
        Sorted once with the registry (:class:`~secagg.graph.Cohort`), shared, never copied."""
        if len(self._registry) != self.config.n:
            raise PolicyViolation(
                f"the registry has {len(self._registry)} members but the round says "
                f"n={self.config.n}"
            )
        return self._registry.ids

    def _index(self, u: int) -> int:
        """``u``'s position in the cohort (``u`` must be registered): O(log n)."""
        return self._registry.index(u)

    def _in_u1(self, u: int) -> bool:
        return u in self._registry and bitmap_bit(self._u1_bitmap, self._index(u))

    # -- stages ---------------------------------------------------------------------------

    def _advertise(self) -> AdvertiseKeys:
        cfg = self.config
        if cfg.session_id is None:
            raise PolicyViolation("the round has no session id")
        if self.rng.deterministic and not self.policy.allow_deterministic_rng:
            raise PolicyViolation("a deterministic RNG is for tests only; policy refuses it")
        if self.id not in self._registry:
            raise PolicyViolation(f"client {self.id} is not in the registry")
        if not ct_equal(self._registry[self.id], ed25519_public(self._identity)):
            raise PolicyViolation("the identity key does not match the registry entry")
        self.policy.check(cfg)
        self._cohort()  # the round's n is the registry's size (SPEC.md D14)
        self._c_sk, c_pk = x25519_keypair(self.rng)
        self._s_sk, s_pk = x25519_keypair(self.rng)
        unsigned = AdvertiseKeys(self.id, c_pk, s_pk, b"")
        sig = ed25519_sign(self._identity, LABEL_ADVERTISE, cfg.digest, unsigned.signed_payload())
        self._advert = AdvertiseKeys(self.id, c_pk, s_pk, sig)
        self.state = ClientState.ADVERTISED
        return self._advert

    def _on_key_list(self, msg: KeyList) -> ShareKeys:
        cfg = self.config
        assert self._advert is not None
        # SPEC.md D14: U1 is a bitmap over the cohort (the sorted registry ids), the keys are
        # committed by a Merkle root, and this client gets only its neighbours' entries.
        cohort = self._cohort()
        u1 = msg.present
        try:
            check_bitmap(cohort.size, u1)
        except ValueError as exc:
            raise InvalidMessage(f"malformed U1 bitmap: {exc}", culprit=0) from None
        me = self._index(self.id)
        if not bitmap_bit(u1, me):
            raise InconsistentView("the key list does not carry this client's own keys")
        count = bitmap_count(u1)
        if count < self.policy.min_cohort:
            raise InsufficientSurvivors(f"only {count} clients advertised keys")
        # Its own signed entry must be in the committed tree, at its rank in U1: every honest
        # client checks this, so the graph seed depends on every honest client's fresh keys.
        if msg.own_proof.index != bitmap_count(u1, me):
            raise InconsistentView("this client's key entry is proven at the wrong place")
        a = self._advert
        verify_inclusion(
            LABEL_KEY_TREE, msg.key_root, count, key_leaf(a.sender, a.c_pk, a.s_pk, a.signature),
            msg.own_proof,
        )  # fmt: skip
        self._seed = graph_seed(cfg.digest, msg.present, msg.key_root)
        self._ring = Ring(cohort, cfg.degree, self._seed, u1)
        self.neighbours = self._ring.neighbours(self.id)
        if len(self.neighbours) < cfg.t:
            raise InsufficientSurvivors(
                f"{len(self.neighbours)} neighbours, fewer than the threshold t={cfg.t}"
            )
        keys: dict[int, AdvertiseKeys] = {}
        for e in msg.entries:
            if e.sender in keys:
                raise InvalidMessage(f"client {e.sender} listed twice", culprit=0)
            if e.sender not in self._registry:
                raise InvalidMessage(f"unregistered client {e.sender} (docs/threats.md SA-05)")
            keys[e.sender] = e
        if keys.get(self.id) != self._advert:
            raise InconsistentView("the key list does not carry this client's own keys")
        if set(keys) != self.neighbours | {self.id}:
            missing = sorted(self.neighbours - set(keys))
            extra = sorted(set(keys) - self.neighbours - {self.id})
            raise InconsistentView(
                f"the key list must carry exactly this client's neighbours (missing {missing}, "
                f"not neighbours {extra})"
            )
        # Every neighbour's keys are checked before anything is sent to anyone (SA-04). A
        # neighbour signs one advertisement per round, so the entry shown here is the one in
        # the tree whenever the neighbour is honest (SPEC.md D14).
        seen_pks = {self._advert.c_pk, self._advert.s_pk}
        for v in sorted(self.neighbours):
            e = keys[v]
            check_x25519_public(e.c_pk)
            check_x25519_public(e.s_pk)
            ed25519_verify(
                self._registry[v],
                e.signature,
                LABEL_ADVERTISE,
                cfg.digest,
                e.signed_payload(),
                who=v,
            )
            if e.c_pk in seen_pks or e.s_pk in seen_pks:
                raise InvalidMessage(f"client {v} reuses a public key (replay)", culprit=v)
            seen_pks |= {e.c_pk, e.s_pk}
        self._keys = {v: keys[v] for v in self.neighbours}
        self._u1_bitmap = u1

        # §4.2: share s_sk and b among the neighbours.
        session = cfg.session_id
        assert session is not None
        self._b = self.rng.bytes(32)
        holders = sorted(self.neighbours)
        s_shares = split(bytes_to_secret(self._s_sk), cfg.t, holders, self.rng)
        b_shares = split(bytes_to_secret(self._b), cfg.t, holders, self.rng)
        digests: list[ShareDigest] = []
        cts: list[tuple[int, bytes]] = []
        for v in holders:
            y_s, y_b = share_to_bytes(s_shares[v]), share_to_bytes(b_shares[v])
            digests.append(
                ShareDigest(
                    v,
                    _derive.share_digest(b"s", cfg.digest, self.id, v, y_s),
                    _derive.share_digest(b"b", cfg.digest, self.id, v, y_b),
                )
            )
            key = self._channel_key(v)
            pt = _derive.share_plaintext(self.id, v, y_s, y_b)
            cts.append((v, aead_seal(key, pt, _derive.share_ad(cfg.digest, self.id, v), self.rng)))
        commit = b_commitment(session, self.id, self._b)
        unsigned = ShareKeys(self.id, commit, tuple(digests), tuple(cts), b"")
        sig = ed25519_sign(
            self._identity, LABEL_SHARE_KEYS, cfg.digest, unsigned.signed_payload(self._seed)
        )
        self.state = ClientState.SHARED
        return ShareKeys(self.id, commit, tuple(digests), tuple(cts), sig)

    def _channel_key(self, v: int) -> bytes:
        """The AEAD key shared with neighbour ``v``, agreed once per round: the same key seals
        the shares sent to ``v`` and opens those ``v`` sent (a derived cache, wiped with the
        secrets it came from)."""
        got = self._channels.get(v)
        if got is not None:
            return got
        assert self._advert is not None and self.config.session_id is not None
        shared = x25519_agree(self._c_sk, self._keys[v].c_pk)
        got = self._channels[v] = _derive.channel_key(
            shared,
            self.config.session_id,
            self.config.round,
            self.id,
            v,
            self._advert.c_pk,
            self._keys[v].c_pk,
        )
        return got

    def _check_forwarded(self, fs: ForwardedShare) -> tuple[int, int]:
        cfg = self.config
        u = fs.owner
        # The owner signed the root of its digests, one per holder in holder order (SPEC.md
        # D14): this holder's digest, at its rank among the owner's neighbours, must lead there.
        assert self._ring is not None
        if not self._in_u1(u):
            raise InvalidShare(f"client {u} is not in U1", culprit=0)
        holders = sorted(self._ring.neighbours(u))
        if fs.digest.holder != self.id or self.id not in holders:
            raise InvalidShare(f"client {u}'s digest is not for this holder", culprit=u)
        if fs.digest_proof.index != holders.index(self.id):
            raise InvalidShare(f"client {u}'s digest is proven at the wrong place", culprit=u)
        try:
            root = root_from(LABEL_DIGEST_TREE, len(holders), fs.digest.leaf(), fs.digest_proof)
        except InconsistentView:
            raise InvalidShare(f"client {u}'s digest proof is malformed", culprit=u) from None
        ed25519_verify(
            self._registry[u],
            fs.signature,
            LABEL_SHARE_KEYS,
            cfg.digest,
            share_keys_payload(u, fs.b_commitment, self._seed, root),
            who=u,
        )
        mine = [fs.digest]
        pt = aead_open(
            self._channel_key(u), fs.ciphertext, _derive.share_ad(cfg.digest, u, self.id)
        )
        owner, holder, y_s, y_b = _derive.parse_share_plaintext(pt)
        if owner != u or holder != self.id:
            raise InvalidShare(f"share from {u} names the wrong parties", culprit=u)
        if not (
            ct_equal(_derive.share_digest(b"s", cfg.digest, u, self.id, y_s), mine[0].s_digest)
            and ct_equal(_derive.share_digest(b"b", cfg.digest, u, self.id, y_b), mine[0].b_digest)
        ):
            raise InvalidShare(f"share from {u} does not match its signed digest", culprit=u)
        return share_from_bytes(y_s), share_from_bytes(y_b)

    def _on_share_bundle(self, msg: ShareBundle) -> MaskedInput:
        cfg = self.config
        if self._input is None:
            raise UnexpectedMessage("no input was provided before the MaskedInput stage")
        held: dict[int, tuple[int, int]] = {}
        for fs in msg.shares:
            if fs.owner not in self.neighbours:
                raise InvalidMessage(f"share from non-neighbour {fs.owner}", culprit=0)
            if fs.owner in held:
                raise InvalidMessage(f"two shares from {fs.owner}", culprit=0)
            held[fs.owner] = self._check_forwarded(fs)
        if len(held) < cfg.t:
            raise InsufficientSurvivors(f"only {len(held)} neighbours shared keys, t={cfg.t}")
        self._held = held

        # §4.3: y = x + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)  (mod 2^b)
        session, rnd = cfg.session_id, cfg.round
        assert session is not None and self._advert is not None
        self_key = _derive.self_mask_key(self._b, session, rnd, self.id)
        plus = [self_key]
        minus: list[bytes] = []
        pairs: list[tuple[int, bytes, int]] = []
        s_sk = X25519PrivateKey.from_private_bytes(self._s_sk)
        for v in sorted(held):
            s_pk_v = self._keys[v].s_pk
            shared = x25519_agree(s_sk, s_pk_v)
            key = _derive.pair_mask_key(shared, session, rnd, self.id, v, self._advert.s_pk, s_pk_v)
            (plus if self.id < v else minus).append(key)
            pairs.append((v, key, 1 if self.id < v else -1))
        commitment = b""
        if cfg.verified:
            # docs/protocol.md §7: commit now; the proof waits for the CHECK stage's seed (D12).
            try:
                commitment, self._opening = commit_input(cfg, self._input, self.rng)
            except EncodingError as exc:  # set_input checked the bound; be sure anyway
                raise PolicyViolation(f"cannot commit to this input: {exc}") from None
            self._mask_keys = (self_key, tuple(pairs))
        # Masked in place (set_input made this array), reduced into the ring and hashed for the
        # signature chunk by chunk while each slice is in cache (SPEC.md D5).
        y = self._input
        self._input = None  # SA-19: this key set masks exactly one input
        digest = masked_digest(self.id, commitment)
        apply_masks(y, plus, minus, reduce_mask=cfg.encoding.mask, digest=digest)
        if cfg.verified:
            self._upload = y.copy()
        sig = ed25519_sign(self._identity, LABEL_MASKED, cfg.digest, digest.digest())
        self.state = ClientState.MASKED
        return MaskedInput(self.id, y, sig, commitment)

    def _on_check(self, msg: CheckRequest) -> CheckResponse:
        """SPEC.md D12: claims and the norm + consistency proof, once (seconds at large d)."""
        cfg = self.config
        assert (
            self._opening is not None and self._upload is not None and self._mask_keys is not None
        )
        self_key, pairs = self._mask_keys
        try:
            ans = answer_check(
                cfg, self.id, self._opening, self._upload, msg.seed, self_key, pairs, self.rng
            )
        except EncodingError as exc:
            raise PolicyViolation(str(exc)) from None
        # The secrets the proof needed are not needed again.
        self._opening, self._upload, self._mask_keys = None, None, None
        payload = check_digest(msg.seed, ans.self_claim, ans.pair_claims, ans.proof)
        sig = ed25519_sign(self._identity, LABEL_CHECK, cfg.digest, _derive.u32(self.id) + payload)
        self.state = ClientState.CHECKED
        return CheckResponse(self.id, ans.self_claim, ans.pair_claims, ans.proof, sig)

    def _on_survivors(self, msg: SurvivorList) -> ConsistencySignature:
        cfg = self.config
        cohort = self._cohort()
        u3 = msg.bitmap
        try:
            check_bitmap(cohort.size, u3)
        except ValueError as exc:
            raise InvalidMessage(f"malformed survivor bitmap: {exc}", culprit=0) from None
        if not bitmap_bit(u3, self._index(self.id)):
            raise InconsistentView("this client is missing from the survivor list")
        # U3 must lie inside U1 (registered ids in the key tree this client checked), or the
        # server could pad U3 past min_cohort with ids that never took part (SPEC.md D13). Both
        # are bitmaps over the registry, so an unregistered id cannot even be named.
        beyond = np.frombuffer(u3, dtype=np.uint8) & ~np.frombuffer(self._u1_bitmap, np.uint8)
        outside = np.flatnonzero(np.unpackbits(beyond, bitorder="little"))
        if outside.size:
            shown = [int(cohort[i]) for i in outside[:10].tolist()]
            raise InconsistentView(
                f"survivors {shown} never advertised keys in this round (U3 not in U1)"
            )
        size = bitmap_count(u3)
        near = frozenset(v for v in self.neighbours if bitmap_bit(u3, self._index(v)))
        unknown = near - self._held.keys()
        if unknown:
            raise InconsistentView(
                f"survivors {sorted(unknown)} never shared keys with this client (U3 not in U2)"
            )
        if len(near) < cfg.t or size < self.policy.min_cohort:
            raise InsufficientSurvivors(
                f"{size} survivors ({len(near)} neighbours): below t={cfg.t} or the minimum"
            )
        self._survivors = near  # the survivors this client deals with: its neighbours
        self._u3_bitmap = msg.bitmap
        payload = _derive.consistency_payload(self._seed, msg.bitmap)
        sig = ed25519_sign(self._identity, LABEL_CONSISTENCY, cfg.digest, payload)
        self.state = ClientState.SIGNED
        return ConsistencySignature(self.id, sig)

    def _on_signatures(self, msg: SignatureBundle) -> UnmaskShares:
        cfg = self.config
        payload = _derive.consistency_payload(self._seed, self._u3_bitmap)
        signers: set[int] = set()
        for v, sig in msg.signatures:
            if v == self.id:
                continue
            if v in signers:
                raise InvalidMessage(f"two signatures from {v}", culprit=0)
            if v not in self.neighbours or v not in self._survivors:
                raise InconsistentView(f"signature from {v}, not a surviving neighbour")
            ed25519_verify(self._registry[v], sig, LABEL_CONSISTENCY, cfg.digest, payload, who=v)
            signers.add(v)
        # Bonawitz et al.: t neighbours must have signed the same view.
        if len(signers) < cfg.t:
            raise InconsistentView(
                f"only {len(signers)} consistent signatures, {cfg.t} needed (docs/threats.md SA-02)"
            )
        b_out: list[tuple[int, bytes]] = []
        s_out: list[tuple[int, bytes]] = []
        for v in sorted(self._held):
            y_s, y_b = self._held[v]
            if v in self._survivors:
                b_out.append((v, share_to_bytes(y_b)))
            else:
                s_out.append((v, share_to_bytes(y_s)))
        # SA-01: the two lists are disjoint by construction; check anyway before anything leaves.
        if {v for v, _ in b_out} & {v for v, _ in s_out}:
            raise ProtocolAbort("a neighbour would be revealed both ways")
        self.state = ClientState.DONE
        self._forget()
        return UnmaskShares(self.id, tuple(b_out), tuple(s_out))
