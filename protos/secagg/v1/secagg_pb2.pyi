from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    ADVERTISE_KEYS: _ClassVar[Stage]
    SHARE_KEYS: _ClassVar[Stage]
    MASKED_INPUT: _ClassVar[Stage]
    CONSISTENCY: _ClassVar[Stage]
    UNMASK: _ClassVar[Stage]
    CHECK: _ClassVar[Stage]
STAGE_UNSPECIFIED: Stage
ADVERTISE_KEYS: Stage
SHARE_KEYS: Stage
MASKED_INPUT: Stage
CONSISTENCY: Stage
UNMASK: Stage
CHECK: Stage

class RoundConfig(_message.Message):
    __slots__ = ("version", "session_id", "round", "n", "t", "k", "d", "bits", "clip", "level_bits", "model_digest", "dp_digest", "config_digest", "norm_bound")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    LEVEL_BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DP_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    version: int
    session_id: bytes
    round: int
    n: int
    t: int
    k: int
    d: int
    bits: int
    clip: float
    level_bits: int
    model_digest: bytes
    dp_digest: bytes
    config_digest: bytes
    norm_bound: int
    def __init__(self, version: _Optional[int] = ..., session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., n: _Optional[int] = ..., t: _Optional[int] = ..., k: _Optional[int] = ..., d: _Optional[int] = ..., bits: _Optional[int] = ..., clip: _Optional[float] = ..., level_bits: _Optional[int] = ..., model_digest: _Optional[bytes] = ..., dp_digest: _Optional[bytes] = ..., config_digest: _Optional[bytes] = ..., norm_bound: _Optional[int] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("client_id", "after_round")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    after_round: int
    def __init__(self, client_id: _Optional[int] = ..., after_round: _Optional[int] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("config", "stage_deadline_s", "finished", "task")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STAGE_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    config: RoundConfig
    stage_deadline_s: float
    finished: bool
    task: bytes
    def __init__(self, config: _Optional[_Union[RoundConfig, _Mapping]] = ..., stage_deadline_s: _Optional[float] = ..., finished: bool = ..., task: _Optional[bytes] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("client_id", "round", "session_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: int
    round: int
    session_id: bytes
    def __init__(self, client_id: _Optional[int] = ..., round: _Optional[int] = ..., session_id: _Optional[bytes] = ...) -> None: ...

class ModelBlob(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AdvertiseKeys(_message.Message):
    __slots__ = ("c_pk", "s_pk", "signature")
    C_PK_FIELD_NUMBER: _ClassVar[int]
    S_PK_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    c_pk: bytes
    s_pk: bytes
    signature: bytes
    def __init__(self, c_pk: _Optional[bytes] = ..., s_pk: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AdvertiseEntry(_message.Message):
    __slots__ = ("sender", "c_pk", "s_pk", "signature")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    C_PK_FIELD_NUMBER: _ClassVar[int]
    S_PK_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sender: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes
    def __init__(self, sender: _Optional[int] = ..., c_pk: _Optional[bytes] = ..., s_pk: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ShareDigest(_message.Message):
    __slots__ = ("holder", "s_digest", "b_digest")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    S_DIGEST_FIELD_NUMBER: _ClassVar[int]
    B_DIGEST_FIELD_NUMBER: _ClassVar[int]
    holder: int
    s_digest: bytes
    b_digest: bytes
    def __init__(self, holder: _Optional[int] = ..., s_digest: _Optional[bytes] = ..., b_digest: _Optional[bytes] = ...) -> None: ...

class Ciphertext(_message.Message):
    __slots__ = ("holder", "ciphertext")
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    holder: int
    ciphertext: bytes
    def __init__(self, holder: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareKeys(_message.Message):
    __slots__ = ("b_commitment", "share_digests", "ciphertexts", "signature")
    B_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    SHARE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    b_commitment: bytes
    share_digests: _containers.RepeatedCompositeFieldContainer[ShareDigest]
    ciphertexts: _containers.RepeatedCompositeFieldContainer[Ciphertext]
    signature: bytes
    def __init__(self, b_commitment: _Optional[bytes] = ..., share_digests: _Optional[_Iterable[_Union[ShareDigest, _Mapping]]] = ..., ciphertexts: _Optional[_Iterable[_Union[Ciphertext, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class MaskedInput(_message.Message):
    __slots__ = ("packed", "signature", "commitment")
    PACKED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    packed: bytes
    signature: bytes
    commitment: bytes
    def __init__(self, packed: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., commitment: _Optional[bytes] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("neighbour", "point")
    NEIGHBOUR_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    neighbour: int
    point: bytes
    def __init__(self, neighbour: _Optional[int] = ..., point: _Optional[bytes] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("self_claim", "pair_claims", "proof", "signature")
    SELF_CLAIM_FIELD_NUMBER: _ClassVar[int]
    PAIR_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    self_claim: bytes
    pair_claims: _containers.RepeatedCompositeFieldContainer[Claim]
    proof: bytes
    signature: bytes
    def __init__(self, self_claim: _Optional[bytes] = ..., pair_claims: _Optional[_Iterable[_Union[Claim, _Mapping]]] = ..., proof: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ConsistencySignature(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class Share(_message.Message):
    __slots__ = ("owner", "y")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    owner: int
    y: bytes
    def __init__(self, owner: _Optional[int] = ..., y: _Optional[bytes] = ...) -> None: ...

class UnmaskShares(_message.Message):
    __slots__ = ("b_shares", "s_shares")
    B_SHARES_FIELD_NUMBER: _ClassVar[int]
    S_SHARES_FIELD_NUMBER: _ClassVar[int]
    b_shares: _containers.RepeatedCompositeFieldContainer[Share]
    s_shares: _containers.RepeatedCompositeFieldContainer[Share]
    def __init__(self, b_shares: _Optional[_Iterable[_Union[Share, _Mapping]]] = ..., s_shares: _Optional[_Iterable[_Union[Share, _Mapping]]] = ...) -> None: ...

class ClientEnvelope(_message.Message):
    __slots__ = ("round", "session_id", "sender", "advertise_keys", "share_keys", "masked_input", "consistency", "unmask", "check")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEYS_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    UNMASK_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    sender: int
    advertise_keys: AdvertiseKeys
    share_keys: ShareKeys
    masked_input: MaskedInput
    consistency: ConsistencySignature
    unmask: UnmaskShares
    check: CheckResponse
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., sender: _Optional[int] = ..., advertise_keys: _Optional[_Union[AdvertiseKeys, _Mapping]] = ..., share_keys: _Optional[_Union[ShareKeys, _Mapping]] = ..., masked_input: _Optional[_Union[MaskedInput, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencySignature, _Mapping]] = ..., unmask: _Optional[_Union[UnmaskShares, _Mapping]] = ..., check: _Optional[_Union[CheckResponse, _Mapping]] = ...) -> None: ...

class SubmitAck(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class AwaitRequest(_message.Message):
    __slots__ = ("round", "session_id", "client_id", "stage")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    client_id: int
    stage: Stage
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., client_id: _Optional[int] = ..., stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("index", "siblings")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    index: int
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., siblings: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("entries", "present", "key_root", "own_proof")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    KEY_ROOT_FIELD_NUMBER: _ClassVar[int]
    OWN_PROOF_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AdvertiseEntry]
    present: bytes
    key_root: bytes
    own_proof: Proof
    def __init__(self, entries: _Optional[_Iterable[_Union[AdvertiseEntry, _Mapping]]] = ..., present: _Optional[bytes] = ..., key_root: _Optional[bytes] = ..., own_proof: _Optional[_Union[Proof, _Mapping]] = ...) -> None: ...

class ForwardedShare(_message.Message):
    __slots__ = ("owner", "ciphertext", "b_commitment", "signature", "digest", "digest_proof")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    B_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_PROOF_FIELD_NUMBER: _ClassVar[int]
    owner: int
    ciphertext: bytes
    b_commitment: bytes
    signature: bytes
    digest: ShareDigest
    digest_proof: Proof
    def __init__(self, owner: _Optional[int] = ..., ciphertext: _Optional[bytes] = ..., b_commitment: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., digest: _Optional[_Union[ShareDigest, _Mapping]] = ..., digest_proof: _Optional[_Union[Proof, _Mapping]] = ...) -> None: ...

class ShareBundle(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[ForwardedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[ForwardedShare, _Mapping]]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("seed",)
    SEED_FIELD_NUMBER: _ClassVar[int]
    seed: bytes
    def __init__(self, seed: _Optional[bytes] = ...) -> None: ...

class SurvivorList(_message.Message):
    __slots__ = ("bitmap",)
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    bitmap: bytes
    def __init__(self, bitmap: _Optional[bytes] = ...) -> None: ...

class SignatureEntry(_message.Message):
    __slots__ = ("signer", "signature")
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signer: int
    signature: bytes
    def __init__(self, signer: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SignatureBundle(_message.Message):
    __slots__ = ("signatures",)
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    signatures: _containers.RepeatedCompositeFieldContainer[SignatureEntry]
    def __init__(self, signatures: _Optional[_Iterable[_Union[SignatureEntry, _Mapping]]] = ...) -> None: ...

class RoundOutcome(_message.Message):
    __slots__ = ("completed", "reason", "included")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    completed: bool
    reason: str
    included: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, completed: bool = ..., reason: _Optional[str] = ..., included: _Optional[_Iterable[int]] = ...) -> None: ...

class ServerEnvelope(_message.Message):
    __slots__ = ("round", "session_id", "recipient", "key_list", "share_bundle", "survivor_list", "signature_bundle", "outcome", "check_request")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    KEY_LIST_FIELD_NUMBER: _ClassVar[int]
    SHARE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    SURVIVOR_LIST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CHECK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    session_id: bytes
    recipient: int
    key_list: KeyList
    share_bundle: ShareBundle
    survivor_list: SurvivorList
    signature_bundle: SignatureBundle
    outcome: RoundOutcome
    check_request: CheckRequest
    def __init__(self, round: _Optional[int] = ..., session_id: _Optional[bytes] = ..., recipient: _Optional[int] = ..., key_list: _Optional[_Union[KeyList, _Mapping]] = ..., share_bundle: _Optional[_Union[ShareBundle, _Mapping]] = ..., survivor_list: _Optional[_Union[SurvivorList, _Mapping]] = ..., signature_bundle: _Optional[_Union[SignatureBundle, _Mapping]] = ..., outcome: _Optional[_Union[RoundOutcome, _Mapping]] = ..., check_request: _Optional[_Union[CheckRequest, _Mapping]] = ...) -> None: ...
