"""``serve --engine ray``: the round's running sum and its unmasking on a Ray cluster.

The aggregator process keeps the protocol (every check, Shamir reconstruction of the seeds and
mask keys, done once, every decision); Ray does the two pieces of bulk arithmetic:

* accumulation, on ``shards`` actors, each owning the clients of one id range: a masked upload
  goes to its shard's actor as it arrives and is added into that actor's partial sum mod 2^32
  (partial sums are mergeable: any grouping gives the same total);
* unmasking, on Ray tasks, each owning one coordinate range ``[lo, hi)``: it adds that slice of
  every partial sum and the mask PRG streams of the rebuilt keys (``secagg.prg.apply_masks``
  seeks to ``lo``), and reduces mod 2^b.

Failures: an unmasking task is a pure function of its arguments, so Ray's task retries
(``max_retries``) recover a worker that died under it. A shard actor is not restarted (its
partial sum is not durable): if one is lost, or its record of whom it summed disagrees with the
aggregator's, ``unmask`` raises :class:`secagg.accumulate.AccumulatorLost` and the round aborts
without publishing anything, never a sum missing a shard.

Trust: Ray workers see what the aggregator sees (masked uploads, the rebuilt keys that unmask
only the sum), so the Ray cluster belongs to the aggregator operator's trust domain; run it on
the operator's own machines, on a private network (Ray's own transport is not authenticated
unless Ray's TLS is configured).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.accumulate import AccumulatorLost
from secagg.prg import apply_masks

__all__ = ["RayAccumulator", "RayEngine", "ShardStats"]

U32 = npt.NDArray[np.uint32]
_PENDING = 8  # uploads in flight to the shards before the aggregator waits for them


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError("--engine ray needs Ray: pip install 'secagg-dplora[ray]'") from exc
    return ray


class _SumShard:
    """One shard's partial sum (a Ray actor): the uploads of one client range."""

    def __init__(self, dim: int) -> None:
        self.acc: U32 = np.zeros(dim, dtype=np.uint32)
        self.senders: set[int] = set()
        self.seconds = 0.0

    def add(self, sender: int, y: U32) -> None:
        t0 = time.perf_counter()
        np.add(self.acc, y, out=self.acc)
        self.senders.add(sender)
        self.seconds += time.perf_counter() - t0

    def subtract(self, sender: int, y: U32) -> None:
        t0 = time.perf_counter()
        np.subtract(self.acc, y, out=self.acc)
        self.senders.discard(sender)
        self.seconds += time.perf_counter() - t0

    def summary(self) -> tuple[list[int], float, int]:
        return sorted(self.senders), self.seconds, os.getpid()

    def slice(self, lo: int, hi: int) -> U32:
        return self.acc[lo:hi].copy()


def _unmask_range(
    lo: int,
    hi: int,
    plus: Sequence[bytes],
    minus: Sequence[bytes],
    mask: int,
    kill_once: str | None,
    *partials: U32,
) -> tuple[U32, float, int]:
    """Coordinates ``[lo, hi)`` of the unmasked sum (a Ray task; pure, so safe to retry)."""
    if kill_once is not None and lo == 0 and not os.path.exists(kill_once):
        with open(kill_once, "w") as fh:  # fault injection (tests): this worker dies once
            fh.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.perf_counter()
    out = np.zeros(hi - lo, dtype=np.uint32)
    for p in partials:
        np.add(out, p, out=out)
    apply_masks(out, plus, minus, start=lo)
    np.bitwise_and(out, np.uint32(mask), out=out)
    return out, time.perf_counter() - t0, os.getpid()


@dataclass
class ShardStats:
    """Where the work went: seconds per accumulation shard and per unmasking task."""

    add_seconds: list[float] = field(default_factory=list)
    unmask_seconds: list[float] = field(default_factory=list)
    unmask_wall: float = 0.0
    workers: set[int] = field(default_factory=set)


class RayEngine:
    """A connection to a Ray cluster (``address``; None starts a local one) and how to shard:
    ``shards`` accumulation actors, unmasking in tasks of ``chunk`` coordinates."""

    def __init__(
        self,
        address: str | None = None,
        *,
        shards: int = 2,
        chunk: int = 1 << 18,
        task_retries: int = 3,
        init: bool = True,
    ) -> None:
        if shards < 1 or chunk < 1:
            raise ValueError("shards and chunk must be positive")
        self.ray = _ray()
        if init and not self.ray.is_initialized():
            self.ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self.shards = shards
        self.chunk = chunk
        self.task_retries = task_retries
        self._actor_cls = self.ray.remote(num_cpus=0, max_restarts=0)(_SumShard)
        self._task = self.ray.remote(num_cpus=1, max_retries=task_retries)(_unmask_range)

    def accumulator(self, dim: int, n: int, *, kill_once: str | None = None) -> RayAccumulator:
        """A fresh sharded sum for one round of ``n`` clients (ids 1..n) and ``dim`` words."""
        return RayAccumulator(self, dim, n, kill_once=kill_once)


class RayAccumulator:
    """:class:`secagg.accumulate.Accumulator` on Ray (see the module docstring)."""

    def __init__(
        self, engine: RayEngine, dim: int, n: int, *, kill_once: str | None = None
    ) -> None:
        self.engine = engine
        self.ray = engine.ray
        self.dim = dim
        self.n = max(1, n)
        self.kill_once = kill_once
        self.actors = [
            engine._actor_cls.options(scheduling_strategy="SPREAD").remote(dim)
            for _ in range(engine.shards)
        ]
        self._expected: list[set[int]] = [set() for _ in self.actors]
        self._pending: list[Any] = []
        self._lost: str | None = None
        self.stats = ShardStats()

    def shard_of(self, sender: int) -> int:
        """The shard of ``sender``'s id range."""
        return min(len(self.actors) - 1, max(0, (sender - 1) * len(self.actors) // self.n))

    def _send(self, method: str, sender: int, y: U32) -> None:
        if self._lost is not None:
            return
        s = self.shard_of(sender)
        ref = getattr(self.actors[s], method).remote(sender, y)
        if method == "add":
            self._expected[s].add(sender)
        else:
            self._expected[s].discard(sender)
        self._pending.append(ref)
        if len(self._pending) > _PENDING:  # bounded: never all uploads in flight at once
            done, self._pending = self.ray.wait(
                self._pending, num_returns=len(self._pending) - _PENDING // 2
            )
            self._check(done)

    def _check(self, refs: list[Any]) -> None:
        try:
            self.ray.get(refs)
        except self.ray.exceptions.RayError as exc:
            self._lost = f"an accumulation shard failed: {type(exc).__name__}"

    def add(self, sender: int, y: U32) -> None:
        self._send("add", sender, y)

    def subtract(self, sender: int, y: U32) -> None:
        self._send("subtract", sender, y)

    def unmask(self, plus: Sequence[bytes], minus: Sequence[bytes], mask: int) -> U32:
        ray = self.ray
        self._check(self._pending)
        self._pending = []
        if self._lost is None:
            try:
                summaries = ray.get([a.summary.remote() for a in self.actors])
            except ray.exceptions.RayError as exc:
                self._lost = f"an accumulation shard is gone: {type(exc).__name__}"
            else:
                for s, (senders, secs, pid) in enumerate(summaries):
                    self.stats.add_seconds.append(secs)
                    self.stats.workers.add(pid)
                    if set(senders) != self._expected[s]:
                        self._lost = f"shard {s} summed other uploads than were sent to it"
        if self._lost is not None:
            self.discard()
            raise AccumulatorLost(f"{self._lost}: nothing is published")
        t0 = time.perf_counter()
        step = self.engine.chunk
        ranges = [(lo, min(self.dim, lo + step)) for lo in range(0, self.dim, step)]
        refs = [
            self.engine._task.options(scheduling_strategy="SPREAD").remote(
                lo,
                hi,
                list(plus),
                list(minus),
                mask,
                self.kill_once,
                *[a.slice.remote(lo, hi) for a in self.actors],
            )
            for lo, hi in ranges
        ]
        out = np.empty(self.dim, dtype=np.uint32)
        try:
            for (lo, hi), ref in zip(ranges, refs, strict=True):
                part, secs, pid = ray.get(ref)
                out[lo:hi] = part
                self.stats.unmask_seconds.append(secs)
                self.stats.workers.add(pid)
        except ray.exceptions.RayError as exc:
            self.discard()
            raise AccumulatorLost(
                f"unmasking failed on the cluster ({type(exc).__name__}): nothing is published"
            ) from None
        self.stats.unmask_wall = time.perf_counter() - t0
        self.discard()
        return out

    def discard(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a)
        self.actors = []
