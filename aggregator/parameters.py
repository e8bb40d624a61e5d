"""The round parameters an aggregator runs with, and the check that clients will accept them.

One corruption assumption serves both sides (docs/consortium.md): the administrator writes it
into the signed registry; every client builds its default :class:`~secagg.ClientPolicy` from
it; and here the aggregator picks ``(k, t)`` with :func:`secagg.params.parameters_for_policy`
for that same policy, or, when the operator gives ``--threshold``, refuses at start-up a
threshold that clients would refuse, with the clients' own reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from secagg import ClientPolicy, ConfigError, PolicyViolation, RoundConfig
from secagg.params import parameters_for_policy
from secagg.registry import Registry

__all__ = ["Parameters", "client_policy", "resolve"]


def client_policy(registry: Registry) -> ClientPolicy:
    """The policy a member holds by default under this registry."""
    return ClientPolicy(max_corrupt_fraction=registry.policy_fraction)


@dataclass(frozen=True)
class Parameters:
    """``t`` and ``k`` (None: the complete graph), and what to tell the operator."""

    t: int
    k: int | None
    note: str
    warning: str = ""


def resolve(
    registry: Registry,
    *,
    d: int,
    threshold: int | None,
    neighbors: int | None,
    expected_dropout: float,
    clip: float = 1.0,
    bits: int | None = None,
    norm_bound: int | None = None,
) -> Parameters:
    """Parameters for the registry's members; :class:`~secagg.ConfigError` with the reason
    when the clients' default policy would refuse them."""
    n = len(registry.members)
    policy = client_policy(registry)
    assumption = f"fewer than {registry.corrupt_fraction} of any neighbourhood corrupt"
    warning = ""
    if threshold is None:
        try:
            choice = parameters_for_policy(n, expected_dropout, policy, k=neighbors)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; pass --threshold (and --neighbors) explicitly") from None
        t, k = choice.t, (None if choice.complete_graph else choice.k)
        note = (
            f"parameters for n={n}, {expected_dropout:.0%} dropout, {assumption} (registry "
            f"v{registry.version}): k={choice.k}, t={choice.t} (failure <= "
            f"{choice.failure_probability:.2g}, privacy failure <= "
            f"{choice.privacy_failure_probability:.2g})"
        )
        if not choice.meets_targets:
            warning = (
                f"with {n} members no (k, t) keeps the round failure below 2^-30: a round "
                f"fails if more than {n - choice.t - 1} members drop (probability <= "
                f"{choice.failure_probability:.2g} at {expected_dropout:.0%} dropout)"
            )
    else:
        t, k = threshold, neighbors
        note = f"parameters: n={n}, k={n - 1 if k is None else k}, t={t} ({assumption})"
    try:
        cfg = RoundConfig(n=n, t=t, d=d, k=k, clip=clip, bits=bits, norm_bound=norm_bound)
        policy.check(cfg)
    except PolicyViolation as exc:
        raise ConfigError(f"every client would refuse these rounds: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"these rounds cannot run with {n} members: {exc}") from None
    return Parameters(t, k, note, warning)
