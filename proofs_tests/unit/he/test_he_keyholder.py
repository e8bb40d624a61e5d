"""The key holder decrypts a round's final sum once, for a round it issued keys for, and only a
sum of at least ``min_cohort`` contributions (threats.md HE-02, HE-03)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from proofs_tests.he_helpers import REGISTRY, he_upload
from secagg import ConfigError, DeterministicRandom
from secagg.he import (
    DecryptionRefused,
    ForgedSum,
    HeAccumulator,
    HeError,
    HeKeyHolder,
    HeRoundConfig,
    HeRoundKeys,
    HeSumMessage,
    HeUpload,
    InvalidCiphertext,
)

SESSION = bytes(range(16))


def _setup(n: int = 4, params: str = "bfv-4096", min_cohort: int = 3):  # type: ignore[no-untyped-def]
    cfg = HeRoundConfig(n=n, d=3000, params=params, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY, min_cohort=min_cohort)
    keys = holder.open_round(cfg)
    return cfg, holder, keys


def _upload(cfg: HeRoundConfig, keys: HeRoundKeys, u: int) -> HeUpload:
    return he_upload(cfg, keys, u, np.full(cfg.d, 0.1 * u))


def _sum(cfg: HeRoundConfig, keys: HeRoundKeys, ids: list[int]) -> HeSumMessage:
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    for u in ids:
        acc.add(u, _upload(cfg, keys, u))
    return acc.close()


def test_releases_once_then_refuses() -> None:
    cfg, holder, keys = _setup()
    msg = _sum(cfg, keys, [1, 2, 3])
    rel = holder.release(msg)
    assert rel.count == 3
    assert np.allclose(rel.aggregate, 0.6, atol=rel.error_bound)
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        holder.release(msg)


def test_refuses_a_single_contribution_even_if_the_aggregator_claims_more() -> None:
    cfg, holder, keys = _setup()
    ups = {u: _upload(cfg, keys, u) for u in (1, 2, 3)}
    one = ups[1].chunks
    with pytest.raises(DecryptionRefused, match="minimum cohort"):
        holder.release(HeSumMessage(SESSION, 0, one, (1,), (ups[1].contribution(),)))
    # Claiming three signed contributors for one ciphertext: decrypted, tags checked, refused,
    # key spent.
    contribs = tuple(ups[u].contribution() for u in (1, 2, 3))
    with pytest.raises(ForgedSum, match="check slots"):
        holder.release(HeSumMessage(SESSION, 0, one, (1, 2, 3), contribs))
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        holder.release(_sum(cfg, keys, [1, 2, 3]))


def test_refuses_a_count_that_does_not_match_the_claim() -> None:
    cfg, holder, keys = _setup()
    msg = _sum(cfg, keys, [1, 2, 3, 4])
    with pytest.raises(ForgedSum, match="do not match"):
        holder.release(replace(msg, included=(1, 2, 3)))  # the key is not spent by this
    with pytest.raises(ForgedSum, match="check slots"):
        holder.release(replace(msg, included=(1, 2, 3), contributions=msg.contributions[:3]))


def test_refuses_rounds_it_did_not_issue_and_forgotten_rounds() -> None:
    cfg, holder, keys = _setup()
    msg = _sum(cfg, keys, [1, 2, 3])
    with pytest.raises(DecryptionRefused, match="no key set"):
        holder.release(replace(msg, session_id=bytes(16)))
    with pytest.raises(DecryptionRefused, match="no key set"):
        holder.release(replace(msg, round=1))
    holder.forget(SESSION, 0)
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        holder.release(msg)
    with pytest.raises(HeError, match="already issued"):
        holder.open_round(cfg)


def test_another_rounds_sum_does_not_decrypt_to_a_sum() -> None:
    """Fresh keys per round: round 1's key turns round 0's ciphertexts into noise, which the
    structure checks refuse (and the key is spent)."""
    cfg0, holder, keys0 = _setup()
    cfg1 = cfg0.with_session(SESSION, 1)
    holder.open_round(cfg1)
    msg0 = _sum(cfg0, keys0, [1, 2, 3])
    with pytest.raises(DecryptionRefused):
        holder.release(replace(msg0, round=1))


def test_malformed_bytes_are_refused_before_the_key_is_spent() -> None:
    cfg, holder, keys = _setup()
    msg = _sum(cfg, keys, [1, 2, 3])
    with pytest.raises(InvalidCiphertext):
        holder.release(replace(msg, chunks=(msg.chunks[0][:-10],)))
    with pytest.raises(InvalidCiphertext):
        holder.release(replace(msg, chunks=msg.chunks * 2))
    assert holder.release(msg).count == 3  # still decryptable once


def test_policy_floor() -> None:
    with pytest.raises(ConfigError):
        HeKeyHolder(REGISTRY, min_cohort=1)
    with pytest.raises(ConfigError, match="tests only"):
        HeKeyHolder(REGISTRY, rng=DeterministicRandom(0))
