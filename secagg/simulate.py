"""An in-memory round: every client and the server as state machines, joined by function calls.

Like h11's ``ConnectionPair``, this is the reference driver of the sans-I/O core: tests play a
malicious server or client through the ``tamper`` / ``client_tamper`` hooks, and benchmarks
time the parties' work. It owns the clock only to report timings (injectable); the state
machines themselves never read it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg._crypto import LABEL_MASKED, ed25519_public, ed25519_sign
from secagg._errors import ConfigError, EncodingError, NormBoundExceeded, ProtocolAbort
from secagg._rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.accumulate import Accumulator
from secagg.client import SecAggClient
from secagg.config import ClientPolicy, RoundConfig, Stage
from secagg.encoding import pack_bits, unpack_bits
from secagg.graph import Cohort
from secagg.messages import CheckResponse, ClientMessage, MaskedInput, ServerMessage
from secagg.server import SecAggServer

if TYPE_CHECKING:  # the dp package is imported only when a round asks for distributed DP
    from dp.composed import DistributedDP
    from dp.distributed import DecodedSum, DistributedDPConfig

__all__ = ["SimulationResult", "simulate"]

Tamper = Callable[[Stage, int, ServerMessage], ServerMessage | None]
ClientTamper = Callable[[Stage, int, ClientMessage], ClientMessage | None]

_MASKED_OVERHEAD = 4 + 64  # sender id and signature beside the packed vector


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated round produced.

    ``aggregate`` is the decoded float64 sum of the included clients' clipped inputs, exact up
    to ``error_bound`` per coordinate. ``stage_sets`` holds who completed each stage (U1..U5;
    under ``Stage.CHECK`` who passed the contribution check); ``rejected`` the clients the
    server excluded and why, ``cheaters`` those among them excluded or named for a provably
    false contribution (SPEC.md D12); ``refused`` the clients that did not take part because
    their input is above the round's norm bound (docs/protocol.md §7).

    With distributed DP (``simulate(..., dp=...)``), ``aggregate`` is the decoded noisy sum of
    the included clients' L2-clipped updates, ``config`` the round actually run (``d`` the
    encoded dimension, the DP ring), ``dp`` the decoded sum's noise and rounding figures, and
    ``error_bound`` the rounding error bound alone (the noise is on top: ``dp.noise_stddev``).
    """

    aggregate: npt.NDArray[np.float64] = field(compare=False)
    ring_sum: npt.NDArray[np.uint32] = field(compare=False)
    included: frozenset[int]
    error_bound: float
    upload_bytes: int
    timings: Mapping[str, float]
    config: RoundConfig
    stage_sets: Mapping[Stage, frozenset[int]]
    rejected: Mapping[int, str]
    refused: Mapping[int, str] = field(default_factory=dict)
    cheaters: Mapping[int, str] = field(default_factory=dict)
    dp: DecodedSum | None = field(default=None, compare=False)


def _identity(rng: RandomSource) -> Ed25519PrivateKey:
    if rng.deterministic:
        return Ed25519PrivateKey.from_private_bytes(rng.bytes(32))
    return Ed25519PrivateKey.generate()


def simulate(
    config: RoundConfig,
    inputs: Sequence[npt.ArrayLike],
    drops: Mapping[Stage, Sequence[int] | frozenset[int] | set[int]] | None = None,
    tamper: Tamper | None = None,
    client_tamper: ClientTamper | None = None,
    *,
    policy: ClientPolicy | None = None,
    seed: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    resign: bool = False,
    client_factory: Callable[..., SecAggClient] | None = None,
    dp: DistributedDP | DistributedDPConfig | None = None,
    accumulator: Accumulator | None = None,
) -> SimulationResult:
    """Run one whole round in memory (see the module docstring).

    ``inputs[i]`` is client ``i + 1``'s float vector. ``drops[stage]`` lists clients that send
    nothing from ``stage`` on. ``tamper(stage, recipient, msg)`` may rewrite or withhold (return
    ``None``) any server->client message of ``stage``; ``client_tamper(stage, sender, msg)`` any
    client->server message. A client whose messages ``client_tamper`` changed is treated as
    malicious: its own aborts are not raised. If an honest client aborts, or the server cannot
    complete the round, :class:`ProtocolAbort` is raised.

    ``seed`` makes the round reproducible (test only: it switches every party to a
    deterministic RNG and a policy that allows it).

    ``resign``: a ``MaskedInput`` that ``client_tamper`` changed is signed again with its
    sender's own identity key (a malicious client signs whatever it sends), so that it meets
    the server's later checks rather than the signature check.

    With ``config.norm_bound`` set, a client whose encoded input is above the bound does not
    take part (it sends nothing; ``refused``); the others' proofs are verified as in any round.

    ``client_factory`` (tests) builds each client instead of :class:`SecAggClient`, with the
    same arguments: adversarial tests substitute clients that deviate from the protocol.

    ``dp`` (a :class:`dp.DistributedDP`, or a full :class:`dp.DistributedDPConfig`) runs the
    round with distributed DP inside secure aggregation: each client clips, rotates and noises
    its update with :mod:`dp.composed`, which picks the ring and the encoded dimension for the
    round and derives the rotation seed from its session; ``config.d`` is the update length.

    ``accumulator`` holds the server's running sum (default: in this process).
    """
    n = config.n
    if len(inputs) != n:
        raise ConfigError(f"{len(inputs)} inputs for n={n} clients")
    if seed is None:
        root: RandomSource = SystemRandom()
    else:
        root = DeterministicRandom(f"sim/{seed}")
    if policy is None:
        policy = ClientPolicy(allow_deterministic_rng=seed is not None)
    if config.session_id is None:
        config = config.with_session(root.bytes(16))
    bound: Any = None
    if dp is not None:
        from dp.composed import DistributedDP, bind

        if seed is not None and isinstance(dp, DistributedDP):
            dp = replace(dp, allow_seeded_rng=True)
        bound = bind(config, dp)
        config = bound.config
    enc = config.encoding
    in_dim = config.d if bound is None else bound.dp.dim
    drop_from: dict[int, int] = {}
    for stage, ids in (drops or {}).items():
        for u in ids:
            drop_from[u] = min(drop_from.get(u, 99), stage.value)

    def rng_for(i: int) -> RandomSource:
        return root if seed is None else DeterministicRandom(f"sim/{seed}/client/{i}")

    ids = list(range(1, n + 1))
    rngs = {u: rng_for(u) for u in ids}
    identities = {u: _identity(rngs[u]) for u in ids}
    registry = Cohort({u: ed25519_public(k) for u, k in identities.items()})  # one, shared
    clipped: dict[int, npt.NDArray[np.float64]] = {}
    clients: dict[int, SecAggClient] = {}
    refused: dict[int, str] = {}
    for u in ids:
        x = np.asarray(inputs[u - 1])
        if x.shape != (in_dim,):
            raise EncodingError(f"input of client {u} has shape {x.shape}, expected ({in_dim},)")
        if bound is None:
            ring = enc.encode(x, rngs[u])
            clipped[u] = enc.clipped(x)
        else:
            ring = bound.encode(x, rngs[u])
        make = client_factory if client_factory is not None else SecAggClient
        try:
            clients[u] = make(config, u, identities[u], registry, ring, policy=policy, rng=rngs[u])
        except NormBoundExceeded as exc:  # docs/protocol.md §7: it cannot prove; it stays out
            refused[u] = str(exc)
            drop_from[u] = Stage.ADVERTISE_KEYS.value
    server = SecAggServer(
        config,
        registry,
        rng=root if seed is None else DeterministicRandom(f"sim/{seed}/server"),
        accumulator=accumulator,
    )
    malicious: set[int] = set()
    timings: dict[str, list[float]] = {s.name: [] for s in Stage}
    server_times: dict[str, float] = {}
    upload_sizes: list[int] = []
    check_sizes: list[int] = []
    wire_checked = False

    def alive(u: int, stage: Stage) -> bool:
        return drop_from.get(u, 99) > stage.value

    def deliver(stage: Stage, u: int, msg: ClientMessage) -> None:
        nonlocal wire_checked
        if client_tamper is not None:
            changed = client_tamper(stage, u, msg)
            if changed is not msg:
                malicious.add(u)
            if changed is None:
                return
            if resign and changed is not msg and isinstance(changed, MaskedInput):
                changed = _resigned(changed, identities[u], config)
            msg = changed
        if isinstance(msg, MaskedInput) and u not in malicious:
            if not wire_checked:
                # Exercise the wire path once: the packed form must round-trip exactly.
                raw = pack_bits(msg.masked, enc.bits)
                if not np.array_equal(unpack_bits(raw, enc.bits, config.upload_dim), msg.masked):
                    raise AssertionError("bit-packing does not round-trip")
                wire_checked = True
            upload_sizes.append(
                _MASKED_OVERHEAD + (config.upload_dim * enc.bits + 7) // 8 + len(msg.commitment)
            )
        if isinstance(msg, CheckResponse) and u not in malicious:
            check_sizes.append(
                _MASKED_OVERHEAD
                + len(msg.self_claim)
                + len(msg.proof)
                + sum(4 + len(c) for _, c in msg.pair_claims)
            )
        # A refusal is recorded in server.rejected; the sender is then a dropout.
        with contextlib.suppress(ProtocolAbort):
            server.receive(msg)

    def run_client(stage: Stage, u: int, step: Callable[[], ClientMessage]) -> None:
        t0 = clock()
        try:
            out = step()
        except ProtocolAbort:
            if u in malicious:
                return
            raise
        timings[stage.name].append(clock() - t0)
        deliver(stage, u, out)

    t_start = clock()
    for u in ids:
        if alive(u, Stage.ADVERTISE_KEYS):
            run_client(Stage.ADVERTISE_KEYS, u, clients[u].advertise)
    for stage in config.stages:
        t0 = clock()
        outgoing = server.close_stage()
        server_times[f"server_close_{stage.name.lower()}_s"] = clock() - t0
        nxt = config.next_stage(stage)
        if nxt is None:
            break
        for u, msg in outgoing.items():
            out_msg: ServerMessage | None = msg
            if tamper is not None:
                out_msg = tamper(stage, u, msg)
            if out_msg is None or not alive(u, nxt):
                continue
            run_client(nxt, u, lambda c=clients[u], m=out_msg: c.receive(m))  # type: ignore[misc]
    total = clock() - t_start

    result = server.result
    decoded: DecodedSum | None = None
    if bound is None:
        agg = enc.decode(result.ring_sum)
        error_bound = enc.error_bound(len(result.included))
    else:
        decoded = bound.decode(result.ring_sum, len(result.included))
        agg = decoded.values
        error_bound = decoded.rounding_error_bound

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    report: dict[str, float] = {
        "client_masking_median_s": med(timings[Stage.MASKED_INPUT.name]),
        "server_unmask_s": server_times["server_close_unmask_s"],
        "total_s": total,
    }
    for s in Stage:
        report[f"client_{s.name.lower()}_median_s"] = med(timings[s.name])
    report.update(server_times)
    return SimulationResult(
        aggregate=agg,
        ring_sum=result.ring_sum,
        included=result.included,
        error_bound=error_bound,
        upload_bytes=(
            int(statistics.median(upload_sizes)) + int(statistics.median(check_sizes or [0]))
            if upload_sizes
            else 0
        ),
        timings=report,
        config=config,
        stage_sets={
            Stage.ADVERTISE_KEYS: server.u1,
            Stage.SHARE_KEYS: server.u2,
            Stage.MASKED_INPUT: server.uploaded,
            Stage.CHECK: server.u3,
            Stage.CONSISTENCY: server.u4,
            Stage.UNMASK: server.u5,
        },
        rejected=dict(server.rejected),
        refused=refused,
        cheaters=dict(server.cheaters),
        dp=decoded,
    )


def _resigned(msg: MaskedInput, identity: Ed25519PrivateKey, config: RoundConfig) -> MaskedInput:
    unsigned = MaskedInput(msg.sender, msg.masked, b"", msg.commitment)
    sig = ed25519_sign(identity, LABEL_MASKED, config.digest, unsigned.signed_payload())
    return MaskedInput(msg.sender, msg.masked, sig, msg.commitment)
