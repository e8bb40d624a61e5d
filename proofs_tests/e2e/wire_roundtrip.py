"""Run one SecAgg round with every message through the protobuf wire layer; print one JSON line.

Standalone on purpose: ``test_protobuf_range.py`` runs it in small venvs that hold only
numpy, cryptography, grpcio and one protobuf version (the ends of the range pyproject.toml
declares), with this repository on ``sys.path``. Every server and client message is turned into
its envelope, serialized, parsed back and decoded before it is delivered, so a gencode/runtime
mismatch anywhere on the path fails the round. The HE and consortium schemas have no core
decoder without their extras; each of their messages is built, serialized and parsed back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script from any working directory
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from google.protobuf import __version__ as protobuf_version

import protos.secagg.consortium.v1.consortium_pb2 as cpb
import protos.secagg.he.v1.he_pb2 as hpb
from protos import wire
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import RoundConfig, Stage, simulate
from secagg.messages import ClientMessage, ServerMessage


def run() -> dict[str, object]:
    """One round (n=5, t=3, one dropout) through the wire; returns what the test checks."""
    cfg = RoundConfig(n=5, t=3, d=64, clip=1.0)
    counts = {"server": 0, "client": 0}
    seen_cfg: list[RoundConfig] = []

    def server_hop(stage: Stage, recipient: int, msg: ServerMessage) -> ServerMessage | None:
        rc = seen_cfg[0]
        raw = wire.server_to_pb(msg, rc).SerializeToString()
        back = wire.server_from_pb(pb.ServerEnvelope.FromString(raw), rc)
        assert not isinstance(back, pb.RoundOutcome)
        counts["server"] += 1
        return back

    def client_hop(stage: Stage, sender: int, msg: ClientMessage) -> ClientMessage | None:
        rc = seen_cfg[0]
        raw = wire.client_to_pb(msg, rc).SerializeToString()
        back = wire.client_from_pb(pb.ClientEnvelope.FromString(raw), rc)
        counts["client"] += 1
        return back

    cfg = cfg.with_session(b"\x01" * 16)
    raw_cfg = wire.config_to_pb(cfg).SerializeToString()
    seen_cfg.append(wire.config_from_pb(pb.RoundConfig.FromString(raw_cfg)))
    assert seen_cfg[0].digest == cfg.digest
    inputs = [np.random.default_rng(i).uniform(-0.5, 0.5, cfg.d) for i in range(cfg.n)]
    res = simulate(
        cfg,
        inputs,
        drops={Stage.MASKED_INPUT: [2]},
        tamper=server_hop,
        client_tamper=client_hop,
        seed=7,
    )
    truth = sum(inputs[u - 1] for u in res.included)
    err = float(np.abs(res.aggregate - truth).max())
    others = 0
    for module in (hpb, cpb):
        for name in module.DESCRIPTOR.message_types_by_name:
            cls = getattr(module, name)
            again = cls.FromString(cls().SerializeToString())
            assert again == cls()
            others += 1
    # The gRPC stubs import (grpcio beside this protobuf) and name the services.
    import protos.secagg.consortium.v1.consortium_pb2_grpc as cg
    import protos.secagg.he.v1.he_pb2_grpc as hg
    import protos.secagg.v1.secagg_pb2_grpc as sg

    stubs = [m.__name__ for m in (sg, hg, cg)]
    return {
        "protobuf": protobuf_version,
        "included": sorted(res.included),
        "max_error": err,
        "error_bound": res.error_bound,
        "server_messages": counts["server"],
        "client_messages": counts["client"],
        "other_messages": others,
        "stubs": stubs,
    }


if __name__ == "__main__":
    print(json.dumps(run()))
