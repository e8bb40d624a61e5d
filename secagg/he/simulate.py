"""An in-memory HE round (key holder, clients, aggregator joined by function calls), the
counterpart of :func:`secagg.simulate`; :func:`simulate_round` picks the variant from the type
of the config, so an app switches between pairwise masking and HE with that one setting.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg._crypto import ed25519_public
from secagg._errors import ConfigError, EncodingError
from secagg._rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.config import RoundConfig
from secagg.he._ops import HeBackend
from secagg.he.accumulator import HeAccumulator
from secagg.he.client import HeClient
from secagg.he.config import HeRoundConfig
from secagg.he.keyholder import HeKeyHolder
from secagg.oneshot import OneShotConfig, OneShotSimulationResult, simulate_oneshot
from secagg.simulate import SimulationResult, simulate

__all__ = ["HeSimulationResult", "simulate_he", "simulate_round"]

Drops = Collection[int] | Mapping[Any, Collection[int]]


@dataclass(frozen=True)
class HeSimulationResult:
    """What one simulated HE round produced (the fields of :class:`secagg.SimulationResult`
    that apply, plus the count and the context sizes).

    ``aggregate`` is the released float64 sum of the included clients' clipped inputs, within
    ``error_bound`` per coordinate; ``upload_bytes`` the median ciphertext bytes per client.
    """

    aggregate: npt.NDArray[np.float64] = field(compare=False)
    int_sum: npt.NDArray[np.int64] = field(compare=False)
    included: frozenset[int]
    error_bound: float
    upload_bytes: int
    timings: Mapping[str, float]
    config: HeRoundConfig
    count: int
    public_context_bytes: int
    parameters_context_bytes: int
    rejected: Mapping[int, str]


def _dropped(drops: Drops | None) -> set[int]:
    if drops is None:
        return set()
    if isinstance(drops, Mapping):
        return {int(u) for ids in drops.values() for u in ids}
    return {int(u) for u in drops}


def simulate_he(
    config: HeRoundConfig,
    inputs: Sequence[npt.ArrayLike],
    drops: Drops | None = None,
    *,
    min_cohort: int = 3,
    seed: int | None = None,
    backend: HeBackend | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> HeSimulationResult:
    """Run one HE round in memory. ``inputs[i]`` is client ``i + 1``'s vector; ``drops`` lists
    clients that never upload (or maps stages to such lists, as :func:`secagg.simulate` takes).
    ``seed`` makes rounding coins and flooding reproducible (tests only; SEAL's encryption
    randomness is its own). ``backend`` parses the uploads (default: in process).
    """
    n = config.n
    if len(inputs) != n:
        raise ConfigError(f"{len(inputs)} inputs for n={n} clients")
    root: RandomSource = SystemRandom() if seed is None else DeterministicRandom(f"he/{seed}")
    test = seed is not None
    if config.session_id is None:
        config = config.with_session(root.bytes(16))
    gone = _dropped(drops)
    identities = {
        u: Ed25519PrivateKey.from_private_bytes(
            (root if not test else DeterministicRandom(f"he/{seed}/identity/{u}")).bytes(32)
        )
        for u in range(1, n + 1)
    }
    registry = {u: ed25519_public(k) for u, k in identities.items()}
    t_start = clock()
    holder = HeKeyHolder(
        registry,
        min_cohort=min_cohort,
        rng=root if not test else DeterministicRandom(f"he/{seed}/keyholder"),
        allow_deterministic_rng=test,
    )
    t0 = clock()
    keys = holder.open_round(config)
    t_keygen = clock() - t0
    acc = HeAccumulator(config, keys.parameters_context, registry, backend=backend)
    enc_times: list[float] = []
    add_times: list[float] = []
    sizes: list[int] = []
    for u in range(1, n + 1):
        x = np.asarray(inputs[u - 1])
        if x.shape != (config.d,):
            raise EncodingError(f"input of client {u} has shape {x.shape}, expected ({config.d},)")
        if u in gone:
            continue
        rng = root if not test else DeterministicRandom(f"he/{seed}/client/{u}")
        t0 = clock()
        client = HeClient(
            config,
            keys.public_context,
            keys.tag_key,
            u,
            identities[u],
            rng=rng,
            allow_deterministic_rng=test,
        )
        upload = client.encrypt(x)
        enc_times.append(clock() - t0)
        sizes.append(upload.nbytes)
        t0 = clock()
        acc.add(u, upload)
        add_times.append(clock() - t0)
    t0 = clock()
    message = acc.close()
    release = holder.release(message)
    t_decrypt = clock() - t0

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    timings = {
        "keygen_s": t_keygen,
        "client_encrypt_median_s": med(enc_times),
        "server_add_median_s": med(add_times),
        "server_add_total_s": sum(add_times),
        "keyholder_release_s": t_decrypt,
        "total_s": clock() - t_start,
    }
    return HeSimulationResult(
        aggregate=release.aggregate,
        int_sum=release.int_sum,
        included=frozenset(acc.included),
        error_bound=release.error_bound,
        upload_bytes=int(statistics.median(sizes)) if sizes else 0,
        timings=timings,
        config=config,
        count=release.count,
        public_context_bytes=len(keys.public_context),
        parameters_context_bytes=len(keys.parameters_context),
        rejected=dict(acc.rejected),
    )


def simulate_round(
    config: RoundConfig | HeRoundConfig | OneShotConfig,
    inputs: Sequence[npt.ArrayLike],
    drops: Mapping[Any, Collection[int]] | None = None,
    *,
    seed: int | None = None,
) -> SimulationResult | HeSimulationResult | OneShotSimulationResult:
    """One round of whichever variant ``config`` selects: :class:`secagg.RoundConfig` runs
    pairwise masking (:func:`secagg.simulate`), :class:`HeRoundConfig` the HE variant,
    :class:`secagg.oneshot.OneShotConfig` the one-shot variant (the clients in ``drops``, at
    any stage, never upload)."""
    if isinstance(config, HeRoundConfig):
        return simulate_he(config, inputs, drops, seed=seed)
    if isinstance(config, OneShotConfig):
        return simulate_oneshot(config, inputs, _dropped(drops), seed=seed)
    return simulate(config, inputs, cast(Any, drops), seed=seed)
