"""Issue 4: federated rounds of the tiny model through secure aggregation and distributed DP.

Four clients train DP-LoRA on their own non-IID slices, encode their deltas with
:func:`dp.encode` (user-level discrete Gaussian shares), and the ring vectors are summed by the
SecAgg state machines, driven by hand as in :mod:`proofs_tests.support`; one client drops after
ShareKeys in round 2. The server decodes the sum, applies the mean, and the held-out loss falls
over three rounds. Every random source is seeded (test mode)."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from client.training import (
    adapter_to_vector,
    apply_mean_update,
    attach_lora,
    evaluate_loss,
    held_out_corpus,
    load_base_model,
    local_text_corpus,
    tokenize_blocks,
    train_dp,
    vector_to_adapter,
)
from dp import DistributedDPConfig, SeededRandom, decode, encode
from proofs_tests.support import make_round, run_honest
from secagg import RoundConfig, Stage

N_CLIENTS, ROUNDS, BLOCK = 4, 3, 32
# SecAgg's threshold counts a client's *other* neighbours (3 of them here), so with 4 clients a
# drop needs t = 2 (the policy floor for k = 3); the DP noise still needs >= 3 survivors, which
# decode enforces.
SECAGG_T, MIN_SURVIVORS = 2, 3


@lru_cache(maxsize=N_CLIENTS)
def _blocks(i: int) -> torch.Tensor:
    _, tok = load_base_model("tiny")
    return tokenize_blocks(local_text_corpus(i, N_CLIENTS), tok, BLOCK, max_blocks=64)


def _held_out() -> torch.Tensor:
    _, tok = load_base_model("tiny")
    return tokenize_blocks(held_out_corpus(), tok, BLOCK, max_blocks=48)


def _client() -> nn.Module:
    model, _ = load_base_model("tiny")
    return attach_lora(model, "ffa")


def _secure_sum(
    ring: dict[int, npt.NDArray[np.uint32]], d: int, bits: int, rnd: int, drop: list[int]
) -> tuple[npt.NDArray[np.uint32], frozenset[int]]:
    config = RoundConfig(n=N_CLIENTS, t=SECAGG_T, d=d, bits=bits, round=rnd)
    r = make_round(config, seed=rnd)
    r.inputs = ring
    server = run_honest(r, {Stage.MASKED_INPUT: drop} if drop else None)
    result = server.result
    return result.ring_sum, result.included


def test_three_rounds_through_secagg_and_distributed_dp_lower_the_held_out_loss() -> None:
    global_model = _client()
    clients = [_client() for _ in range(N_CLIENTS)]
    held = _held_out()
    spec = adapter_to_vector(global_model)[1]
    dp_cfg = DistributedDPConfig.calibrated(
        l2_clip=0.5,
        noise_multiplier=0.02,
        dim=spec.size,
        num_clients=N_CLIENTS,
        min_survivors=MIN_SURVIVORS,
        allow_seeded_rng=True,
    )
    losses = [evaluate_loss(global_model, held)]
    for rnd in range(ROUNDS):
        global_vec, spec = adapter_to_vector(global_model)
        round_seed = bytes([rnd]) * 32  # the round's public rotation seed
        ring: dict[int, npt.NDArray[np.uint32]] = {}
        for c, model in enumerate(clients):
            vector_to_adapter(model, global_vec, spec)
            result = train_dp(
                model,
                _blocks(c),
                steps=6,
                batch_size=16,
                lr=2.0,
                clip=0.05,
                noise_multiplier=0.3,
                seed=100 * rnd + c,
            )
            assert result.spec == spec
            ring[c + 1] = encode(
                result.delta_vector, dp_cfg, round_seed, SeededRandom(f"enc/{rnd}/{c}")
            )
        drop = [2] if rnd == 1 else []
        ring_sum, included = _secure_sum(ring, dp_cfg.encoded_dim, dp_cfg.bits, rnd, drop)
        assert included == frozenset(range(1, N_CLIENTS + 1)) - set(drop)
        dec = decode(ring_sum, dp_cfg, round_seed, len(included))
        new = apply_mean_update(global_model, spec, dec.mean)
        assert np.array_equal(new, adapter_to_vector(global_model)[0])
        losses.append(evaluate_loss(global_model, held))
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
