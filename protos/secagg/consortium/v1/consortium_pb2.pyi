from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetRegistryRequest(_message.Message):
    __slots__ = ("client_id", "have_version")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    have_version: int
    def __init__(self, client_id: _Optional[int] = ..., have_version: _Optional[int] = ...) -> None: ...

class SignedRegistry(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DeclineRequest(_message.Message):
    __slots__ = ("client_id", "round", "session_id", "reason")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round: int
    session_id: bytes
    reason: str
    def __init__(self, client_id: _Optional[int] = ..., round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...

class DeclineAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
