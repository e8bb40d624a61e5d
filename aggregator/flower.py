"""Our secure aggregation as a Flower fit workflow: ``DefaultWorkflow(fit_workflow=
SecAggWorkflow(...))`` in place of Flower's ``SecAggPlusWorkflow`` (``flwr==1.42``, the
``flower`` extra); the clients run :data:`client.flower.secagg_mod`.

One round of the strategy's ``configure_fit`` is one round of docs/protocol.md: a
:class:`secagg.SecAggServer` driven stage by stage over ``Grid.send_and_receive``, one Flower
message per node per stage, each carrying the stage's protobuf envelope (:mod:`protos.flower`).
A node that does not answer within ``timeout``, answers with an error, or sends something the
state machine refuses is a dropout of that stage; the round goes on while the threshold
allows, at every stage (SecAgg+'s double masking: a client that dropped after sharing its keys
has its masks removed with its neighbours' shares). Flower node ids are mapped to the
registry's member ids by the member's signed key advertisement; an advertisement whose
signature does not verify is ignored (it proves nothing about the member it names, so it cannot
get that member excluded), and a node that later speaks for another member is ignored.

Who the members are is the registry the consortium's administrator signed (docs/consortium.md),
read from the aggregator's folder and relayed to every client, which checks the signature
itself: this workflow cannot add a member. ``(k, t)`` follow the registry's corruption
assumption (:func:`aggregator.parameters.resolve`) unless given.

Weighting is FedAvg's: the secure sum is ``[sum w_u x_u, sum w_u]`` and the strategy's
``aggregate_fit`` receives the quotient once per included client, as Flower's SecAgg+ workflow
does (no client's own weight or metrics reach the server). With ``dp`` the round is DP-FedAvg
instead: user-level distributed DP from :mod:`dp.distributed` (clip, rotate, noise shares
that add up to the target noise over ``t`` survivors), unweighted. ``norm_bound`` passes the
core's contribution verification through (the CHECK stage runs like any other).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp
from flwr.common import Code, FitIns, FitRes, Status
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.serverapp import ServerApp
from flwr.serverapp.grid import Grid
from google.protobuf.message import DecodeError

from aggregator.parameters import resolve
from dp.composed import DistributedDP, rotation_seed
from dp.distributed import DistributedDPConfig
from dp.distributed import decode as dp_decode
from protos import wire
from protos.consortium import AggregatorFolder, load_consortium
from protos.flower import (
    RECORD,
    FedAvgTask,
    arrays_digest,
    arrays_to_vector,
    dtypes_of,
    layout_of,
    require_bytes,
    vector_to_arrays,
)
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import (
    InvalidMessage,
    ProtocolAbort,
    RoundConfig,
    SecAggServer,
    Stage,
)
from secagg.messages import AdvertiseKeys, ClientMessage, ServerMessage

__all__ = ["FlowerRound", "SecAggWorkflow", "run_on_ray"]

log = logging.getLogger("secagg.aggregator.flower")
F64 = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]


@dataclass
class FlowerRound:
    """What one round did: who answered each stage (member ids), who is in the sum, the
    weighted sum and total weight it unmasked, and where the time and bytes went.

    ``server_seconds`` is the time spent in the state machine and decoding (not waiting for
    clients); ``bytes_to``/``bytes_from`` count each node's protocol records (envelopes, the
    round's config, registry and task), not the model the strategy sends anyway."""

    round: int
    sampled: int
    completed: bool = False
    reason: str = ""
    config: RoundConfig | None = None
    node_of: dict[int, int] = field(default_factory=dict)
    answered: dict[str, list[int]] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    included: tuple[int, ...] = ()
    ring_sum: U32 | None = None
    weighted_sum: F64 | None = None
    weight_total: float = 0.0
    mean: F64 | None = None
    dp_noise_stddev: float | None = None
    seconds: float = 0.0
    server_seconds: float = 0.0
    bytes_to: dict[int, int] = field(default_factory=dict)
    bytes_from: dict[int, int] = field(default_factory=dict)


def _record_bytes(record: ConfigRecord) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in record.values())


class SecAggWorkflow:
    """The fit workflow (a ``(grid, context)`` callable, ``context`` a ``LegacyContext``).

    ``consortium``: the aggregator's folder (or an ``init-consortium`` bundle). ``num_shares``
    is the SecAgg+ degree ``k`` (neighbours per client, even, or ``n - 1``: plain SecAgg) and
    ``reconstruction_threshold`` the threshold ``t``; ``None`` chooses them for
    ``expected_dropout`` under the registry's corruption assumption. ``clipping_range`` clips
    each weighted parameter (as Flower's SecAgg+); ``level_bits`` is the per-client resolution
    of the ring encoding (22: Flower's default quantisation of 2^22 levels). ``norm_bound``
    turns on contribution verification (docs/protocol.md §7). ``dp`` turns on user-level
    distributed DP (DP-FedAvg): each client's update ``x - global`` is clipped to
    ``dp.l2_clip``, rotated, noised and encoded by :mod:`dp.distributed`, the strategy gets
    ``global + noisy mean update`` and no weights are used. ``timeout``: seconds each stage
    waits for replies (``None``: until every node answered). Every round's
    :class:`FlowerRound` is appended to :attr:`rounds`.
    """

    def __init__(
        self,
        consortium: Path | str,
        num_shares: int | None = None,
        reconstruction_threshold: int | None = None,
        *,
        expected_dropout: float = 0.1,
        max_weight: float = 1000.0,
        clipping_range: float = 8.0,
        level_bits: int = 22,
        norm_bound: int | None = None,
        dp: DistributedDP | None = None,
        timeout: float | None = None,
    ) -> None:
        self.consortium = Path(consortium)
        self.num_shares = num_shares
        self.reconstruction_threshold = reconstruction_threshold
        self.expected_dropout = expected_dropout
        self.max_weight = max_weight
        self.clipping_range = clipping_range
        self.level_bits = level_bits
        self.norm_bound = norm_bound
        self.dp = dp
        self.timeout = timeout
        self.rounds: list[FlowerRound] = []
        FedAvgTask((), max_weight)  # validates max_weight now

    # -- extension point -----------------------------------------------------------------

    def outgoing_messages(
        self, stage: Stage, outgoing: Mapping[int, ServerMessage]
    ) -> Mapping[int, ServerMessage]:
        """The state machine's messages for ``stage`` (member id -> message), as sent. A
        subclass may observe them; the adversarial tests rewrite them (a malicious server)."""
        return outgoing

    # -- the round ----------------------------------------------------------------------

    def __call__(self, grid: Grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        t_start = time.perf_counter()
        cfg_rec = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = cast(int, cfg_rec["current_round"])
        global_arrays = context.state.array_records[MAIN_PARAMS_RECORD]
        parameters = compat.arrayrecord_to_parameters(global_arrays, keep_input=True)
        chosen = context.strategy.configure_fit(current_round, parameters, context.client_manager)
        report = FlowerRound(round=current_round, sampled=len(chosen))
        self.rounds.append(report)
        try:
            self._round(grid, context, report, chosen, global_arrays)
        finally:
            report.seconds = time.perf_counter() - t_start
        log.info(
            "round %d %s: %d of %d sampled in the sum%s (%.2f s, %.2f s in the server)",
            current_round,
            "completed" if report.completed else "aborted",
            len(report.included),
            report.sampled,
            f" ({report.reason})" if report.reason else "",
            report.seconds,
            report.server_seconds,
        )

    def _round(
        self,
        grid: Grid,
        context: LegacyContext,
        report: FlowerRound,
        chosen: list[tuple[ClientProxy, FitIns]],
        global_arrays: ArrayRecord,
    ) -> None:
        if len(chosen) < 2:
            report.reason = "fewer than two clients sampled"
            return
        fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in chosen}
        proxies = {proxy.node_id: proxy for proxy, _ in chosen}
        model_digest = arrays_digest(global_arrays)
        for rd in fitins.values():
            if arrays_digest(rd.array_records["fitins.parameters"]) != model_digest:
                report.reason = "the strategy sends clients different models: not one round"
                return
        layout = layout_of(global_arrays)
        dtypes = dtypes_of(global_arrays)
        # The registry is read every round: a newer one (a revocation, an enrolment) is followed.
        consortium = load_consortium(self.consortium)
        signed = AggregatorFolder(consortium.root).signed_registry()
        size = sum(int(np.prod(shape)) for _, shape in layout)
        params = resolve(
            consortium.signed,
            d=size + 1,
            threshold=self.reconstruction_threshold,
            neighbors=self.num_shares,
            expected_dropout=self.expected_dropout,
            clip=self.clipping_range,
            norm_bound=self.norm_bound,
        )
        n = len(consortium.registry)
        dp_cfg: DistributedDPConfig | None = None
        if self.dp is not None:
            dp_cfg = self.dp.resolve(size, n, params.t, n - 1 if params.k is None else params.k)
        task = FedAvgTask(
            layout, self.max_weight, b"" if dp_cfg is None else dp_cfg.canonical_bytes()
        )
        cfg = RoundConfig(
            n=n,
            t=params.t,
            d=size + 1 if dp_cfg is None else dp_cfg.encoded_dim,
            k=params.k,
            clip=self.clipping_range,
            bits=None if dp_cfg is None else dp_cfg.bits,
            level_bits=self.level_bits,
            model_digest=model_digest,
            dp_digest=task.digest,
            norm_bound=self.norm_bound,
        ).with_session(secrets.token_bytes(16), report.round)
        report.config = cfg
        server = SecAggServer(cfg, consortium.registry)
        log.info(
            "round %d: %d sampled, n=%d k=%d t=%d d=%d, ring 2^%d",
            report.round,
            len(chosen),
            cfg.n,
            cfg.degree,
            cfg.t,
            cfg.d,
            cfg.ring_bits,
        )
        setup = ConfigRecord(
            {
                "stage": Stage.ADVERTISE_KEYS.name,
                "config": wire.config_to_pb(cfg).SerializeToString(),
                "registry": signed,
                "task": task.canonical(),
            }
        )
        node_of: dict[int, int] = report.node_of  # member -> node
        member_of: dict[int, int] = {}  # node -> member
        outgoing: Mapping[int, ServerMessage] = {}
        failures: list[tuple[ClientProxy, FitRes] | BaseException] = []
        for stage in cfg.stages:
            messages: list[Message] = []
            if stage is Stage.ADVERTISE_KEYS:
                for nid in sorted(fitins):
                    messages.append(self._message(nid, RecordDict({RECORD: setup}), report))
            else:
                for member, smsg in sorted(self.outgoing_messages(stage, outgoing).items()):
                    if member not in node_of:
                        continue
                    nid = node_of[member]
                    rec = ConfigRecord(
                        {
                            "stage": stage.name,
                            "envelope": wire.server_to_pb(smsg, cfg).SerializeToString(),
                        }
                    )
                    content = RecordDict({RECORD: rec})
                    if stage is Stage.MASKED_INPUT:  # the model and the strategy's config
                        for name, r in fitins[nid].items():
                            content[name] = r
                    messages.append(self._message(nid, content, report))
            replies = grid.send_and_receive(messages, timeout=self.timeout)
            t0 = time.perf_counter()
            self._collect(stage, cfg, server, replies, node_of, member_of, report, failures)
            try:
                outgoing = server.close_stage()
            except ProtocolAbort as exc:
                report.server_seconds += time.perf_counter() - t0
                report.reason = f"aborted in {stage.name}: {type(exc).__name__}: {exc}"
                report.rejected = dict(server.rejected)
                return
            report.server_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        result = server.result
        report.rejected = dict(server.rejected)
        report.included = tuple(sorted(result.included))
        report.ring_sum = result.ring_sum
        if dp_cfg is not None:
            noisy = dp_decode(
                result.ring_sum, dp_cfg, rotation_seed(cfg, dp_cfg), len(report.included)
            )
            report.weighted_sum, report.weight_total = noisy.values, float(len(report.included))
            report.dp_noise_stddev = noisy.noise_stddev
            report.mean = arrays_to_vector(global_arrays, layout) + noisy.mean
        else:
            decoded = cfg.encoding.decode(result.ring_sum)
            report.weighted_sum, report.weight_total = decoded[:-1], float(decoded[-1])
            if report.weight_total <= 0:
                report.reason = "the included clients' weights sum to zero"
                return
            report.mean = report.weighted_sum / report.weight_total
        aggregate = compat.arrayrecord_to_parameters(
            vector_to_arrays(report.mean, layout, dtypes), keep_input=True
        )
        report.completed = True
        report.server_seconds += time.perf_counter() - t0
        results = [
            (proxies[node_of[u]], FitRes(Status(Code.OK, ""), aggregate, 1, {}))
            for u in report.included
        ]
        parameters_aggregated, metrics = context.strategy.aggregate_fit(
            report.round,
            results,
            list(failures),
        )
        if parameters_aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True
            )
            context.history.add_metrics_distributed_fit(server_round=report.round, metrics=metrics)

    def _message(self, nid: int, content: RecordDict, report: FlowerRound) -> Message:
        rec = content.config_records[RECORD]
        report.bytes_to[nid] = report.bytes_to.get(nid, 0) + _record_bytes(rec)
        return Message(
            content=content,
            dst_node_id=nid,
            message_type=MessageType.TRAIN,
            group_id=str(report.round),
        )

    def _collect(
        self,
        stage: Stage,
        cfg: RoundConfig,
        server: SecAggServer,
        replies: Iterable[Message],
        node_of: dict[int, int],
        member_of: dict[int, int],
        report: FlowerRound,
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> None:
        """Hand each reply of ``stage`` to the state machine; anything else is a dropout."""
        answered: list[int] = []
        for reply in replies:
            nid = reply.metadata.src_node_id
            if reply.has_error():
                report.refusals[nid] = f"{stage.name}: {reply.error.reason}"
                failures.append(RuntimeError(reply.error.reason))
                continue
            try:
                rec = reply.content.config_records[RECORD]
                report.bytes_from[nid] = report.bytes_from.get(nid, 0) + _record_bytes(rec)
                env = pb.ClientEnvelope.FromString(require_bytes(rec, "envelope"))
                msg: ClientMessage = wire.client_from_pb(env, cfg)
            except (KeyError, DecodeError, InvalidMessage) as exc:
                log.info("node %d: unreadable %s reply (%s): a dropout", nid, stage.name, exc)
                continue
            if stage is Stage.ADVERTISE_KEYS:
                if msg.sender in node_of or nid in member_of:
                    log.info("node %d: a second claim to member %d: ignored", nid, msg.sender)
                    continue
                if not isinstance(msg, AdvertiseKeys) or not server.advert_is_signed(msg):
                    # Any node can name any member here: an unsigned claim must not get the
                    # member it names excluded (the member's own advertisement still counts).
                    log.info(
                        "node %d: advertisement not signed by member %d: ignored", nid, msg.sender
                    )
                    continue
            elif member_of.get(nid) != msg.sender:
                log.info("node %d speaks for member %d: ignored", nid, msg.sender)
                continue
            t0 = time.perf_counter()
            try:
                server.receive(msg)
            except ProtocolAbort as exc:
                log.info("node %d (member %d) refused: %s", nid, msg.sender, exc)
                continue
            finally:
                report.server_seconds += time.perf_counter() - t0
            if stage is Stage.ADVERTISE_KEYS:  # the advertisement is signed: the member is it
                node_of[msg.sender], member_of[nid] = nid, msg.sender
            answered.append(msg.sender)
        report.answered[stage.name] = sorted(answered)


def run_on_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    workers: int = 2,
    object_store_bytes: int = 200 << 20,
) -> None:
    """Flower's simulation engine on its Ray backend: ``workers`` actors of one CPU each and
    no GPU, so a node's messages may run on any worker (our client state travels in
    ``context.state``, which is what makes that safe). Ray binds the machine's address: run
    it where only loopback is reachable unless the cluster is meant to be on the network."""
    from flwr.simulation import run_simulation

    run_simulation(
        server_app,
        client_app,
        num_supernodes=num_supernodes,
        backend_name="ray",
        backend_config={
            "init_args": {"num_cpus": workers, "object_store_memory": object_store_bytes},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        },
    )
