from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OneShotConfig(_message.Message):
    __slots__ = ("version", "session_id", "round", "n", "d", "committee", "threshold", "min_cohort", "clip", "bits", "level_bits", "config_digest", "task_digest", "model_digest")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_COHORT_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_BITS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TASK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    version: int
    session_id: bytes
    round: int
    n: int
    d: int
    committee: _containers.RepeatedScalarFieldContainer[int]
    threshold: int
    min_cohort: int
    clip: float
    bits: int
    level_bits: int
    config_digest: bytes
    task_digest: bytes
    model_digest: bytes
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., n: _Optional[int] = ..., d: _Optional[int] = ..., committee: _Optional[_Iterable[int]] = ..., threshold: _Optional[int] = ..., min_cohort: _Optional[int] = ..., clip: _Optional[float] = ..., bits: _Optional[int] = ..., level_bits: _Optional[int] = ..., config_digest: _Optional[bytes] = ..., task_digest: _Optional[bytes] = ..., model_digest: _Optional[bytes] = ...) -> None: ...

class MemberKey(_message.Message):
    __slots__ = ("member_id", "public_key", "signature")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    public_key: bytes
    signature: bytes
    def __init__(self, member_id: _Optional[int] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("client_id", "after_round")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    after_round: int
    def __init__(self, client_id: _Optional[int] = ..., after_round: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("config", "member_keys", "deadline_s", "finished", "task", "model")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MEMBER_KEYS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    config: OneShotConfig
    member_keys: _containers.RepeatedCompositeFieldContainer[MemberKey]
    deadline_s: float
    finished: bool
    task: bytes
    model: bytes
    def __init__(self, config: _Optional[_Union[OneShotConfig, _Mapping]] = ..., member_keys: _Optional[_Iterable[_Union[MemberKey, _Mapping]]] = ..., deadline_s: _Optional[float] = ..., finished: bool = ..., task: _Optional[bytes] = ..., model: _Optional[bytes] = ...) -> None: ...

class UploadPart(_message.Message):
    __slots__ = ("round", "session_id", "sender", "index", "masked", "ephemeral", "shares", "signature")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    sender: int
    index: int
    masked: bytes
    ephemeral: bytes
    shares: _containers.RepeatedScalarFieldContainer[bytes]
    signature: bytes
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., sender: _Optional[int] = ..., index: _Optional[int] = ..., masked: _Optional[bytes] = ..., ephemeral: _Optional[bytes] = ..., shares: _Optional[_Iterable[bytes]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UploadAck(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: int
    def __init__(self, parts: _Optional[int] = ...) -> None: ...

class ShareForMember(_message.Message):
    __slots__ = ("client_id", "ephemeral", "masked_digest", "share_digests", "sealed", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    MASKED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SHARE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    ephemeral: bytes
    masked_digest: bytes
    share_digests: bytes
    sealed: bytes
    signature: bytes
    def __init__(self, client_id: _Optional[int] = ..., ephemeral: _Optional[bytes] = ..., masked_digest: _Optional[bytes] = ..., share_digests: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SetSignature(_message.Message):
    __slots__ = ("member_id", "signature")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    signature: bytes
    def __init__(self, member_id: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CheckTask(_message.Message):
    __slots__ = ("config", "included", "shares")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    config: OneShotConfig
    included: _containers.RepeatedScalarFieldContainer[int]
    shares: _containers.RepeatedCompositeFieldContainer[ShareForMember]
    def __init__(self, config: _Optional[_Union[OneShotConfig, _Mapping]] = ..., included: _Optional[_Iterable[int]] = ..., shares: _Optional[_Iterable[_Union[ShareForMember, _Mapping]]] = ...) -> None: ...

class SignTask(_message.Message):
    __slots__ = ("config", "included")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    config: OneShotConfig
    included: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, config: _Optional[_Union[OneShotConfig, _Mapping]] = ..., included: _Optional[_Iterable[int]] = ...) -> None: ...

class ReleaseTask(_message.Message):
    __slots__ = ("config", "included", "signatures")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    config: OneShotConfig
    included: _containers.RepeatedScalarFieldContainer[int]
    signatures: _containers.RepeatedCompositeFieldContainer[SetSignature]
    def __init__(self, config: _Optional[_Union[OneShotConfig, _Mapping]] = ..., included: _Optional[_Iterable[int]] = ..., signatures: _Optional[_Iterable[_Union[SetSignature, _Mapping]]] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("member_id",)
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    def __init__(self, member_id: _Optional[int] = ...) -> None: ...

class CommitteeTask(_message.Message):
    __slots__ = ("task_id", "open_round", "check", "sign", "release", "forget", "finished")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_ROUND_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    SIGN_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    FORGET_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    open_round: OneShotConfig
    check: CheckTask
    sign: SignTask
    release: ReleaseTask
    forget: OneShotConfig
    finished: bool
    def __init__(self, task_id: _Optional[int] = ..., open_round: _Optional[_Union[OneShotConfig, _Mapping]] = ..., check: _Optional[_Union[CheckTask, _Mapping]] = ..., sign: _Optional[_Union[SignTask, _Mapping]] = ..., release: _Optional[_Union[ReleaseTask, _Mapping]] = ..., forget: _Optional[_Union[OneShotConfig, _Mapping]] = ..., finished: bool = ...) -> None: ...

class Complaint(_message.Message):
    __slots__ = ("culprits", "reason")
    CULPRITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    culprits: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, culprits: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class ShareSum(_message.Message):
    __slots__ = ("included", "residues")
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    RESIDUES_FIELD_NUMBER: _ClassVar[int]
    included: _containers.RepeatedScalarFieldContainer[int]
    residues: bytes
    def __init__(self, included: _Optional[_Iterable[int]] = ..., residues: _Optional[bytes] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CommitteeAnswer(_message.Message):
    __slots__ = ("task_id", "member_id", "key", "checked", "complaint", "set_signature", "share_sum", "refusal", "done")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    SET_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SHARE_SUM_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    member_id: int
    key: MemberKey
    checked: bool
    complaint: Complaint
    set_signature: SetSignature
    share_sum: ShareSum
    refusal: Refusal
    done: bool
    def __init__(self, task_id: _Optional[int] = ..., member_id: _Optional[int] = ..., key: _Optional[_Union[MemberKey, _Mapping]] = ..., checked: bool = ..., complaint: _Optional[_Union[Complaint, _Mapping]] = ..., set_signature: _Optional[_Union[SetSignature, _Mapping]] = ..., share_sum: _Optional[_Union[ShareSum, _Mapping]] = ..., refusal: _Optional[_Union[Refusal, _Mapping]] = ..., done: bool = ...) -> None: ...

class AnswerAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
