"""Where the server's running sum lives: in this process (the default) or on an engine that
shards it (the aggregator's Ray engine, :mod:`aggregator.ray_engine`).

:class:`SecAggServer` never holds the uploads as a list: each masked upload is handed to the
accumulator as it arrives (``add``), an upload excluded by the contribution check is taken out
again (``subtract``), and when the UNMASK stage closes the accumulator returns the unmasked sum
given the mask keys the server rebuilt (``unmask``): ``sum - sum PRG(minus) + sum PRG(plus)``,
reduced mod 2^b. Shamir reconstruction, every commitment check and every decision stay in the
state machine; an accumulator only adds vectors and expands mask keys.

An accumulator that can lose state (a worker machine gone) must raise
:class:`AccumulatorLost` from ``unmask`` rather than return a sum it cannot vouch for: the
round then aborts and publishes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from secagg._errors import ProtocolAbort
from secagg.prg import apply_masks

__all__ = ["Accumulator", "AccumulatorLost", "LocalAccumulator"]

U32 = npt.NDArray[np.uint32]


class AccumulatorLost(ProtocolAbort):
    """Part of the running sum was lost (an engine's worker or shard failed): the round aborts."""


class Accumulator(Protocol):
    """A running sum of ``upload_dim`` uint32 words mod 2^32 (reduced mod 2^b at the end)."""

    def add(self, sender: int, y: U32) -> None:
        """Add ``sender``'s masked upload (once per sender)."""

    def subtract(self, sender: int, y: U32) -> None:
        """Take ``sender``'s upload, added before, out again."""

    def unmask(self, plus: Sequence[bytes], minus: Sequence[bytes], mask: int) -> U32:
        """``(sum + sum PRG(plus) - sum PRG(minus)) & mask``; raises :class:`AccumulatorLost`
        if the sum is incomplete."""

    def discard(self) -> None:
        """The round aborted: free the sum."""


class LocalAccumulator:
    """The in-process sum: one uint32 vector, updated in place."""

    def __init__(self, dim: int) -> None:
        self._acc: U32 = np.zeros(dim, dtype=np.uint32)

    def add(self, sender: int, y: U32) -> None:
        np.add(self._acc, y, out=self._acc)

    def subtract(self, sender: int, y: U32) -> None:
        np.subtract(self._acc, y, out=self._acc)

    def unmask(self, plus: Sequence[bytes], minus: Sequence[bytes], mask: int) -> U32:
        acc = self._acc
        apply_masks(acc, plus, minus)
        np.bitwise_and(acc, np.uint32(mask), out=acc)
        return acc

    def discard(self) -> None:
        self._acc = np.zeros(0, dtype=np.uint32)
