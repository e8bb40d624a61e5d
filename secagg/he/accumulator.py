"""The aggregator of an HE round: add each upload as it arrives into one running sum per chunk.

Security: it holds a parameters-only context (no public, secret, Galois or relinearisation key),
so it can parse and add ciphertexts and do nothing else: it cannot decrypt (docs/threats.md HE-01),
and it cannot open the clients' sealed tags, so it cannot make the key holder accept a sum that
holds an honest upload other than once. It checks each upload's signature against the registry.
Memory is bounded by the running sums (one ciphertext per chunk) plus the upload being added.
An upload is added whole or not at all, so a client that fails half-way leaves no trace in the
sum; dropouts cost nothing (the sum is over whoever arrived, and the count field says how many
did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secagg._crypto import ed25519_verify
from secagg._errors import ConfigError, InvalidSignature
from secagg.he._errors import HeError, InvalidCiphertext, InvalidUpload
from secagg.he._ops import ChunkSpec, ContextKind, HeBackend, InProcessBackend
from secagg.he.config import HeRoundConfig
from secagg.he.messages import HeContribution, HeSumMessage, HeUpload
from secagg.he.tags import LABEL_HE_UPLOAD, SEALED_TAG_BYTES, upload_payload

__all__ = ["HeAccumulator"]


class HeAccumulator:
    """Streaming sum of one round's uploads; ``backend`` parses the bytes (in process by
    default; pass a :class:`secagg.he.SafeDeserializer` when the bytes come off the network)."""

    def __init__(
        self,
        config: HeRoundConfig,
        parameters_context: bytes,
        registry: Mapping[int, bytes],
        *,
        backend: HeBackend | None = None,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        self.config = config
        self.registry = dict(registry)
        self.contributions: dict[int, HeContribution] = {}
        self.backend: HeBackend = backend if backend is not None else InProcessBackend()
        params = config.he_params
        self.backend.check_context(parameters_context, params, ContextKind.PARAMETERS)
        self.spec = ChunkSpec(params, bytes(parameters_context))
        self.chunk_bounds = params.chunk_bounds()
        self.included: set[int] = set()
        self.rejected: dict[int, str] = {}
        self.closed = False
        self._sums: list[bytes] | None = None

    @property
    def expected_chunks(self) -> int:
        return self.config.layout.chunks

    def check_chunk(self, index: int, data: bytes) -> None:
        """O(1) checks a transport runs as each chunk arrives, before buffering it."""
        if not 0 <= index < self.expected_chunks:
            raise InvalidCiphertext(f"chunk index {index} outside [0, {self.expected_chunks})")
        lo, hi = self.chunk_bounds
        if not lo <= len(data) <= hi:
            raise InvalidCiphertext(f"chunk {index} has {len(data)} bytes, outside [{lo}, {hi}]")

    def add(self, sender: int, upload: HeUpload) -> None:
        """Add ``sender``'s whole upload, or raise and change nothing.

        A sender whose upload is malformed or not signed by its registered identity is excluded
        from the round (it is in ``rejected``); a second upload from an included sender is
        refused. The signature is checked here so that one bad upload cannot make the key holder
        refuse the whole sum.
        """
        chunks = upload.chunks
        if self.closed:
            raise HeError("the round's sum is closed")
        if sender in self.included:
            raise HeError(f"client {sender} already contributed to this round")
        if sender in self.rejected:
            raise HeError(f"client {sender} is excluded: {self.rejected[sender]}")
        try:
            if len(chunks) != self.expected_chunks:
                raise InvalidCiphertext(
                    f"{len(chunks)} chunks, the round expects {self.expected_chunks}"
                )
            for i, c in enumerate(chunks):
                self.check_chunk(i, c)
            self._check_signature(sender, upload)
            sums: Sequence[bytes | None] = self._sums or [None] * self.expected_chunks
            new = self.backend.accumulate(self.spec, sums, chunks)
        except InvalidCiphertext as exc:
            self.rejected[sender] = str(exc)
            raise
        self._sums = new
        self.included.add(sender)
        self.contributions[sender] = upload.contribution()

    def _check_signature(self, sender: int, upload: HeUpload) -> None:
        cfg = self.config
        if upload.client_id != sender or sender not in self.registry:
            raise InvalidUpload(f"an upload from {sender} must be signed by registered {sender}")
        if len(upload.sealed_tag) != SEALED_TAG_BYTES:
            raise InvalidUpload(f"a sealed tag has {SEALED_TAG_BYTES} bytes")
        payload = upload_payload(sender, upload.sealed_tag, upload.digest)
        try:
            ed25519_verify(
                self.registry[sender],
                upload.signature,
                LABEL_HE_UPLOAD,
                cfg.digest,
                payload,
                who=sender,
            )
        except InvalidSignature as exc:
            raise InvalidUpload(str(exc)) from None

    def close(self) -> HeSumMessage:
        """End the round: the one message the key holder will decrypt."""
        if self._sums is None:
            raise HeError("no contribution arrived")
        self.closed = True
        cfg = self.config
        assert cfg.session_id is not None
        ids = tuple(sorted(self.included))
        return HeSumMessage(
            cfg.session_id,
            cfg.round,
            tuple(self._sums),
            ids,
            tuple(self.contributions[u] for u in ids),
        )
