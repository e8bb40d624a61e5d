"""Accountants: published values, agreement within a stated tolerance, sound choice of bound.

Published values (delta = 1e-5, RDP converted the original way, Mironov 2017 Prop. 3):
* Abadi et al., CCS 2016: q = 0.01, sigma = 4, T = 10,000 -> eps ~ 1.26.
* TF-Privacy MNIST tutorial: q = 256/60000, sigma = 1.1, 60 epochs -> eps ~ 3.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from dp import accounting as A
from dp._errors import InvalidParameter, PrivacyError

DELTA = 1e-5
ABADI = (0.01, 4.0, 10_000)


def within_cross_check(a: float, b: float) -> bool:
    abs_tol, rel_tol = A.CROSS_CHECK_TOLERANCE
    return abs(a - b) <= abs_tol + rel_tol * max(a, b)


# -- published values ------------------------------------------------------------------------


def test_abadi_2016_with_the_original_rdp_conversion() -> None:
    assert A.epsilon(*ABADI, DELTA, accountant="rdp_classic") == pytest.approx(1.26, abs=0.01)


def test_tf_privacy_mnist_tutorial_with_the_original_rdp_conversion() -> None:
    steps = int(60 * 60000 / 256)
    eps = A.epsilon(256 / 60000, 1.1, steps, DELTA, accountant="rdp_classic")
    assert eps == pytest.approx(3.01, abs=0.01)


def test_abadi_case_under_every_accountant() -> None:
    """The figures the report quotes; tighter accountants give strictly smaller epsilons."""
    pld = A.epsilon(*ABADI, DELTA, accountant="pld")
    prv = A.epsilon(*ABADI, DELTA, accountant="prv")
    rdp = A.epsilon(*ABADI, DELTA, accountant="rdp")
    classic = A.epsilon(*ABADI, DELTA, accountant="rdp_classic")
    assert pld == pytest.approx(0.947, abs=0.005)
    assert prv == pytest.approx(0.957, abs=0.01)
    assert rdp == pytest.approx(1.035, abs=0.005)
    assert pld < rdp < classic
    assert within_cross_check(pld, prv)


# -- agreement -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "sigma", "steps"),
    [(0.01, 1.0, 1000), (0.05, 2.0, 200), (1.0, 5.0, 100)],
)
def test_accountants_agree_within_the_stated_tolerance(q: float, sigma: float, steps: int) -> None:
    """PLD and PRV estimate the same curve: |pld - prv| <= 0.05 + 2% (CROSS_CHECK_TOLERANCE).
    RDP is a looser upper bound: never below PLD, and within 25% of it in these regimes."""
    rep = A.account([A.DpSgdEvent(q, sigma, steps)], DELTA)
    pld, prv, rdp = rep.bound("pld"), rep.bound("prv"), rep.bound("rdp")
    assert within_cross_check(pld, prv)
    assert rep.cross_check == "agree"
    assert pld - 1e-3 <= rdp <= 1.25 * pld + 0.05
    assert rep.epsilon == min(pld, prv, rdp)


def test_report_uses_the_tightest_sound_bound_and_names_it() -> None:
    rep = A.account([A.DpSgdEvent(*ABADI)], DELTA)
    assert rep.accountant == "pld"
    assert rep.epsilon == rep.bound("pld") == min(v for _, v in rep.bounds)
    assert rep.unit is A.PrivacyUnit.RECORD
    assert rep.assumptions and "Poisson" in rep.assumptions[0]
    assert A.epsilon(*ABADI, DELTA, accountant="best") == rep.epsilon


def test_heterogeneous_composition_equals_grouped_steps() -> None:
    one = A.account([A.DpSgdEvent(0.02, 2.0, 150)], DELTA, ("pld", "rdp"))
    split = A.account(
        [A.DpSgdEvent(0.02, 2.0, 50), A.DpSgdEvent(0.02, 2.0, 100)], DELTA, ("pld", "rdp")
    )
    assert split.bounds == one.bounds
    mixed = A.account(
        [A.DpSgdEvent(0.02, 2.0, 50), A.DpSgdEvent(0.05, 3.0, 50)], DELTA, ("pld", "rdp")
    )
    assert mixed.bound("pld") <= mixed.bound("rdp")


# -- failure handling (threats.md DP-07) -----------------------------------------------------


@dataclass(frozen=True)
class FakeAccountant:
    name: str
    value: float = 1.0
    error: Exception | None = None

    def supports(self, event: A.DpEvent) -> bool:
        return True

    def epsilon(self, events: object, delta: float) -> float:
        if self.error is not None:
            raise self.error
        return self.value


def test_disagreeing_numerical_accountants_fall_back_to_the_larger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(A.ACCOUNTANTS, "pld", FakeAccountant("pld", 0.1))  # type: ignore[arg-type]
    monkeypatch.setitem(A.ACCOUNTANTS, "prv", FakeAccountant("prv", 0.9))  # type: ignore[arg-type]
    rep = A.account([A.DpSgdEvent(*ABADI)], DELTA)
    assert rep.cross_check == "disagree"
    # Neither 0.1 nor anything below the larger numerical value is trusted.
    assert rep.epsilon == 0.9 and rep.accountant == "prv"
    monkeypatch.setitem(A.ACCOUNTANTS, "prv", FakeAccountant("prv", 5.0))  # type: ignore[arg-type]
    rep = A.account([A.DpSgdEvent(*ABADI)], DELTA)
    assert rep.accountant == "rdp" and rep.epsilon == rep.bound("rdp")


def test_a_crashing_accountant_aborts_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    boom = FakeAccountant("prv", error=RuntimeError("Discrete mean differs significantly"))
    monkeypatch.setitem(A.ACCOUNTANTS, "prv", boom)  # type: ignore[arg-type]
    with pytest.raises(A.AccountingError, match="prv"):
        A.account([A.DpSgdEvent(0.01, 2.0, 100)], DELTA)
    rep = A.account([A.DpSgdEvent(0.01, 2.0, 100)], DELTA, strict=False)
    assert "prv" in dict(rep.skipped) and rep.accountant == "pld"
    assert isinstance(A.AccountingError("x"), PrivacyError)


@pytest.mark.parametrize("bad", [math.nan, -0.5])
def test_an_impossible_epsilon_is_an_accounting_error(
    monkeypatch: pytest.MonkeyPatch, bad: float
) -> None:
    monkeypatch.setitem(A.ACCOUNTANTS, "pld", FakeAccountant("pld", bad))  # type: ignore[arg-type]
    with pytest.raises(A.AccountingError):
        A.account([A.DpSgdEvent(0.01, 2.0, 100)], DELTA, ("pld",))


def test_noop_and_non_private_events() -> None:
    assert A.epsilon(0.01, 1.0, 0, DELTA) == 0.0
    assert A.epsilon(0.0, 1.0, 100, DELTA) == 0.0
    assert A.epsilon(0.01, 0.0, 1, DELTA) == math.inf
    assert A.account([], DELTA).epsilon == 0.0


@pytest.mark.parametrize(
    "args",
    [
        (1.5, 1.0, 1),
        (-0.1, 1.0, 1),
        (0.1, -1.0, 1),
        (0.1, 1.0, -1),
        (0.1, 1.0, 2.5),
        (0.1, math.inf, 1),
        (True, 1.0, 1),
        ("0.1", 1.0, 1),
    ],
)
def test_events_validate_their_fields(args: tuple[object, object, object]) -> None:
    with pytest.raises(InvalidParameter):
        A.DpSgdEvent(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, math.nan])
def test_delta_must_be_a_probability(delta: float) -> None:
    with pytest.raises(InvalidParameter):
        A.epsilon(0.01, 1.0, 10, delta, accountant="rdp")


def test_unknown_accountant_and_mixed_units_are_refused() -> None:
    with pytest.raises(InvalidParameter):
        A.epsilon(0.01, 1.0, 10, DELTA, accountant="gdp")
    ddg = A.DistributedDiscreteGaussianEvent(10.0, 10, 1.0, 50.0, 100)
    with pytest.raises(InvalidParameter, match="separately"):
        A.account([A.DpSgdEvent(0.01, 1.0, 10), ddg], DELTA)


def test_events_round_trip_through_their_params() -> None:
    events: list[A.DpEvent] = [
        A.DpSgdEvent(0.01, 1.1, 7),
        A.DistributedDiscreteGaussianEvent(3.0, 20, 0.5, 40.0, 128, l1_sensitivity=300.0),
        A.DistributedSkellamEvent(3.0, 20, 1.0, 40.0, 128, rounds=4),
    ]
    for e in events:
        assert A.event_from_params(e.kind, A.event_to_params(e)) == e
    with pytest.raises(InvalidParameter):
        A.event_from_params("gaussian", {})
    with pytest.raises(InvalidParameter):
        A.event_from_params(
            "dp_sgd", {"sample_rate": 0.1, "noise_multiplier": 1, "steps": 1, "extra": 1}
        )


# -- distributed mechanisms: published bounds, not continuous Gaussians ----------------------


def gaussian_rdp_eps(z: float, rounds: int) -> float:
    """eps of `rounds` unsampled Gaussians with noise multiplier z, at the same integer orders."""
    orders = np.array(A._INT_ORDERS, dtype=np.float64)
    return A.rdp_to_epsilon(orders, rounds * orders / (2 * z * z), DELTA)[0]


def test_ddg_with_negligible_tau_matches_the_gaussian_it_approximates() -> None:
    # sigma = 5 per client: tau ~ 10 n exp(-2 pi^2 25 / 2) ~ 1e-105, so Prop. 14 is the Gaussian.
    e = A.DistributedDiscreteGaussianEvent(5.0, 16, 1.0, 20.0, 1000, rounds=10)
    rep = A.account([e], DELTA)
    assert rep.accountant == "rdp"
    assert dict(rep.skipped).keys() == {"pld", "prv"}
    z = math.sqrt(16) * 5.0 / 20.0
    assert rep.epsilon == pytest.approx(gaussian_rdp_eps(z, 10), rel=1e-9)


def test_ddg_pays_for_discreteness_when_local_noise_is_small() -> None:
    """KLS21's tau term: many clients with sigma ~ 1 cost far more than a Gaussian of the same
    total variance would, which a continuous-Gaussian accountant would miss."""
    e = A.DistributedDiscreteGaussianEvent(0.8, 200, 1.0, 20.0, 1000)
    z = math.sqrt(200) * 0.8 / 20.0
    assert A.account([e], DELTA).epsilon > 1.5 * gaussian_rdp_eps(z, 1)


def test_subsampled_ddg_uses_the_general_bound_not_the_sampled_gaussian() -> None:
    from opacus.accountants.analysis import rdp as opacus_rdp  # type: ignore[import-untyped]

    q, z, rounds = 0.05, 1.0, 100
    e = A.DistributedDiscreteGaussianEvent(10.0, 100, q, 100.0, 1000, rounds=rounds)  # z = 1
    orders = [float(a) for a in A._INT_ORDERS]
    ddg = A.ddg_rdp(e)
    sampled_gaussian = np.asarray(
        opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=rounds, orders=orders)
    )
    # Zhu-Wang's bound holds for any mechanism, so it is >= the Gaussian-specific analysis...
    assert np.all(ddg >= sampled_gaussian - 1e-9)
    # ...and it still amplifies: well below the unsampled curve.
    unsampled = A.ddg_rdp(
        A.DistributedDiscreteGaussianEvent(10.0, 100, 1.0, 100.0, 1000, rounds=rounds)
    )
    assert (
        A.rdp_to_epsilon(orders, ddg, DELTA)[0]
        < 0.5 * A.rdp_to_epsilon(orders, unsampled, DELTA)[0]
    )


def test_fewer_survivors_cost_more_privacy() -> None:
    """threats.md DP-10: account with the survivors actually in the sum."""
    eps = [
        A.account([A.DistributedDiscreteGaussianEvent(4.0, n, 1.0, 30.0, 500)], DELTA).epsilon
        for n in (100, 50, 10)
    ]
    assert eps[0] < eps[1] < eps[2]


def test_skellam_approaches_the_gaussian_from_above() -> None:
    e = A.DistributedSkellamEvent(30.0, 100, 1.0, 200.0, 1000, rounds=5)
    z = math.sqrt(100) * 30.0 / 200.0
    eps = A.account([e], DELTA).epsilon
    assert gaussian_rdp_eps(z, 5) <= eps <= 1.01 * gaussian_rdp_eps(z, 5)
    small = A.DistributedSkellamEvent(0.5, 10, 1.0, 2.0, 1000)
    z_small = math.sqrt(10) * 0.5 / 2.0
    assert A.account([small], DELTA).epsilon > 1.2 * gaussian_rdp_eps(z_small, 1)


def test_distributed_events_validate() -> None:
    with pytest.raises(InvalidParameter):
        A.DistributedDiscreteGaussianEvent(0.4, 10, 1.0, 1.0, 10)  # KLS21 needs sigma >= 1/2
    with pytest.raises(InvalidParameter):
        A.DistributedSkellamEvent(0.0, 10, 1.0, 1.0, 10)
    with pytest.raises(InvalidParameter):
        A.DistributedSkellamEvent(1.0, 0, 1.0, 1.0, 10)
    with pytest.raises(InvalidParameter):
        A.DistributedSkellamEvent(1.0, 1, 1.1, 1.0, 10)


def test_participation_below_one_states_its_assumption() -> None:
    e = A.DistributedSkellamEvent(5.0, 10, 0.1, 10.0, 100)
    rep = A.account([e], DELTA)
    assert any("aggregator" in a for a in rep.assumptions)


def test_subsampled_rdp_edges() -> None:
    def curve(a: int) -> float:
        return a / 8.0

    base = A.subsampled_rdp(curve, 1.0)
    assert np.all(A.subsampled_rdp(curve, 0.0) == 0.0)
    low, high = A.subsampled_rdp(curve, 0.01), A.subsampled_rdp(curve, 0.2)
    assert np.all(low <= high + 1e-12) and np.all(high <= base + 1e-12)
    with pytest.raises(InvalidParameter):
        A.subsampled_rdp(curve, 0.1, orders=[1.5])  # type: ignore[list-item]


# -- calibration -----------------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_noise_multiplier_for_meets_the_target_and_is_nearly_tight(accountant: str) -> None:
    q, steps, target = 0.05, 100, 1.0
    sigma = A.noise_multiplier_for(target, q, steps, DELTA, accountant)
    assert A.epsilon(q, sigma, steps, DELTA, accountant) <= target
    assert A.epsilon(q, 0.98 * sigma, steps, DELTA, accountant) > target


def test_noise_multiplier_for_edge_cases() -> None:
    assert A.noise_multiplier_for(1.0, 0.1, 0, DELTA) == 0.0
    with pytest.raises(InvalidParameter):
        A.noise_multiplier_for(0.0, 0.1, 10, DELTA)
    with pytest.raises(A.AccountingError, match="no noise multiplier"):
        A.noise_multiplier_for(1e-9, 1.0, 1, DELTA, "rdp")


def test_distributed_event_bridges_the_encoders_round_privacy() -> None:
    rp = SimpleNamespace(
        mechanism="gaussian",
        num_survivors=40,
        dim=1024,
        l2_sensitivity=60.0,
        l1_sensitivity=1500.0,
        local_noise_parameter=16.0,  # a variance: sigma = 4
    )
    e = A.distributed_event(rp, participation_rate=0.5, rounds=3)
    assert e == A.DistributedDiscreteGaussianEvent(4.0, 40, 0.5, 60.0, 1024, 1500.0, 3)
    rp.mechanism = "skellam"
    assert isinstance(A.distributed_event(rp), A.DistributedSkellamEvent)
    rp.mechanism = "laplace"
    with pytest.raises(InvalidParameter):
        A.distributed_event(rp)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_rdp_agrees_with_the_encoders_independent_bounds(mechanism: str) -> None:
    """dp.distributed implements KLS21/AKL21 separately; at q = 1 our curve is never above it
    (ours also takes the best number of shares) and equal when local noise is not small."""
    try:
        from dp.distributed import RoundPrivacy

        theirs = RoundPrivacy(
            mechanism=mechanism,  # type: ignore[arg-type]
            num_survivors=30,
            dim=512,
            l2_sensitivity=50.0,
            l1_sensitivity=800.0,
            local_noise_parameter=25.0,
        )
        their_curve = [theirs.rdp(float(a)) for a in A._INT_ORDERS]
    except (ImportError, TypeError, AttributeError) as exc:  # pragma: no cover - other module
        pytest.skip(f"dp.distributed.RoundPrivacy not usable here: {exc}")
    event = A.distributed_event(theirs)
    ours = A.ddg_rdp(event) if mechanism == "gaussian" else A.skellam_rdp(event)  # type: ignore[arg-type]
    assert np.allclose(ours, their_curve, rtol=1e-9, atol=0)
