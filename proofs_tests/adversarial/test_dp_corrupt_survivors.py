"""Distributed DP with corrupt survivors (threats.md DP-10; threat_models/colluding-clients.md).

The attack: the decoder needs ``t`` survivors and each client adds ``1/t`` of the target noise,
but the client policy tolerates ``c`` corrupt clients among them, and a corrupt client adds no
noise at all. At n = 10 (k = 9, c = 2, t = 6) the honest noise in a sum of t survivors was
then 4/6 of the target variance while every ledger recorded the full guarantee.

Now the default calibration ("honest-survivors") has each client add ``target / (t - c)``,
so the ``t - c`` honest survivors alone carry the target; the explicit "all-survivors" option
keeps the old share and records the weaker epsilon that actually holds. The ledger and
``secagg-audit report`` show that epsilon with ``t``, ``c`` and the honest share count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from aggregator.fl import FlParams, choose_dp_config
from dp.accounting import distributed_event
from dp.audit import main as audit_main
from dp.distributed import DistributedDPConfig, decode, encode, round_privacy
from dp.ledger import Budget, PrivacyLedger, generate_signing_key
from secagg import ClientPolicy, DeterministicRandom

N, T = 10, 6
C = ClientPolicy().corrupt_bound(N - 1)  # 2: what the default client policy tolerates
SEED = bytes(range(32))


def _target_variance(cfg: DistributedDPConfig) -> float:
    return (cfg.noise_multiplier * cfg.l2_clip * cfg.scale) ** 2


def test_dp10_default_fl_config_meets_the_target_with_c_corrupt_survivors() -> None:
    """DP-10: the config the FL aggregator builds by default gives the target variance from
    the ``t - c`` honest survivors alone (c from the default client policy)."""
    assert C == 2
    cfg = choose_dp_config(4096, N, T, FlParams())
    assert (T - C) * cfg.local_noise_variance >= _target_variance(cfg) * (1 - 1e-12)
    privacy = round_privacy(cfg)  # worst case: t survivors, c of them corrupt
    assert privacy.num_survivors == T - C


def test_dp10_corrupt_survivors_adding_no_noise_leave_the_target_noise() -> None:
    """DP-10, played out: t survivors, c of them corrupt and sending their rounded vector with
    no noise share. The empirical noise of the decoded sum is still the target."""
    cfg = choose_dp_config(1 << 14, N, T, FlParams(noise_multiplier=0.5))
    cfg = DistributedDPConfig(**{**_fields(cfg), "allow_seeded_rng": True})
    ring = np.zeros(cfg.encoded_dim, dtype=np.uint64)
    for u in range(T - C):  # honest: a zero update plus its noise share
        ring += encode(np.zeros(cfg.dim), cfg, SEED, DeterministicRandom(f"honest/{u}"))
    # the corrupt survivors add nothing: their ring vectors are the zero update, no noise
    ring %= np.uint64(cfg.modulus)
    dec = decode(ring, cfg, SEED, T)
    got = float(np.std(dec.values))
    assert got >= 0.97 * cfg.target_stddev, (got, cfg.target_stddev)


def _fields(cfg: DistributedDPConfig) -> dict[str, object]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_dp10_all_survivors_option_records_the_weaker_epsilon_honestly(tmp_path: Path) -> None:
    """DP-10: the explicit "all-survivors" calibration keeps the old per-client share
    (target / t); the epsilon charged is the one ``t - c`` honest shares give, larger than the
    calibrated default's, and the ledger row says how it was derived."""
    honest = choose_dp_config(4096, N, T, FlParams())
    weak = choose_dp_config(4096, N, T, FlParams(dp_calibration="all-survivors"))
    assert honest.calibration == "honest-survivors" and weak.calibration == "all-survivors"
    assert weak.max_corrupt == honest.max_corrupt == C
    assert math.isclose(
        weak.local_noise_variance * T, _target_variance(weak), rel_tol=1e-6, abs_tol=1e-9
    )
    ev_weak = distributed_event(round_privacy(weak))
    ev_honest = distributed_event(round_privacy(honest))
    assert ev_weak.survivors == ev_honest.survivors == T - C
    assert ev_weak.decoded_survivors == T and ev_weak.assumed_corrupt == C
    with PrivacyLedger.create(tmp_path / "l.db", generate_signing_key()) as led:
        budget = Budget(1e6, 1e-5)
        e_weak = led.charge(ev_weak, client_id="1", run_id="weak", round_index=0, budget=budget)
        e_honest = led.charge(
            ev_honest, client_id="1", run_id="honest", round_index=0, budget=budget
        )
    assert e_weak.epsilon_after > e_honest.epsilon_after
    ledger = str(tmp_path / "l.db")
    rc = audit_main(
        ["report", "--ledger", ledger, "--format", "json", "--output", ledger + ".json"]
    )
    assert rc == 0
    rep = json.loads(Path(ledger + ".json").read_text())
    rows = {c["run"]: c["rounds"][0] for c in rep["chains"]}
    assert rows["weak"]["params"]["survivors"] == T - C
    assert rows["weak"]["params"]["decoded_survivors"] == T
    assert rows["weak"]["params"]["assumed_corrupt"] == C
    assert rows["weak"]["epsilon_after"] == pytest.approx(e_weak.epsilon_after)
    assert audit_main(["report", "--ledger", ledger, "--output", ledger + ".md"]) == 0
    assert f"assumed_corrupt={C}" in Path(ledger + ".md").read_text()


def test_dp10_client_refuses_dp_noise_calibrated_for_fewer_corrupt_survivors() -> None:
    """DP-10: an aggregator that sets ``max_corrupt = 0`` (less noise per client) is refused by
    every client whose policy tolerates c > 0; the config it should send passes."""
    from client.agent import AgentError
    from client.fl import check_round_dp
    from secagg import RoundConfig

    good = choose_dp_config(4096, N, T, FlParams())
    cheap = choose_dp_config(4096, N, T, FlParams(max_corrupt=0))
    assert cheap.local_noise_variance < good.local_noise_variance
    for cfg in (good, cheap):
        rc = RoundConfig(n=N, t=T, d=cfg.encoded_dim, bits=cfg.bits)
        if cfg is good:
            check_round_dp(cfg, rc, 4096)
        else:
            with pytest.raises(AgentError, match="corrupt survivors"):
                check_round_dp(cfg, rc, 4096)
    with pytest.raises(ValueError, match="c=6"):
        choose_dp_config(4096, N, T, FlParams(max_corrupt=T))
