"""Our secure aggregation as a Flower client mod: ``ClientApp(mods=[secagg_mod])`` in place of
Flower's ``secaggplus_mod`` (``flwr==1.42``, the ``flower`` extra).

The mod runs one :class:`secagg.SecAggClient` per round against
:class:`aggregator.flower.SecAggWorkflow`, stage by stage, one Flower message per stage
(:mod:`protos.flower`). Between messages nothing stays in memory: the state machine is sealed
with :func:`secagg.export_client` into ``context.state`` (under the Flower backend a node's
next message may run in another worker process), under a key derived from the member's
Ed25519 identity, which never leaves its folder; :func:`secagg.restore_client` refuses a
snapshot of another round, session or configuration.

What the client checks, beyond the state machine's own checks: the registry the server relays
must be signed by the administrator pinned in the member's folder, must not be older than the
newest it has seen and must list this member's own keys; the round's task must hash to the
config's ``dp_digest`` and the model it trains on to its ``model_digest`` (SA-06); the trained
model must have the announced layout (SA-15). Any refusal is answered with an error reply
(``Error.code ==`` :data:`protos.flower.REFUSED`, the reason as ``"<ErrorType>: <message>"``),
the round's state is wiped, and the node answers nothing more in that round.

Which member a node is: ``node_config["secagg-member"]`` (the member's folder), or, in a
simulation, ``run_config["secagg-consortium"]`` (a bundle from ``init-consortium``) and member
``partition-id + 1``; or give them to :class:`SecAggMod` directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code
from flwr.compat.common import recorddict_compat as compat
from google.protobuf.message import DecodeError

from dp import PrivacyError
from dp.composed import rotation_seed
from dp.distributed import DistributedDPConfig
from dp.distributed import encode as dp_encode
from protos import wire
from protos.consortium import ConsortiumError, MemberFolder, member_folder
from protos.flower import (
    RECORD,
    REFUSED,
    STATE,
    FedAvgTask,
    arrays_digest,
    arrays_to_vector,
    require_bytes,
    stage_of_record,
)
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import (
    ClientPolicy,
    ClientState,
    InvalidMessage,
    PolicyViolation,
    RoundConfig,
    SecAggClient,
    SecAggError,
    Stage,
    SystemRandom,
    UnexpectedMessage,
    export_client,
    restore_client,
)

__all__ = ["SecAggMod", "secagg_mod", "state_key"]

_FIT_PARAMETERS = "fitins.parameters"


def state_key(identity: Ed25519PrivateKey) -> bytes:
    """The 32-byte key that seals this member's round state in ``context.state``: derived
    from its identity key, so the state is only as exposed as the member's own folder."""
    raw = identity.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"secagg/flower/v1/state-key"
    ).derive(raw)


def _reply(msg: Message, stage: Stage, envelope: pb.ClientEnvelope) -> Message:
    record = ConfigRecord({"stage": stage.name, "envelope": envelope.SerializeToString()})
    return Message(RecordDict({RECORD: record}), reply_to=msg)


def _parse_config(raw: bytes) -> RoundConfig:
    try:
        return wire.config_from_pb(pb.RoundConfig.FromString(raw))
    except DecodeError:
        raise InvalidMessage("the round config is not a RoundConfig") from None


def _check_dp(
    dp_cfg: DistributedDPConfig, cfg: RoundConfig, task: FedAvgTask, policy: ClientPolicy
) -> None:
    """Refuse DP parameters that do not fit the round, or whose noise assumes fewer corrupt
    survivors than this client's policy tolerates (docs/threats.md DP-10)."""
    if (
        dp_cfg.dim != task.size
        or dp_cfg.encoded_dim != cfg.d
        or dp_cfg.bits != cfg.ring_bits
        or dp_cfg.num_clients != cfg.n
        or dp_cfg.min_survivors < cfg.t
    ):
        raise PolicyViolation("the round's DP parameters do not match its configuration")
    if dp_cfg.max_corrupt < policy.corrupt_bound(cfg.degree):
        raise PolicyViolation(
            f"the round's DP noise assumes {dp_cfg.max_corrupt} corrupt survivors, this client "
            f"tolerates {policy.corrupt_bound(cfg.degree)} (docs/threats.md DP-10)"
        )


class SecAggMod:
    """The client mod (``Callable[[Message, Context, ClientAppCallable], Message]``).

    ``member`` is the member's own folder, or ``consortium`` a bundle holding
    ``members/member-<id>`` with the id ``partition-id + 1`` (simulations); neither: read
    from the node's context (module docstring). ``policy`` replaces the default
    :class:`secagg.ClientPolicy` under the registry's corruption assumption.
    """

    def __init__(
        self,
        *,
        member: Path | str | None = None,
        consortium: Path | str | None = None,
        policy: ClientPolicy | None = None,
    ) -> None:
        self.member = Path(member) if member is not None else None
        self.consortium = Path(consortium) if consortium is not None else None
        self.policy = policy

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or not msg.has_content():
            return call_next(msg, ctxt)
        if RECORD not in msg.content.config_records:
            return call_next(msg, ctxt)
        try:
            return self._handle(msg, ctxt, call_next)
        except (SecAggError, ConsortiumError, PrivacyError) as exc:
            ctxt.state.config_records[STATE] = ConfigRecord()  # the round's secrets are gone
            return Message(Error(REFUSED, f"{type(exc).__name__}: {exc}"), reply_to=msg)

    # -- which member ---------------------------------------------------------------------

    def _folder(self, ctxt: Context) -> MemberFolder:
        if self.member is not None:
            return MemberFolder(self.member)
        own = ctxt.node_config.get("secagg-member")
        if isinstance(own, str) and own:
            return MemberFolder(Path(own))
        bundle = self.consortium
        if bundle is None:
            given = ctxt.run_config.get("secagg-consortium")
            bundle = Path(given) if isinstance(given, str) and given else None
        partition = ctxt.node_config.get("partition-id")
        if bundle is None or not isinstance(partition, int):
            raise ConsortiumError(
                "this node has no member folder: set node_config 'secagg-member', or "
                "run_config 'secagg-consortium' in a simulation"
            )
        return member_folder(None, bundle, partition + 1)

    # -- the stages -----------------------------------------------------------------------

    def _handle(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        record = msg.content.config_records[RECORD]
        stage = stage_of_record(record)
        folder = self._folder(ctxt)
        me = folder.member_id
        identity = folder.files().identity
        key = state_key(identity)
        if stage is Stage.ADVERTISE_KEYS:
            return self._advertise(msg, ctxt, record, folder, me, identity, key)
        saved = ctxt.state.config_records.get(STATE)
        if saved is None or "blob" not in saved:
            raise UnexpectedMessage(f"no round in progress on this node ({stage.name})")
        if saved.get("member") != me:
            raise UnexpectedMessage("the saved round belongs to another member")
        cfg = _parse_config(require_bytes(saved, "config"))
        task = FedAvgTask.parse(require_bytes(saved, "task"))
        try:
            env = pb.ServerEnvelope.FromString(require_bytes(record, "envelope"))
        except DecodeError:
            raise InvalidMessage("the stage's envelope is not a ServerEnvelope") from None
        server_msg = wire.server_from_pb(env, cfg)
        if isinstance(server_msg, pb.RoundOutcome):
            ctxt.state.config_records[STATE] = ConfigRecord()
            raise UnexpectedMessage(f"the round ended: {server_msg.reason}")
        client = restore_client(require_bytes(saved, "blob"), key, cfg)
        if stage is Stage.MASKED_INPUT:
            client.set_input(self._train(msg, ctxt, call_next, cfg, task))
        out = client.receive(server_msg)
        if client.state is ClientState.DONE:
            ctxt.state.config_records[STATE] = ConfigRecord()
        else:
            ctxt.state.config_records[STATE] = ConfigRecord(
                {**saved, "blob": export_client(client, key)}
            )
        return _reply(msg, stage, wire.client_to_pb(out, cfg))

    def _advertise(
        self,
        msg: Message,
        ctxt: Context,
        record: ConfigRecord,
        folder: MemberFolder,
        me: int,
        identity: Ed25519PrivateKey,
        key: bytes,
    ) -> Message:
        """A new round: adopt the relayed registry, check the task, advertise fresh keys."""
        ctxt.state.config_records[STATE] = ConfigRecord()  # a new round replaces any older
        raw_cfg = require_bytes(record, "config")
        cfg = _parse_config(raw_cfg)
        registry = folder.accept(require_bytes(record, "registry"))
        raw_task = require_bytes(record, "task")
        if hashlib.sha256(raw_task).digest() != cfg.dp_digest:
            raise PolicyViolation("the round's task does not match its digest (SA-06)")
        task = FedAvgTask.parse(raw_task)
        policy = self.policy or ClientPolicy(max_corrupt_fraction=registry.policy_fraction)
        if task.dp:
            _check_dp(DistributedDPConfig.from_canonical(task.dp), cfg, task, policy)
        elif task.size + 1 != cfg.d:
            raise PolicyViolation(f"the round's d={cfg.d} does not fit a {task.size}-value model")
        client = SecAggClient(cfg, me, identity, registry.identities, policy=policy)
        advert = client.advertise()
        ctxt.state.config_records[STATE] = ConfigRecord(
            {"member": me, "config": raw_cfg, "task": raw_task, "blob": export_client(client, key)}
        )
        return _reply(msg, Stage.ADVERTISE_KEYS, wire.client_to_pb(advert, cfg))

    def _train(
        self,
        msg: Message,
        ctxt: Context,
        call_next: ClientAppCallable,
        cfg: RoundConfig,
        task: FedAvgTask,
    ) -> np.ndarray[tuple[int], np.dtype[np.uint32]]:
        """Run the wrapped app on the round's model; return ``[w * x, w]`` encoded, or with DP
        the update ``x - global`` clipped, rotated, noised and encoded."""
        arrays = msg.content.array_records.get(_FIT_PARAMETERS)
        if arrays is None or arrays_digest(arrays) != cfg.model_digest:
            raise PolicyViolation("the model sent is not the round's model (SA-06)")
        start = arrays_to_vector(arrays, task.layout) if task.dp else None
        del msg.content.config_records[RECORD]  # the wrapped app sees a plain train message
        out = call_next(msg, ctxt)
        if out.has_error():
            raise UnexpectedMessage(f"the client app failed: {out.error.reason}")
        try:
            fitres = compat.recorddict_to_fitres(out.content, keep_input=False)
        except (KeyError, TypeError) as exc:
            raise InvalidMessage(f"the client app did not return a FitRes: {exc}") from None
        if fitres.status.code is not Code.OK:
            raise UnexpectedMessage(f"the client app failed: {fitres.status.message}")
        params = compat.parameters_to_arrayrecord(fitres.parameters, keep_input=False)
        vec = arrays_to_vector(params, task.layout)
        if start is not None:
            dp_cfg = DistributedDPConfig.from_canonical(task.dp)
            return dp_encode(vec - start, dp_cfg, rotation_seed(cfg, dp_cfg))
        w = task.weight(fitres.num_examples)
        x = np.append(vec * w, w)
        return cfg.encoding.encode(x, SystemRandom())


#: The mod with its member read from the node's context (see the module docstring).
secagg_mod = SecAggMod()
