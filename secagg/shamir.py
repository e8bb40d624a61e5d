"""Shamir secret sharing over GF(2^521 - 1) (docs/protocol.md §3).

The field is larger than 2^256, so a 32-byte secret embeds without reduction. A share is
``(x, y)`` with ``x`` the holder's non-zero client id. Reconstruction is Lagrange interpolation
at zero from exactly ``t`` shares; the weights depend only on the x-set and are cached, so
recovering a hundred secrets held by the same survivors costs one set of inversions.

Security: the coefficients come from the injected :class:`~secagg._rng.RandomSource`;
``x = 0`` (the secret itself), duplicate ``x`` and out-of-field ``y`` are refused on receipt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from secagg._errors import InvalidShare
from secagg._rng import RandomSource

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "bytes_to_secret",
    "reconstruct",
    "reconstruct_many",
    "secret_to_bytes",
    "share_from_bytes",
    "share_to_bytes",
    "split",
]

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)
_MAX_X = 2**32 - 1


def _check_x(x: int) -> None:
    if not 1 <= x <= _MAX_X:
        raise InvalidShare(f"share x-coordinate {x} outside [1, 2^32)")


def _random_element(rng: RandomSource) -> int:
    # Rejection sampling: 66 bytes masked to 521 bits, uniform on [0, PRIME).
    while True:
        v = int.from_bytes(rng.bytes(SHARE_BYTES), "big") & ((1 << 521) - 1)
        if v < PRIME:
            return v


def split(secret: int, t: int, xs: Sequence[int], rng: RandomSource) -> dict[int, int]:
    """Share ``secret`` so that any ``t`` of the points ``xs`` reconstruct it and fewer reveal
    nothing. Returns ``{x: y}``."""
    if not 0 <= secret < PRIME:
        raise InvalidShare("secret outside the field")
    if not 1 <= t <= len(xs):
        raise InvalidShare(f"threshold {t} impossible with {len(xs)} holders")
    if len(set(xs)) != len(xs):
        raise InvalidShare("duplicate share x-coordinates")
    for x in xs:
        _check_x(x)
    coeffs = [secret] + [_random_element(rng) for _ in range(t - 1)]
    out: dict[int, int] = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


@lru_cache(maxsize=1024)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # w_i = prod_{j != i} x_j / (x_j - x_i). The x are < 2^32, so the products are computed
    # exactly over the integers (cheap small-by-big multiplications) and reduced once; one
    # modular inversion serves the whole set (Montgomery's trick).
    total = 1
    for x in xs:
        total *= x
    nums = [(total // xi) % PRIME for xi in xs]
    dens = [math.prod([xj - xi for xj in xs if xj != xi]) % PRIME for xi in xs]
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    weights = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        weights[i] = nums[i] * inv * prefix[i] % PRIME
        inv = inv * dens[i] % PRIME
    return tuple(weights)


def reconstruct(shares: Mapping[int, int] | Iterable[tuple[int, int]], t: int) -> int:
    """Interpolate the secret from the first ``t`` shares (sorted by x).

    Raises :class:`InvalidShare` if fewer than ``t`` shares are given, or any share is malformed.
    With more than ``t`` shares the rest are not used; callers that need robustness verify the
    result against a commitment (docs/protocol.md §4.5).
    """
    items = sorted(shares.items() if isinstance(shares, Mapping) else shares)
    if len({x for x, _ in items}) != len(items):
        raise InvalidShare("duplicate share x-coordinates")
    if len(items) < t:
        raise InvalidShare(f"{len(items)} shares, {t} needed")
    for x, y in items:
        _check_x(x)
        if not 0 <= y < PRIME:
            raise InvalidShare("share value outside the field")
    use = items[:t]
    weights = _lagrange_at_zero(tuple(x for x, _ in use))
    acc = 0
    for w, (_, y) in zip(weights, use, strict=True):
        acc += w * y
    return acc % PRIME


def reconstruct_many(share_sets: Mapping[int, Mapping[int, int]], t: int) -> dict[int, int]:
    """Reconstruct many secrets at once: ``{owner: {x: y}}`` -> ``{owner: secret}``.

    When most owners' shares come from the same holders (plain SecAgg: every survivor holds a
    share of every other), the Lagrange weights of one base set of ``t + 1`` holders serve every
    owner: owners missing one base holder (their own id) get the weights of the base minus that
    holder in O(t) by the downdate ``w'_i = w_i (x_u - x_i) / x_u``. Others fall back to
    :func:`reconstruct`. Same checks and errors as :func:`reconstruct`.
    """
    freq: dict[int, int] = {}
    for shares in share_sets.values():
        for x in shares:
            freq[x] = freq.get(x, 0) + 1
    base = tuple(sorted(sorted(freq, key=lambda x: (-freq[x], x))[: t + 1]))
    out: dict[int, int] = {}
    base_w = _lagrange_at_zero(base) if len(base) == t + 1 else ()
    for owner, shares in share_sets.items():
        missing = [x for x in base if x not in shares] if base_w else [0, 0]
        if len(missing) > 1 or len(shares) < t:
            out[owner] = reconstruct(shares, t)
            continue
        for x, y in shares.items():
            _check_x(x)
            if not 0 <= y < PRIME:
                raise InvalidShare("share value outside the field")
        drop = missing[0] if missing else base[-1]
        inv = pow(drop, -1, PRIME)
        acc = 0
        for w, x in zip(base_w, base, strict=True):
            if x != drop:
                acc += w * (drop - x) % PRIME * inv % PRIME * shares[x]
        out[owner] = acc % PRIME
    return out


def share_to_bytes(y: int) -> bytes:
    """Fixed-width big-endian encoding of a share value."""
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(raw: bytes) -> int:
    """Decode a share value, refusing wrong lengths and out-of-field values."""
    if len(raw) != SHARE_BYTES:
        raise InvalidShare(f"share must be {SHARE_BYTES} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise InvalidShare("share value outside the field")
    return y


def secret_to_bytes(secret: int) -> bytes:
    """A reconstructed 32-byte secret back to bytes; refuses values that cannot be one."""
    if not 0 <= secret < 2**256:
        raise InvalidShare("reconstructed value is not a 32-byte secret")
    return secret.to_bytes(32, "little")


def bytes_to_secret(raw: bytes) -> int:
    """A 32-byte secret as a field element (little-endian, as X25519 keys are written)."""
    if len(raw) != 32:
        raise InvalidShare("secrets are 32 bytes")
    return int.from_bytes(raw, "little")
