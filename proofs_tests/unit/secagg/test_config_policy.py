"""Round configuration validation and the client's policy floor (protocol.md §2, SA-03)."""

from __future__ import annotations

import pytest

from secagg import ClientPolicy, ConfigError, PolicyViolation, RoundConfig


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=1, t=1, d=1),
        dict(n=5, t=0, d=1),
        dict(n=5, t=5, d=1),  # t above the 4 neighbours
        dict(n=5, t=2, d=0),
        dict(n=10, t=2, d=1, k=3),  # odd k below n - 1
        dict(n=10, t=2, d=1, k=10),
        dict(n=5, t=3, d=1, session_id=b"short"),
        dict(n=5, t=3, d=1, clip=float("nan")),
        dict(n=5, t=3, d=1, clip=-1.0),
        dict(n=5, t=3, d=1, bits=33),
        dict(n=5, t=3, d=1, model_digest=b"x"),
        dict(n=5, t=3, d=1, version=2),
    ],
)
def test_malformed_configs_are_refused(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        RoundConfig(**kwargs)


@pytest.mark.parametrize("k", [2, 4, 6, 10, 14, 20, 30, 40, 98, 99])
def test_default_policy_matches_the_spec_floor(k: int) -> None:
    """Refuse every t <= k/2; accept every t >= floor(2k/3) + 1 (issue text, SA-03)."""
    policy = ClientPolicy()
    n = max(k + 1, 3) if k % 2 == 0 else k + 1
    for t in range(1, k + 1):
        cfg = RoundConfig(n=n, t=t, d=4, k=k, session_id=bytes(16))
        if 2 * t <= k:
            with pytest.raises(PolicyViolation):
                policy.check(cfg)
        if t >= (2 * k) // 3 + 1:
            policy.check(cfg)


def test_policy_with_explicit_corrupt_bound() -> None:
    policy = ClientPolicy(max_corrupt=1)
    policy.check(RoundConfig(n=100, t=8, d=4, k=14))
    with pytest.raises(PolicyViolation):
        policy.check(RoundConfig(n=100, t=7, d=4, k=14))
    with pytest.raises(PolicyViolation):
        ClientPolicy(max_corrupt=4).check(RoundConfig(n=10, t=4, d=4, k=4))


def test_policy_minimums_and_expectations() -> None:
    cfg = RoundConfig(n=3, t=2, d=4)
    ClientPolicy().check(cfg)
    with pytest.raises(PolicyViolation):
        ClientPolicy(min_cohort=4).check(cfg)
    with pytest.raises(PolicyViolation):
        ClientPolicy(max_d=3).check(cfg)
    with pytest.raises(PolicyViolation):
        ClientPolicy(expected_model_digest=b"m" * 32).check(cfg)
    with pytest.raises(PolicyViolation):
        ClientPolicy(expected_dp_digest=b"m" * 32).check(cfg)


def test_digest_covers_every_field() -> None:
    base = RoundConfig(n=5, t=3, d=8, session_id=bytes(16))
    variants = [
        RoundConfig(n=6, t=3, d=8, session_id=bytes(16)),
        RoundConfig(n=5, t=4, d=8, session_id=bytes(16)),
        RoundConfig(n=5, t=3, d=9, session_id=bytes(16)),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(15) + b"\x01"),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(16), round=1),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(16), clip=0.5),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(16), bits=30),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(16), model_digest=b"m" * 32),
        RoundConfig(n=5, t=3, d=8, session_id=bytes(16), dp_digest=b"p" * 32),
        RoundConfig(n=6, t=3, d=8, k=4, session_id=bytes(16)),
    ]
    digests = {base.digest} | {v.digest for v in variants}
    assert len(digests) == len(variants) + 1
    with pytest.raises(ConfigError):
        _ = RoundConfig(n=5, t=3, d=8).digest
