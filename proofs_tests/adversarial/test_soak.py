"""Soak: many in-memory rounds with random drops at random stages and one malicious client per
round tampering with one of its messages at a random stage (threats.md FI-01, IV-07, SA-08,
SA-12, SA-17). Every round either completes with the exact clipped sum of the clients it
includes (within ``error_bound``) and without the tamperer if the tamper was detectable, or
raises a typed :class:`~secagg.ProtocolAbort`. Nothing else: no other exception, no wrong sum.

Bounded by wall clock (``SOAK_SECONDS``) and a round count, so it stays CI-sized.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time

import numpy as np
import numpy.typing as npt

from secagg import ProtocolAbort, RoundConfig, Stage, simulate
from secagg.messages import ClientMessage

# CI-sized by default; `make soak` runs it for minutes (SECAGG_SOAK_SECONDS, SECAGG_SOAK_ROUNDS).
SOAK_SECONDS = float(os.environ.get("SECAGG_SOAK_SECONDS", "20"))
MAX_ROUNDS = int(os.environ.get("SECAGG_SOAK_ROUNDS", "400"))
CONFIGS = [
    RoundConfig(n=6, t=4, d=8),  # complete graph, default policy floor
    RoundConfig(n=8, t=5, d=8),
    RoundConfig(n=12, t=3, d=8, k=4),  # SecAgg+ ring
]


def _tamper(msg: ClientMessage, rng: random.Random) -> ClientMessage:
    """Change one field of ``msg``: flip a bit of a bytes field or a vector element, or drop,
    duplicate or reorder an element of a tuple field."""
    fields = [f.name for f in dataclasses.fields(msg) if f.name != "sender"]  # type: ignore[arg-type]
    name = rng.choice(fields)
    value = getattr(msg, name)
    if isinstance(value, bytes):
        raw = bytearray(value)
        if raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        new: object = bytes(raw)
    elif isinstance(value, np.ndarray):
        arr = value.copy()
        arr[rng.randrange(arr.size)] ^= np.uint32(1 << rng.randrange(32))
        new = arr
    elif isinstance(value, tuple) and value:
        op = rng.choice(["drop", "dup", "reverse"])
        new = value[:-1] if op == "drop" else value + value[-1:] if op == "dup" else value[::-1]
    else:
        new = value
    return dataclasses.replace(msg, **{name: new})  # type: ignore[type-var]


def _expected(
    cfg: RoundConfig, inputs: list[npt.NDArray[np.float64]], ids: frozenset[int]
) -> npt.NDArray[np.float64]:
    out = np.zeros(cfg.d)
    for u in ids:
        out += cfg.encoding.clipped(inputs[u - 1])
    return out


def test_soak_random_drops_and_tamper() -> None:
    rng = random.Random(20240808)  # test schedule, not a protocol secret
    stages = list(Stage)
    start = time.monotonic()
    outcomes = {"completed": 0, "aborted": 0}
    rounds = 0
    while rounds < MAX_ROUNDS and time.monotonic() - start < SOAK_SECONDS:
        rounds += 1
        cfg = rng.choice(CONFIGS)
        gen = np.random.default_rng(rounds)
        inputs = [gen.uniform(-1.5, 1.5, cfg.d) for _ in range(cfg.n)]
        ids = list(range(1, cfg.n + 1))
        drops: dict[Stage, list[int]] = {}
        for u in rng.sample(ids, rng.randrange(0, cfg.n // 3 + 1)):
            drops.setdefault(rng.choice(stages), []).append(u)
        villain = rng.choice(ids) if rng.random() < 0.8 else None
        villain_stage = rng.choice(stages)
        tampered: list[int] = []

        def client_tamper(
            stage: Stage,
            sender: int,
            msg: ClientMessage,
            villain: int | None = villain,
            villain_stage: Stage = villain_stage,
            tampered: list[int] = tampered,
        ) -> ClientMessage | None:
            if sender != villain or stage is not villain_stage:
                return msg
            changed = _tamper(msg, rng)
            if changed != msg:
                tampered.append(sender)
            return changed

        try:
            res = simulate(cfg, inputs, drops=drops, client_tamper=client_tamper, seed=rounds)
        except ProtocolAbort:
            outcomes["aborted"] += 1
            continue
        outcomes["completed"] += 1
        worst = float(np.max(np.abs(res.aggregate - _expected(cfg, inputs, res.included))))
        assert worst <= res.error_bound + 1e-9, (rounds, cfg, drops, villain, worst)
        dropped_before_masking = {
            u
            for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT)
            for u in drops.get(s, [])
        }
        assert not res.included & dropped_before_masking, (rounds, res.included, drops)
    print(f"soak: {rounds} rounds in {time.monotonic() - start:.0f} s: {outcomes}")
    assert rounds >= 30, f"only {rounds} rounds in {SOAK_SECONDS} s"
    assert outcomes["completed"] > 0 and outcomes["aborted"] > 0, outcomes
