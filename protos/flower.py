"""Our protocol's messages inside Flower's (``flwr==1.42``): what the server workflow
(:mod:`aggregator.flower`) and the client mod (:mod:`client.flower`) both need, in one place
below both (they never import each other).

A stage's message carries one :class:`~flwr.app.ConfigRecord` under :data:`RECORD` holding the
stage name and the protobuf envelope of :mod:`protos.wire` (``bytes``; nothing is pickled),
so every size and field check of the gRPC transport applies unchanged. The first message
(ADVERTISE_KEYS) also carries the round config, the registry the administrator signed (the
client verifies it against the administrator key pinned in its own folder) and the round's
task: the weighting rule and the layout of the model, whose SHA-256 is the config's
``dp_digest``. The global model's digest is the config's ``model_digest``, so a server that
sends two clients different models, or a task other than the one announced, is refused
(docs/threats.md SA-06).

Weighting follows Flower's FedAvg and its SecAgg+ mod: a client uploads ``[w * x, w]`` with
``w = min(num_examples, max_weight) / max_weight``, so the server's one secure sum gives
``sum w_u x_u`` and ``sum w_u`` and the weighted mean is their quotient.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord

from secagg import InvalidMessage, Stage

__all__ = [
    "RECORD",
    "REFUSED",
    "STATE",
    "TASK_KIND",
    "FedAvgTask",
    "Layout",
    "arrays_digest",
    "arrays_to_vector",
    "dtypes_of",
    "layout_of",
    "require_bytes",
    "stage_of_record",
    "vector_to_arrays",
]

#: The ConfigRecord of a message's content that holds our stage.
RECORD: Final[str] = "secagg"
#: The ConfigRecord of a node's ``context.state`` that holds its sealed client state.
STATE: Final[str] = "secagg.state"
#: ``Error.code`` of a client's refusal (a :class:`secagg.ProtocolAbort` or a bad registry).
REFUSED: Final[int] = 0x5EC0
TASK_KIND: Final[str] = "flower-fedavg/v1"
_MAX_TASK: Final[int] = 1 << 20
_MAX_ARRAYS: Final[int] = 100_000

#: ``(key, shape)`` of each array of the model, in order.
Layout = tuple[tuple[str, tuple[int, ...]], ...]
F64 = npt.NDArray[np.float64]


def _numpy(record: ArrayRecord) -> list[tuple[str, npt.NDArray[np.generic]]]:
    """Every array of ``record`` as numpy (``np.load`` without pickle, as Flower does)."""
    if len(record) > _MAX_ARRAYS:
        raise InvalidMessage(f"a model of more than {_MAX_ARRAYS} arrays")
    try:
        return [(str(k), np.asarray(a.numpy())) for k, a in record.items()]
    except (TypeError, ValueError, OSError) as exc:
        raise InvalidMessage(f"an array of the model cannot be read: {exc}") from None


def layout_of(record: ArrayRecord) -> Layout:
    """The keys and shapes of ``record``'s arrays, in order (legacy Flower ``Parameters``
    carry their shapes inside the serialised arrays, so these are read from the arrays)."""
    return tuple((k, tuple(int(s) for s in a.shape)) for k, a in _numpy(record))


def dtypes_of(record: ArrayRecord) -> tuple[str, ...]:
    """The numpy dtype of each of ``record``'s arrays, in order."""
    return tuple(a.dtype.str for _, a in _numpy(record))


def arrays_digest(record: ArrayRecord) -> bytes:
    """SHA-256 over every array's key, dtype, shape, serialisation type and bytes, in order:
    the global model's ``model_digest`` (the same bytes give the same digest on both sides)."""
    h = hashlib.sha256(b"secagg/flower/v1/arrays")
    h.update(struct.pack(">Q", len(record)))
    for key, arr in record.items():
        for part in (str(key).encode(), arr.dtype.encode(), arr.stype.encode(), arr.data):
            h.update(struct.pack(">Q", len(part)))
            h.update(part)
        h.update(struct.pack(">Q", len(arr.shape)))
        for s in arr.shape:
            h.update(struct.pack(">q", int(s)))
    return h.digest()


def arrays_to_vector(record: ArrayRecord, layout: Layout | None = None) -> F64:
    """``record``'s arrays raveled into one float64 vector, in order; with ``layout``, refused
    (:class:`secagg.InvalidMessage`) unless the keys and shapes are exactly those."""
    arrays = _numpy(record)
    if layout is not None and tuple((k, tuple(a.shape)) for k, a in arrays) != layout:
        raise InvalidMessage("the model's arrays do not have the round's layout (SA-15)")
    if any(a.dtype.kind not in "fiu" for _, a in arrays):
        raise InvalidMessage("the model holds an array that is not numeric")
    parts = [a.astype(np.float64).ravel() for _, a in arrays]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def vector_to_arrays(
    vec: npt.ArrayLike, layout: Layout, dtypes: Sequence[str] | None = None
) -> ArrayRecord:
    """The inverse of :func:`arrays_to_vector`: ``vec`` cut into ``layout``'s arrays, each
    cast to its entry of ``dtypes`` (default float32)."""
    v = np.asarray(vec, dtype=np.float64)
    kinds = list(dtypes) if dtypes is not None else ["<f4"] * len(layout)
    if len(kinds) != len(layout):
        raise InvalidMessage("one dtype per array of the layout")
    total = sum(math.prod(shape) for _, shape in layout)
    if v.ndim != 1 or v.shape[0] != total:
        raise InvalidMessage(f"a vector of {v.shape} does not fill a layout of {total} values")
    out = ArrayRecord()
    at = 0
    for (key, shape), kind in zip(layout, kinds, strict=True):
        size = math.prod(shape)
        out[key] = Array(np.ascontiguousarray(v[at : at + size].reshape(shape).astype(kind)))
        at += size
    return out


@dataclass(frozen=True)
class FedAvgTask:
    """What a round computes: the weighted mean of models of ``layout`` with weights
    ``min(num_examples, max_weight) / max_weight``; or, with ``dp`` (the canonical bytes of a
    :class:`dp.distributed.DistributedDPConfig`), the plain mean of the clients' clipped and
    noised updates (DP-FedAvg: user-level distributed DP, no weights). Its :meth:`canonical`
    bytes are relayed to every client, whose SHA-256 is the round config's ``dp_digest``."""

    layout: Layout
    max_weight: float
    dp: bytes = b""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise InvalidMessage("max_weight must be a positive finite number")
        if len(self.layout) > _MAX_ARRAYS:
            raise InvalidMessage(f"a model of more than {_MAX_ARRAYS} arrays")

    @property
    def size(self) -> int:
        """Model parameters (the round's ``d`` is one more, the weight, without DP)."""
        return sum(math.prod(shape) for _, shape in self.layout)

    def canonical(self) -> bytes:
        doc: dict[str, object] = {
            "kind": TASK_KIND,
            "layout": [[k, list(s)] for k, s in self.layout],
            "max_weight": float(self.max_weight).hex(),
        }
        if self.dp:
            doc["dp"] = self.dp.decode()
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    def weight(self, num_examples: int) -> float:
        """The client's weight, in ``(0, 1]`` (Flower's SecAgg+ caps it the same way)."""
        if isinstance(num_examples, bool) or not isinstance(num_examples, int):
            raise InvalidMessage("num_examples must be an integer")
        if num_examples < 1:
            raise InvalidMessage("a client with no examples has nothing to contribute")
        return min(float(num_examples), self.max_weight) / self.max_weight

    @classmethod
    def parse(cls, raw: bytes) -> FedAvgTask:
        """Parse a relayed task; :class:`secagg.InvalidMessage` if it is not one."""
        if not isinstance(raw, bytes) or len(raw) > _MAX_TASK:
            raise InvalidMessage("the round's task is missing or too large")
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("kind") != TASK_KIND:
                raise ValueError(f"not a {TASK_KIND} task")
            layout: Layout = tuple(
                (str(k), tuple(int(s) for s in shape)) for k, shape in doc["layout"]
            )
            if any(s < 0 for _, shape in layout for s in shape):
                raise ValueError("a negative dimension")
            dp = doc.get("dp", "")
            if not isinstance(dp, str):
                raise ValueError("the DP parameters are not a string")
            task = cls(layout, float.fromhex(doc["max_weight"]), dp.encode())
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidMessage(f"the round's task is malformed: {exc}") from None
        if task.canonical() != raw:
            raise InvalidMessage("the round's task is not in canonical form")
        return task


def stage_of_record(record: ConfigRecord) -> Stage:
    """The stage a message's :data:`RECORD` names; :class:`secagg.InvalidMessage` if none."""
    name = record.get("stage")
    if not isinstance(name, str) or name not in Stage.__members__:
        raise InvalidMessage(f"unknown stage {name!r}")
    return Stage[name]


def require_bytes(record: ConfigRecord, key: str) -> bytes:
    """``record[key]`` if it is bytes; :class:`secagg.InvalidMessage` otherwise."""
    value = record.get(key)
    if not isinstance(value, bytes):
        raise InvalidMessage(f"the message has no {key!r} bytes")
    return value
