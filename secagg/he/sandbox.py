"""Parse untrusted ciphertext and context bytes in worker processes (docs/threats.md HE-05).

SEAL and TenSEAL are C++: a crafted or truncated serialization has crashed them before (TenSEAL
#174). :class:`SafeDeserializer` runs every parse and addition of untrusted bytes in a pool of
``spawn``-ed processes. The parent keeps the running sums as bytes and hands each job a sum and
a chunk; the worker returns the new sum, re-serialized by SEAL. So the parent never parses a
ciphertext, a worker holds no state worth losing, and a worker that dies (a signal, an exit, a
hang past ``timeout``) costs one rejected input: the pool is rebuilt and
:class:`DeserializerCrashed` raised.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from secagg.he._errors import DeserializerCrashed, InvalidCiphertext, WeakParameters
from secagg.he._ops import ChunkSpec, ContextKind, worker_accumulate, worker_check_context
from secagg.he.params import HeParams

__all__ = ["SafeDeserializer"]

_ERRORS: dict[str, type[InvalidCiphertext] | type[WeakParameters]] = {
    "InvalidCiphertext": InvalidCiphertext,
    "WeakParameters": WeakParameters,
}


class SafeDeserializer:
    """A crash-proof :class:`secagg.he.HeBackend`: ``workers`` processes started with
    ``start_method`` ('spawn' or 'forkserver', never 'fork': the parent may run gRPC threads).

    ``timeout`` (seconds, ``None`` for none) bounds one job. ``crash_marker`` is a test-only
    hook: a worker given an input that contains it dies with SIGSEGV, as a native crash would.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        timeout: float | None = None,
        start_method: str = "spawn",
        crash_marker: bytes | None = None,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver'")
        if workers < 1:
            raise ValueError("workers must be positive")
        self.workers = workers
        self.timeout = timeout
        self.crashes = 0
        self._ctx = multiprocessing.get_context(start_method)
        self._marker = crash_marker
        self._pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> SafeDeserializer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def start(self) -> None:
        """Start the workers now (they take a second to import TenSEAL)."""
        pool = self._get_pool()
        for f in [pool.submit(int, 0) for _ in range(self.workers)]:
            f.result()

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx)
        return self._pool

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # A hung worker never returns: kill every worker of the broken pool, then let it go.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
        pool = self._get_pool()
        futures = [pool.submit(fn, *args, self._marker) for args in jobs]
        try:
            results = [f.result(timeout=self.timeout) for f in futures]
        except BrokenProcessPool:
            self.crashes += 1
            self._discard_pool()
            raise DeserializerCrashed(
                "the HE library died parsing this input; it is rejected and the worker "
                "restarted (docs/threats.md HE-05)"
            ) from None
        except cf.TimeoutError:
            self.crashes += 1
            self._discard_pool()
            raise DeserializerCrashed(
                f"parsing this input took longer than {self.timeout} s; it is rejected and the "
                "worker restarted (docs/threats.md HE-05)"
            ) from None
        out: list[Any] = []
        for res in results:
            if res[0] != "ok":
                raise _ERRORS.get(res[1], InvalidCiphertext)(res[2])
            out.append(res[1])
        return out

    def check_context(self, data: bytes, params: HeParams, kind: ContextKind) -> None:
        """Parse a context in a worker and apply :func:`secagg.he._ops.load_context`'s checks."""
        self._run(worker_check_context, [(bytes(data), params, kind)])

    def accumulate(
        self, spec: ChunkSpec, sums: Sequence[bytes | None], chunks: Sequence[bytes]
    ) -> list[bytes]:
        """``[sum_i + chunk_i]`` serialized, computed in the workers (a ``None`` sum gives the
        chunk's canonical re-serialization). All or nothing: any bad chunk raises."""
        if len(sums) != len(chunks):
            raise ValueError("one running sum per chunk")
        pairs = list(zip(sums, chunks, strict=True))
        step = -(-len(pairs) // self.workers) if pairs else 1
        jobs = [(spec, pairs[i : i + step]) for i in range(0, len(pairs), step)]
        out: list[bytes] = []
        for part in self._run(worker_accumulate, jobs):
            out.extend(part)
        return out
