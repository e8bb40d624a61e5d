"""A client's round state, exported between stages and restored in another process.

A phone app is killed between stages; a Flower node's state moves between workers. The
:class:`~secagg.SecAggClient` of a round can be written out after any step and restored
from it, and the protocol goes on as if nothing had happened::

    blob = export_client(client, key)              # after advertise() or any receive()
    ...                                            # the process dies; a new one starts
    client = restore_client(blob, key, config)     # config: the round the server announces
    reply = client.receive(next_message)

The export holds the round's secrets (X25519 keys, the self-mask seed, Shamir shares, the
identity key, the input), so it is sealed: AES-256-GCM under a key derived (HKDF-SHA256) from
the caller's 32-byte ``key``, with the format version, the session id, the round number, the
config digest, the client id and the stage as associated data. :func:`restore_client` refuses
(:class:`StateError`) a blob sealed under another key, altered, of another version, or made
for another round or session than ``config``, the round being restored into. It cannot tell
an older snapshot of the *same* round from the latest one: keep only the latest, or pass
``expect_state`` (the stage the caller last reached) to refuse a rollback.

The format is generic on purpose: every attribute of the client is written, by type, with
no pickle. Allowed values are ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
tuples, lists, dicts, (frozen)sets, numpy arrays, enums and dataclasses defined under
``secagg`` or ``dp``, Ed25519 keys, BLS12-381 points, and this package's random sources.
Anything else raises :class:`StateError` at export, so a new client field of a new type
cannot be silently dropped; a restored client must have exactly the attributes of a freshly
constructed one (the same code version on both sides).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg._errors import SecAggError
from secagg._rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.client import ClientState, SecAggClient
from secagg.config import RoundConfig
from secagg.graph import Cohort, Ring, check_bitmap

__all__ = [
    "MAX_STATE_BYTES",
    "STATE_VERSION",
    "StateError",
    "export_client",
    "export_he_client",
    "restore_client",
    "restore_he_client",
    "snapshot_header",
]

STATE_VERSION: Final[int] = 1
#: The largest blob :func:`restore_client` reads (a d = 2^24 input, base64, with headroom).
MAX_STATE_BYTES: Final[int] = 1 << 28
_MAGIC: Final[bytes] = b"SECAGG-CLIENT-STATE\x00"
_HE_MAGIC: Final[bytes] = b"SECAGG-HECLNT-STATE\x00"  # same length as _MAGIC
_HE_STAGE: Final[str] = "he-ready"
# What an HeClient holds; its public context is re-read from the caller's bytes on restore.
_HE_FIELDS: Final[frozenset[str]] = frozenset(
    {"config", "client_id", "_identity", "_tag_key", "_rng", "_ctx"}
)
_HEADER: Final[struct.Struct] = struct.Struct(">H16sQ32sI16s")  # version sid round digest id stage
_NONCE: Final[int] = 12
_ALLOWED_PREFIXES: Final[tuple[str, ...]] = ("secagg.", "dp.")
# Client fields recomputed on restore from the sealed ones, never exported.
_DERIVED: Final[frozenset[str]] = frozenset({"_ring"})


class StateError(SecAggError):
    """An export or restore refused: a value that cannot be exported, a wrong key, a tampered
    or truncated blob, another version, or a snapshot of another round or session."""


def _derive(key: bytes) -> AESGCM:
    if not isinstance(key, bytes) or len(key) != 32:
        raise StateError("the state key must be 32 bytes")
    okm = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"secagg/v1/client-state"
    ).derive(key)
    return AESGCM(okm)


# --------------------------------------------------------------------------------------------
# The value codec: a typed JSON tree, no pickle
# --------------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise StateError("malformed bytes value")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError as exc:
        raise StateError(f"malformed bytes value: {exc}") from None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed_class(name: object) -> type:
    if not isinstance(name, str) or ":" not in name:
        raise StateError("malformed type name")
    module, qual = name.split(":", 1)
    if not module.startswith(_ALLOWED_PREFIXES):
        raise StateError(f"type {name} is outside secagg and dp")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise StateError(f"unknown type {name}") from None
    if not isinstance(obj, type) or not (
        dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)
    ):
        raise StateError(f"{name} is neither a dataclass nor an enum")
    return obj


def _enc(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return {"enum": _qualname(type(value)), "v": _enc(value.value, where)}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"f": value.hex()}
    if isinstance(value, bytes):
        return {"b": _b64(value)}
    if isinstance(value, tuple):
        return {"t": [_enc(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return {"l": [_enc(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, frozenset | set):
        items = sorted((_enc(v, where) for v in value), key=lambda e: json.dumps(e, sort_keys=True))
        return {"fs" if isinstance(value, frozenset) else "s": items}
    if isinstance(value, Cohort):
        value = dict(value.items())
    if isinstance(value, dict):
        return {"d": [[_enc(k, where), _enc(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind not in "biuf":
            raise StateError(f"{where}: arrays of dtype {arr.dtype} cannot be exported")
        return {"nd": arr.dtype.str, "shape": list(arr.shape), "data": _b64(arr.tobytes())}
    if isinstance(value, np.generic):
        return _enc(value.item(), where)
    if isinstance(value, Ed25519PrivateKey):
        raw = value.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return {"ed25519": _b64(raw)}
    if isinstance(value, SystemRandom):
        return {"rng": "system"}
    if isinstance(value, DeterministicRandom):
        key, offset = value.position()
        return {"rng": "deterministic", "key": _b64(key), "offset": offset}
    if type(value).__name__ == "G1Point" and hasattr(value, "to_compressed_bytes"):
        return {"g1": _b64(bytes(value.to_compressed_bytes()))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(_ALLOWED_PREFIXES):
            raise StateError(f"{where}: dataclass {_qualname(cls)} is outside secagg and dp")
        return {
            "dc": _qualname(cls),
            "fields": {
                f.name: _enc(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)
            },
        }
    raise StateError(f"{where}: a {type(value).__name__} cannot be exported")


_Decoder = Callable[[dict[str, Any]], Any]


def _dec_dataclass(node: dict[str, Any]) -> Any:
    cls = _allowed_class(node.get("dc"))
    raw = node.get("fields")
    if not isinstance(raw, dict):
        raise StateError("malformed dataclass value")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(raw) != names:
        raise StateError(f"{_qualname(cls)}: fields {sorted(raw)} are not {sorted(names)}")
    values = {k: _dec(v) for k, v in raw.items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        obj = cls(**{k: v for k, v in values.items() if k in init})
    except (TypeError, ValueError, SecAggError) as exc:
        raise StateError(f"{_qualname(cls)} does not rebuild: {exc}") from None
    for k, v in values.items():
        if k not in init:
            object.__setattr__(obj, k, v)
    return obj


def _dec_array(node: dict[str, Any]) -> Any:
    dtype = np.dtype(str(node.get("nd")))
    if dtype.kind not in "biuf":
        raise StateError(f"arrays of dtype {dtype} are not restored")
    shape = node.get("shape")
    if not isinstance(shape, list) or not all(isinstance(x, int) and x >= 0 for x in shape):
        raise StateError("malformed array shape")
    data = _unb64(node.get("data"))
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise StateError("array data does not match its shape")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _dec_rng(node: dict[str, Any]) -> RandomSource:
    if node.get("rng") == "system":
        return SystemRandom()
    if node.get("rng") == "deterministic":
        offset = node.get("offset")
        if not isinstance(offset, int) or offset < 0:
            raise StateError("malformed random source")
        return DeterministicRandom.resume(_unb64(node.get("key")), offset)
    raise StateError("unknown random source")


def _dec_g1(node: dict[str, Any]) -> Any:
    from py_arkworks_bls12381 import G1Point

    try:
        return G1Point.from_compressed_bytes(_unb64(node.get("g1")))
    except Exception as exc:  # the binding raises its own types
        raise StateError(f"not a BLS12-381 point: {exc}") from None


def _dec_enum(node: dict[str, Any]) -> Any:
    cls = _allowed_class(node.get("enum"))
    try:
        return cls(_dec(node.get("v")))
    except ValueError:
        raise StateError(f"{_qualname(cls)} has no such value") from None


_DECODERS: Final[dict[str, _Decoder]] = {
    "f": lambda n: float.fromhex(str(n["f"])),
    "b": lambda n: _unb64(n["b"]),
    "t": lambda n: tuple(_dec(v) for v in _seq(n["t"])),
    "l": lambda n: [_dec(v) for v in _seq(n["l"])],
    "fs": lambda n: frozenset(_dec(v) for v in _seq(n["fs"])),
    "s": lambda n: {_dec(v) for v in _seq(n["s"])},
    "d": lambda n: {_dec(_pair(kv)[0]): _dec(_pair(kv)[1]) for kv in _seq(n["d"])},
    "nd": _dec_array,
    "ed25519": lambda n: Ed25519PrivateKey.from_private_bytes(_unb64(n["ed25519"])),
    "rng": _dec_rng,
    "g1": _dec_g1,
    "dc": _dec_dataclass,
    "enum": _dec_enum,
}


def _seq(v: object) -> list[Any]:
    if not isinstance(v, list):
        raise StateError("malformed sequence")
    return v


def _pair(v: object) -> list[Any]:
    if not isinstance(v, list) or len(v) != 2:
        raise StateError("malformed mapping entry")
    return v


def _dec(node: Any) -> Any:
    if node is None or isinstance(node, bool | int | str):
        return node
    if not isinstance(node, dict):
        raise StateError("malformed value")
    for tag, decode in _DECODERS.items():
        if tag in node:
            try:
                return decode(node)
            except StateError:
                raise
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"malformed {tag!r} value: {exc}") from None
    raise StateError(f"unknown value tag in {sorted(node)}")


# --------------------------------------------------------------------------------------------
# Sealing
# --------------------------------------------------------------------------------------------


def _header(config: Any, client_id: int, stage: str, magic: bytes = _MAGIC) -> bytes:
    if config.session_id is None:
        raise StateError("the round has no session id yet")
    return magic + _HEADER.pack(
        STATE_VERSION,
        config.session_id,
        config.round,
        config.digest,
        client_id,
        stage.encode().ljust(16, b"\x00"),
    )


def snapshot_header(blob: bytes) -> dict[str, Any]:
    """The public part of a blob (unauthenticated until :func:`restore_client` opens it):
    version, session id, round, config digest, client id and stage."""
    n = len(_MAGIC) + _HEADER.size
    if len(blob) < n + _NONCE + 16 or not blob.startswith((_MAGIC, _HE_MAGIC)):
        raise StateError("not a client state blob")
    version, sid, rnd, digest, cid, stage = _HEADER.unpack(blob[len(_MAGIC) : n])
    try:
        name = stage.rstrip(b"\x00").decode()
        state: ClientState | str = name if name == _HE_STAGE else ClientState(name)
    except (UnicodeDecodeError, ValueError):
        raise StateError("unknown client stage in the header") from None
    return {
        "kind": "he" if blob.startswith(_HE_MAGIC) else "secagg",
        "version": version,
        "session_id": sid,
        "round": rnd,
        "config_digest": digest,
        "client_id": cid,
        "state": state,
    }


def export_client(client: SecAggClient, key: bytes, *, rng: RandomSource | None = None) -> bytes:
    """Seal ``client``'s whole state under ``key`` (32 bytes); see the module docstring.

    A client that aborted or finished has nothing to resume and is refused. ``rng`` draws the
    AEAD nonce (default: the OS CSPRNG), never the client's own source.
    """
    if client.state in (ClientState.ABORTED, ClientState.DONE):
        raise StateError(f"a client in state {client.state.value} has nothing to resume")
    aead = _derive(key)
    body = {
        name: _enc(None if name in _DERIVED else value, name)
        for name, value in sorted(vars(client).items())
    }
    plain = json.dumps({"class": _qualname(type(client)), "attrs": body}, sort_keys=True).encode()
    header = _header(client.config, client.id, client.state.value)
    nonce = (rng if rng is not None else SystemRandom()).bytes(_NONCE)
    return header + nonce + aead.encrypt(nonce, plain, header)


def restore_client(
    blob: bytes,
    key: bytes,
    config: RoundConfig,
    *,
    expect_state: ClientState | None = None,
) -> SecAggClient:
    """The client sealed in ``blob``, for the round ``config`` (the one the server announces
    now); raises :class:`StateError` on any mismatch (see the module docstring)."""
    head, doc = _open(blob, key, config, "secagg")
    if expect_state is not None and head["state"] is not expect_state:
        raise StateError(f"the snapshot is at {head['state'].value}, not {expect_state.value}")
    if doc.get("class") != _qualname(SecAggClient):
        raise StateError("the snapshot is not of a SecAggClient")
    attrs = doc.get("attrs")
    if not isinstance(attrs, dict):
        raise StateError("malformed snapshot body")
    values = {str(k): _dec(v) for k, v in attrs.items()}
    saved_config = values.get("config")
    if not isinstance(saved_config, RoundConfig) or saved_config.digest != config.digest:
        raise StateError("the snapshot's configuration is not the round's")
    return _rebuild(values, head, config)


def _open(blob: bytes, key: bytes, config: Any, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the header against ``config``, then authenticate and parse the body."""
    if not isinstance(blob, bytes) or len(blob) > MAX_STATE_BYTES:
        raise StateError("the blob is not bytes or is too large")
    head = snapshot_header(blob)
    if head["kind"] != kind:
        raise StateError(f"the snapshot is of a {head['kind']} client, not {kind}")
    if head["version"] != STATE_VERSION:
        raise StateError(f"state version {head['version']} is not {STATE_VERSION}")
    if config.session_id != head["session_id"] or config.round != head["round"]:
        raise StateError(
            f"the snapshot is of round {head['round']} of another session or round than the one "
            f"being restored into (round {config.round}): refusing a replay"
        )
    if head["config_digest"] != config.digest:
        raise StateError("the snapshot was made under another configuration of this round")
    n = len(_MAGIC) + _HEADER.size
    header, nonce, sealed = blob[:n], blob[n : n + _NONCE], blob[n + _NONCE :]
    try:
        plain = _derive(key).decrypt(nonce, sealed, header)
    except InvalidTag:
        raise StateError("the snapshot does not open under this key (or was altered)") from None
    try:
        doc = json.loads(plain)
    except ValueError:
        raise StateError("the snapshot's body is not JSON") from None
    if not isinstance(doc, dict):
        raise StateError("malformed snapshot body")
    return head, doc


def _rebuild(values: dict[str, Any], head: dict[str, Any], config: RoundConfig) -> SecAggClient:
    try:
        fresh = SecAggClient(
            config,
            values["id"],
            values["_identity"],
            values["_registry"],
            policy=values["policy"],
            rng=values["rng"],
        )
    except KeyError as exc:
        raise StateError(f"the snapshot lacks {exc}") from None
    except SecAggError as exc:
        raise StateError(f"the snapshot does not rebuild a client: {exc}") from None
    if set(values) != set(vars(fresh)):
        missing = sorted(set(vars(fresh)) - set(values))
        extra = sorted(set(values) - set(vars(fresh)))
        raise StateError(f"the snapshot's fields differ from this version's: -{missing} +{extra}")
    if values.get("id") != head["client_id"] or values.get("state") is not head["state"]:
        raise StateError("the snapshot's body does not match its header")
    vars(fresh).update(values)
    # Derived from what was sealed, so rebuilt rather than trusted (SPEC.md D14): the sorted
    # cohort and the ring of the round's graph seed over the U1 bitmap.
    if not isinstance(fresh._registry, Mapping):
        raise StateError("the snapshot's registry is not a mapping")
    fresh._registry = Cohort.of(fresh._registry)
    if fresh._seed:
        try:
            check_bitmap(config.n, fresh._u1_bitmap)
        except (TypeError, ValueError):
            raise StateError("the snapshot's U1 bitmap does not cover the cohort") from None
        fresh._ring = Ring(fresh._cohort(), config.degree, fresh._seed, fresh._u1_bitmap)
    return fresh


# --------------------------------------------------------------------------------------------
# The HE client (secagg.he): one upload per round, so its state is what it was built from
# --------------------------------------------------------------------------------------------


def export_he_client(
    client: Any, key: bytes, public_context: bytes, *, rng: RandomSource | None = None
) -> bytes:
    """Seal an :class:`secagg.he.HeClient` under ``key``, bound to its round like
    :func:`export_client`. ``public_context`` is the round's public context (the bytes the
    client was built from); restoring parses and checks it again."""
    from secagg.he import HeClient

    if not isinstance(client, HeClient):
        raise StateError("not an HeClient")
    if set(vars(client)) != _HE_FIELDS:
        raise StateError(
            f"HeClient has fields {sorted(set(vars(client)) ^ _HE_FIELDS)} this format lacks"
        )
    aead = _derive(key)
    body = {
        "config": _enc(client.config, "config"),
        "client_id": client.client_id,
        "identity": _enc(client._identity, "identity"),
        "tag_key": _enc(client._tag_key, "tag_key"),
        "rng": _enc(client._rng, "rng"),
        "public_context": _enc(bytes(public_context), "public_context"),
    }
    plain = json.dumps({"class": _qualname(HeClient), "attrs": body}, sort_keys=True).encode()
    header = _header(client.config, client.client_id, _HE_STAGE, _HE_MAGIC)
    nonce = (rng if rng is not None else SystemRandom()).bytes(_NONCE)
    return header + nonce + aead.encrypt(nonce, plain, header)


def restore_he_client(blob: bytes, key: bytes, config: Any) -> Any:
    """The :class:`secagg.he.HeClient` sealed in ``blob``, for the round ``config`` (an
    :class:`secagg.he.HeRoundConfig`); refuses like :func:`restore_client`."""
    from secagg.he import HeClient, HeError

    head, doc = _open(blob, key, config, "he")
    attrs = doc.get("attrs")
    if doc.get("class") != _qualname(HeClient) or not isinstance(attrs, dict):
        raise StateError("the snapshot is not of an HeClient")
    if set(attrs) != {"config", "client_id", "identity", "tag_key", "rng", "public_context"}:
        raise StateError("malformed HeClient snapshot")
    values = {k: _dec(v) for k, v in attrs.items()}
    if getattr(values["config"], "digest", None) != config.digest:
        raise StateError("the snapshot's configuration is not the round's")
    if values["client_id"] != head["client_id"]:
        raise StateError("the snapshot's body does not match its header")
    rng = values["rng"]
    try:
        return HeClient(
            config,
            values["public_context"],
            values["tag_key"],
            values["client_id"],
            values["identity"],
            rng=rng,
            allow_deterministic_rng=bool(getattr(rng, "deterministic", False)),
        )
    except (SecAggError, HeError) as exc:
        raise StateError(f"the snapshot does not rebuild an HeClient: {exc}") from None
