"""Adversarial harness: every party of one round as a state machine, driven by hand.

The test plays the network, and through it a malicious server or client: it decides which
message reaches whom, may rewrite, withhold or replay any of them, and keeps what every client
sent and was sent. Everything is reproducible from ``seed`` (test-only deterministic RNG).

Typical use::

    coh = make_cohort(RoundConfig(n=6, t=4, d=16), seed=1)
    key_lists = coh.run_to(Stage.SHARE_KEYS)     # the server just closed ADVERTISE_KEYS
    ...                                          # tamper with key_lists, feed clients by hand
    result = coh.finish()                        # honest parties complete the round
    coh.assert_aggregate(result)                 # decode == sum of clipped inputs of U3
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    ClientState,
    DeterministicRandom,
    ProtocolAbort,
    RoundConfig,
    RoundResult,
    SecAggClient,
    SecAggServer,
    Stage,
)
from secagg._crypto import (
    LABEL_ADVERTISE,
    ed25519_public,
    ed25519_sign,
    x25519_keypair,
)
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
    digest_tree,
    stage_of,
)
from secagg.simulate import _resigned

__all__ = [
    "TEST_POLICY",
    "Cohort",
    "bundle_from",
    "chi2_uniform_pvalue",
    "make_cohort",
    "resign_masked",
    "signed_advert",
    "stranger",
    "with_round",
]

F64 = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]

TEST_POLICY = ClientPolicy(allow_deterministic_rng=True)


def stranger(tag: str) -> Ed25519PrivateKey:
    """An Ed25519 identity that is in nobody's registry."""
    return Ed25519PrivateKey.from_private_bytes(DeterministicRandom(f"stranger/{tag}").bytes(32))


def signed_advert(
    config: RoundConfig,
    sender: int,
    signer: Ed25519PrivateKey,
    *,
    c_pk: bytes | None = None,
    s_pk: bytes | None = None,
    tag: str = "",
) -> AdvertiseKeys:
    """An AdvertiseKeys for ``sender`` signed by ``signer`` under ``config``'s digest.

    Keys not given are fresh X25519 public keys (their private halves are thrown away).
    """
    rng = DeterministicRandom(f"advert/{sender}/{tag}")
    c_pk = c_pk if c_pk is not None else x25519_keypair(rng)[1]
    s_pk = s_pk if s_pk is not None else x25519_keypair(rng)[1]
    unsigned = AdvertiseKeys(sender, c_pk, s_pk, b"")
    sig = ed25519_sign(signer, LABEL_ADVERTISE, config.digest, unsigned.signed_payload())
    return AdvertiseKeys(sender, c_pk, s_pk, sig)


def resign_masked(
    config: RoundConfig, identity: Ed25519PrivateKey, msg: MaskedInput, masked: U32
) -> MaskedInput:
    """A malicious client's own, correctly signed, MaskedInput carrying ``masked`` (and the
    commitment of ``msg``, in a verified round)."""
    return _resigned(MaskedInput(msg.sender, masked, b"", msg.commitment), identity, config)


def closing_stage(msg: ServerMessage, config: RoundConfig) -> Stage:
    """The stage whose closing produced a server message (CheckRequest closes MASKED_INPUT
    and SurvivorList closes CHECK in a verified round)."""
    if isinstance(msg, KeyList):
        return Stage.ADVERTISE_KEYS
    if isinstance(msg, ShareBundle):
        return Stage.SHARE_KEYS
    if isinstance(msg, CheckRequest):
        return Stage.MASKED_INPUT
    if isinstance(msg, SurvivorList):
        return Stage.CHECK if config.verified else Stage.MASKED_INPUT
    return Stage.CONSISTENCY


def bundle_from(recipient: int, share_keys: Iterable[ShareKeys]) -> ShareBundle:
    """What a server that relays blindly forwards to ``recipient``: every ciphertext for it,
    with the owner's digest for it and its path to the root the owner signed (SPEC.md D14)."""
    fwd = []
    for sk in sorted(share_keys, key=lambda m: m.sender):
        digests = sorted(sk.share_digests, key=lambda d: d.holder)
        tree = digest_tree(sk.share_digests)
        for holder, ct in sk.ciphertexts:
            if holder == recipient:
                i = next(j for j, d in enumerate(digests) if d.holder == holder)
                fwd.append(
                    ForwardedShare(
                        sk.sender, ct, sk.b_commitment, digests[i], tree.prove(i), sk.signature
                    )
                )
    return ShareBundle(recipient, tuple(fwd))


def chi2_uniform_pvalue(values: npt.ArrayLike, m: int) -> float:
    """p-value of Pearson's chi-square test that ``values`` are uniform on ``[0, m)``.

    Uses scipy when it is installed; otherwise the Wilson-Hilferty normal approximation of the
    chi-square tail, which is accurate to a few percent of the p-value for m >= 8.
    """
    v = np.asarray(values, dtype=np.int64).ravel()
    assert v.size and int(v.min()) >= 0 and int(v.max()) < m, "value outside the ring"
    counts = np.bincount(v, minlength=m).astype(np.float64)
    expected = v.size / m
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = m - 1
    try:
        from scipy.stats import chi2  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - scipy is optional
        z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
        return 0.5 * math.erfc(z / math.sqrt(2))
    return float(chi2.sf(stat, df))


@dataclass
class Cohort:
    """One round: the clients, the reference server, and a transcript of every message."""

    config: RoundConfig
    identities: dict[int, Ed25519PrivateKey]
    registry: dict[int, bytes]
    floats: dict[int, F64]
    clients: dict[int, SecAggClient]
    server: SecAggServer
    sent: dict[int, dict[Stage, ClientMessage]] = field(default_factory=dict)
    received: dict[int, dict[Stage, ServerMessage]] = field(default_factory=dict)

    @property
    def cohort(self) -> list[int]:
        """Every registered id, sorted: the positions of the round's bitmaps (SPEC.md D14)."""
        return sorted(self.registry)

    def survivors(self, recipient: int, ids: Iterable[int]) -> SurvivorList:
        """A SurvivorList for ``recipient`` listing ``ids`` (what a server sends)."""
        return SurvivorList.of(recipient, self.cohort, frozenset(ids))

    # -- driving the parties -------------------------------------------------------------

    def advertise(self, skip: Iterable[int] = ()) -> dict[int, AdvertiseKeys]:
        """Every client (except ``skip``) starts the round; nothing is delivered yet."""
        out: dict[int, AdvertiseKeys] = {}
        for u, c in self.clients.items():
            if u not in set(skip):
                out[u] = c.advertise()
                self.sent[u][Stage.ADVERTISE_KEYS] = out[u]
        return out

    def answer(
        self, outgoing: Mapping[int, ServerMessage], skip: Iterable[int] = ()
    ) -> dict[int, ClientMessage]:
        """Hand each client its server message; collect the replies (nothing delivered yet).

        An honest client's abort propagates: tests that expect one call ``receive`` directly.
        """
        skipped = set(skip)
        replies: dict[int, ClientMessage] = {}
        for u, msg in outgoing.items():
            if u in skipped:
                continue
            self.received[u][closing_stage(msg, self.config)] = msg
            reply = self.clients[u].receive(msg)
            self.sent[u][stage_of(reply)] = reply
            replies[u] = reply
        return replies

    def submit(self, messages: Mapping[int, ClientMessage] | Iterable[ClientMessage]) -> None:
        """Deliver to the server; a refused message is recorded in ``server.rejected``."""
        msgs = messages.values() if isinstance(messages, Mapping) else messages
        for m in msgs:
            with contextlib.suppress(ProtocolAbort):
                self.server.receive(m)

    def run_to(
        self, stage: Stage, drops: Mapping[Stage, Iterable[int]] | None = None
    ) -> dict[int, ServerMessage]:
        """Run everyone honestly until the server collects ``stage`` messages.

        Returns the server messages that open ``stage`` (the clients have not seen them yet);
        for ``ADVERTISE_KEYS`` nothing has happened yet and ``{}`` is returned.
        ``drops[s]`` lists clients that send nothing from stage ``s`` on.
        """
        if stage is Stage.ADVERTISE_KEYS:
            return {}
        self.submit(self.advertise(skip=self._dropped(Stage.ADVERTISE_KEYS, drops)))
        out = self.server.close_stage()
        while self.server.stage is not stage:
            self.submit(self.answer(out, skip=self._dropped(self.server.stage, drops)))
            out = self.server.close_stage()
        return out

    def finish(
        self,
        opening: Mapping[int, ServerMessage] | None = None,
        drops: Mapping[Stage, Iterable[int]] | None = None,
    ) -> RoundResult:
        """Complete the round honestly from where it stands.

        ``opening`` are server messages of the current stage the clients still have to answer
        (e.g. what :meth:`run_to` returned); clients that already replied are skipped.
        """
        out: Mapping[int, ServerMessage] = opening or {}
        if self.server.stage is Stage.ADVERTISE_KEYS:
            done = {u for u in self.clients if Stage.ADVERTISE_KEYS in self.sent[u]}
            done |= self._dropped(Stage.ADVERTISE_KEYS, drops)
            self.submit(self.advertise(skip=done))
        while True:
            stage = self.server.stage
            todo = {u: m for u, m in out.items() if stage not in self.sent[u] and self._alive(u)}
            self.submit(self.answer(todo, skip=self._dropped(stage, drops)))
            out = self.server.close_stage()
            if stage is Stage.UNMASK:
                return self.server.result

    def _alive(self, u: int) -> bool:
        return self.clients[u].state is not ClientState.ABORTED

    @staticmethod
    def _dropped(stage: Stage, drops: Mapping[Stage, Iterable[int]] | None) -> set[int]:
        return {u for s, us in (drops or {}).items() if s.value <= stage.value for u in us}

    # -- checking the outcome ------------------------------------------------------------

    def clipped_sum(self, included: Iterable[int]) -> F64:
        """The plaintext oracle (tests only): the sum of the included clients' clipped inputs."""
        enc = self.config.encoding
        total = np.zeros(self.config.d, dtype=np.float64)
        for u in included:
            total += enc.clipped(self.floats[u])
        return total

    def assert_aggregate(self, result: RoundResult, included: Iterable[int] | None = None) -> None:
        """TOLERATE: the decoded sum equals the clipped-input sum of ``result.included``."""
        if included is not None:
            assert result.included == frozenset(included), (result.included, included)
        enc = self.config.encoding
        agg = enc.decode(result.ring_sum)
        expected = self.clipped_sum(result.included)
        bound = enc.error_bound(len(result.included))
        worst = float(np.max(np.abs(agg - expected)))
        assert worst <= bound + 1e-9, f"aggregate off by {worst} > bound {bound}"

    def consistency_bundle(
        self, recipient: int, signatures: Mapping[int, ConsistencySignature]
    ) -> SignatureBundle:
        """A SignatureBundle carrying ``signatures`` of the recipient's neighbours."""
        nbrs = self.clients[recipient].neighbours
        sigs = tuple((v, s.signature) for v, s in sorted(signatures.items()) if v in nbrs)
        return SignatureBundle(recipient, sigs)


def make_cohort(
    config: RoundConfig,
    *,
    seed: int,
    tag: str = "",
    identities: Mapping[int, Ed25519PrivateKey] | None = None,
    inputs: Mapping[int, npt.ArrayLike] | None = None,
    client_configs: Mapping[int, RoundConfig] | None = None,
    policy: ClientPolicy = TEST_POLICY,
    client_factory: Callable[..., SecAggClient] | None = None,
) -> Cohort:
    """Identities, registry, float inputs, clients and server for ``config``.

    ``identities`` lets two rounds share long-term keys (replay tests); every round-scoped
    secret still comes from an RNG keyed by ``seed`` and ``tag``. ``client_configs`` gives some
    clients a different view of the round (SA-06).
    """
    if config.session_id is None:
        config = config.with_session(DeterministicRandom(f"session/{seed}/{tag}").bytes(16))
    ids = range(1, config.n + 1)
    if identities is None:
        identities = {
            u: Ed25519PrivateKey.from_private_bytes(
                DeterministicRandom(f"identity/{seed}/{u}").bytes(32)
            )
            for u in ids
        }
    ident = dict(identities)
    registry = {u: ed25519_public(k) for u, k in ident.items()}
    gen = np.random.default_rng(seed)  # test data only; never a protocol secret
    floats = {
        u: np.asarray(
            inputs[u] if inputs is not None else gen.uniform(-1.5, 1.5, config.d), dtype=np.float64
        )
        for u in ids
    }
    clients: dict[int, SecAggClient] = {}
    for u in ids:
        cfg_u = (client_configs or {}).get(u, config)
        rng = DeterministicRandom(f"client/{seed}/{tag}/{u}")
        ring = cfg_u.encoding.encode(floats[u], rng)
        make = client_factory if client_factory is not None else SecAggClient
        clients[u] = make(cfg_u, u, ident[u], registry, ring, policy=policy, rng=rng)
    server = SecAggServer(config, registry, rng=DeterministicRandom(f"server/{seed}/{tag}"))
    return Cohort(
        config=config,
        identities=ident,
        registry=registry,
        floats=floats,
        clients=clients,
        server=server,
        sent={u: {} for u in ids},
        received={u: {} for u in ids},
    )


def with_round(config: RoundConfig, round_: int, tag: str) -> RoundConfig:
    """The same round parameters in a fresh session (a later round)."""
    return replace(config, session_id=DeterministicRandom(f"session/{tag}").bytes(16), round=round_)


# -- verified rounds (SPEC.md D12): what a cheating client needs at the CHECK stage --------------


def resign_check(
    config: RoundConfig, identity: Ed25519PrivateKey, msg: CheckResponse, seed: bytes
) -> CheckResponse:
    """A malicious client's own, correctly signed CheckResponse (whatever it claims)."""
    from secagg import _derive
    from secagg._crypto import LABEL_CHECK, ed25519_sign
    from secagg.verify_round import check_digest

    payload = _derive.u32(msg.sender) + check_digest(
        seed, msg.self_claim, msg.pair_claims, msg.proof
    )
    sig = ed25519_sign(identity, LABEL_CHECK, config.digest, payload)
    return replace(msg, signature=sig)


def masks_witness(
    config: RoundConfig, seed: bytes, self_key: bytes, pairs: Iterable[tuple[int, bytes, int]]
) -> tuple[list[int], int, object]:
    """The projection ``M`` of a client's masks, its blinding and the point ``C_M``, exactly as
    the server assembles it from honest claims."""
    from secagg.verify import CHECK_ROWS, FIELD_ORDER, commit_short
    from secagg.verify_round import _claim_blinding, mask_projection, projection

    proj = projection(config, seed)
    items = [(1, self_key)] + [(sign, key) for _, key, sign in pairs]
    m = [0] * CHECK_ROWS
    blind = 0
    for sign, key in items:
        p = mask_projection(config, proj, key)
        m = [a + sign * b for a, b in zip(m, p, strict=True)]
        blind += sign * _claim_blinding(config, seed, key)
    blind %= FIELD_ORDER
    return m, blind, commit_short(m, blind)


def relay_key_lists(
    config: RoundConfig, registry: Mapping[int, bytes], adverts: Mapping[int, AdvertiseKeys]
) -> dict[int, KeyList]:
    """What a server that relays ``adverts`` as U1 (whatever they are) sends each of them:
    the bitmap, the key root over exactly these entries, each one's own proof and its
    neighbours' entries under the resulting graph (SPEC.md D14)."""
    from secagg.graph import LABEL_KEY_TREE, Ring, cohort_bitmap, graph_seed, key_leaf
    from secagg.merkle import MerkleTree

    u1 = sorted(adverts)
    bitmap = cohort_bitmap(sorted(registry), u1)
    tree = MerkleTree(
        LABEL_KEY_TREE,
        [key_leaf(a.sender, a.c_pk, a.s_pk, a.signature) for a in (adverts[u] for u in u1)],
    )
    seed = graph_seed(config.digest, bitmap, tree.root)
    ring = Ring(sorted(registry), config.degree, seed, u1)
    return {
        u: KeyList(
            u,
            tuple(adverts[v] for v in sorted(ring.neighbours(u) | {u})),
            bitmap,
            tree.root,
            tree.prove(i),
        )
        for i, u in enumerate(u1)
    }
