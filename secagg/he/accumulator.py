"""The aggregator of an HE round: add each upload as it arrives into one running sum per chunk.

Security: it holds a parameters-only context (no public, secret, Galois or relinearisation key),
so it can parse and add ciphertexts and do nothing else: it cannot decrypt, and cannot even
encrypt (threats.md HE-01). Memory is bounded by the running sums (one ciphertext per chunk)
plus the upload being added. An upload is added whole or not at all, so a client that fails
half-way leaves no trace in the sum; dropouts cost nothing (the sum is over whoever arrived,
and the count field says how many did).
"""

from __future__ import annotations

from collections.abc import Sequence

from secagg._errors import ConfigError
from secagg.he._errors import HeError, InvalidCiphertext
from secagg.he._ops import ChunkSpec, ContextKind, HeBackend, InProcessBackend
from secagg.he.config import HeRoundConfig
from secagg.he.messages import HeSumMessage

__all__ = ["HeAccumulator"]


class HeAccumulator:
    """Streaming sum of one round's uploads; ``backend`` parses the bytes (in process by
    default; pass a :class:`secagg.he.SafeDeserializer` when the bytes come off the network)."""

    def __init__(
        self,
        config: HeRoundConfig,
        parameters_context: bytes,
        *,
        backend: HeBackend | None = None,
    ) -> None:
        if config.session_id is None:
            raise ConfigError("the config has no session_id yet")
        self.config = config
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

    def add(self, sender: int, chunks: Sequence[bytes]) -> None:
        """Add ``sender``'s whole upload, or raise and change nothing.

        A sender whose upload is malformed is excluded from the round (it is in ``rejected``);
        a second upload from an included sender is refused.
        """
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
            sums: Sequence[bytes | None] = self._sums or [None] * self.expected_chunks
            new = self.backend.accumulate(self.spec, sums, chunks)
        except InvalidCiphertext as exc:
            self.rejected[sender] = str(exc)
            raise
        self._sums = new
        self.included.add(sender)

    def close(self) -> HeSumMessage:
        """End the round: the one message the key holder will decrypt."""
        if self._sums is None:
            raise HeError("no contribution arrived")
        self.closed = True
        cfg = self.config
        assert cfg.session_id is not None
        return HeSumMessage(
            cfg.session_id, cfg.round, tuple(self._sums), tuple(sorted(self.included))
        )
