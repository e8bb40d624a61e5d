from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeRoundConfig(_message.Message):
    __slots__ = ("version", "session_id", "round", "n", "d", "params", "clip", "bits", "level_bits", "flood", "config_digest")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_BITS_FIELD_NUMBER: _ClassVar[int]
    FLOOD_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    version: int
    session_id: bytes
    round: int
    n: int
    d: int
    params: str
    clip: float
    bits: int
    level_bits: int
    flood: int
    config_digest: bytes
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., n: _Optional[int] = ..., d: _Optional[int] = ..., params: _Optional[str] = ..., clip: _Optional[float] = ..., bits: _Optional[int] = ..., level_bits: _Optional[int] = ..., flood: _Optional[int] = ..., config_digest: _Optional[bytes] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("client_id", "after_round")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    after_round: int
    def __init__(self, client_id: _Optional[int] = ..., after_round: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("config", "public_context", "context_signature", "keyholder_certificate", "deadline_s", "finished", "tag_key")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEYHOLDER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TAG_KEY_FIELD_NUMBER: _ClassVar[int]
    config: HeRoundConfig
    public_context: bytes
    context_signature: bytes
    keyholder_certificate: bytes
    deadline_s: float
    finished: bool
    tag_key: bytes
    def __init__(self, config: _Optional[_Union[HeRoundConfig, _Mapping]] = ..., public_context: _Optional[bytes] = ..., context_signature: _Optional[bytes] = ..., keyholder_certificate: _Optional[bytes] = ..., deadline_s: _Optional[float] = ..., finished: bool = ..., tag_key: _Optional[bytes] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("round", "session_id", "sender", "index", "ciphertext", "sealed_tag", "signature")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SEALED_TAG_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    sender: int
    index: int
    ciphertext: bytes
    sealed_tag: bytes
    signature: bytes
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., sender: _Optional[int] = ..., index: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., sealed_tag: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    def __init__(self, chunks: _Optional[int] = ...) -> None: ...

class AwaitRequest(_message.Message):
    __slots__ = ("round", "session_id", "client_id")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    client_id: int
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., client_id: _Optional[int] = ...) -> None: ...

class RoundOutcome(_message.Message):
    __slots__ = ("completed", "reason", "included")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    completed: bool
    reason: str
    included: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, completed: bool = ..., reason: _Optional[str] = ..., included: _Optional[_Iterable[int]] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("client_id", "sealed_tag", "upload_digest", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_TAG_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    sealed_tag: bytes
    upload_digest: bytes
    signature: bytes
    def __init__(self, client_id: _Optional[int] = ..., sealed_tag: _Optional[bytes] = ..., upload_digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SumRequest(_message.Message):
    __slots__ = ("config", "chunks", "included", "contributions")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    config: HeRoundConfig
    chunks: _containers.RepeatedScalarFieldContainer[bytes]
    included: _containers.RepeatedScalarFieldContainer[int]
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    def __init__(self, config: _Optional[_Union[HeRoundConfig, _Mapping]] = ..., chunks: _Optional[_Iterable[bytes]] = ..., included: _Optional[_Iterable[int]] = ..., contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ...) -> None: ...

class KeyHolderTask(_message.Message):
    __slots__ = ("task_id", "open_round", "release", "forget", "finished")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_ROUND_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    FORGET_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    open_round: HeRoundConfig
    release: SumRequest
    forget: HeRoundConfig
    finished: bool
    def __init__(self, task_id: _Optional[int] = ..., open_round: _Optional[_Union[HeRoundConfig, _Mapping]] = ..., release: _Optional[_Union[SumRequest, _Mapping]] = ..., forget: _Optional[_Union[HeRoundConfig, _Mapping]] = ..., finished: bool = ...) -> None: ...

class RoundKeys(_message.Message):
    __slots__ = ("public_context", "parameters_context", "context_signature", "keyholder_certificate", "tag_key")
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEYHOLDER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    TAG_KEY_FIELD_NUMBER: _ClassVar[int]
    public_context: bytes
    parameters_context: bytes
    context_signature: bytes
    keyholder_certificate: bytes
    tag_key: bytes
    def __init__(self, public_context: _Optional[bytes] = ..., parameters_context: _Optional[bytes] = ..., context_signature: _Optional[bytes] = ..., keyholder_certificate: _Optional[bytes] = ..., tag_key: _Optional[bytes] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("count", "int_sum", "error_bound", "flood")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INT_SUM_FIELD_NUMBER: _ClassVar[int]
    ERROR_BOUND_FIELD_NUMBER: _ClassVar[int]
    FLOOD_FIELD_NUMBER: _ClassVar[int]
    count: int
    int_sum: bytes
    error_bound: float
    flood: int
    def __init__(self, count: _Optional[int] = ..., int_sum: _Optional[bytes] = ..., error_bound: _Optional[float] = ..., flood: _Optional[int] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class KeyHolderAnswer(_message.Message):
    __slots__ = ("task_id", "keys", "release", "refusal", "done")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    keys: RoundKeys
    release: Release
    refusal: Refusal
    done: bool
    def __init__(self, task_id: _Optional[int] = ..., keys: _Optional[_Union[RoundKeys, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., done: bool = ...) -> None: ...

class AnswerAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
