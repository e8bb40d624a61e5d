"""A whole consortium on one machine, for local tests and the demo (``secagg-aggregator
init-consortium``): the same steps a deployment takes (docs/consortium.md), run in one place.

The bundle holds one folder per role, and each process reads only its own:
``admin/`` (CA and registry keys; ``admin/public/`` is the published bundle), ``aggregator/``
(its TLS key and certificate), and ``members/member-<id>/`` (that member's TLS key, Ed25519
identity and certificate). Each member's keys are made in its own folder and only its
certificate signing request reaches the administrator, as in a real enrolment.

Security: whoever holds the whole bundle holds every role; that is the point of a local test
and the reason a deployment never uses one (each party runs its own step on its own machine).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from aggregator.admin import AdminFolder
from protos.consortium import (
    AggregatorFolder,
    Consortium,
    MemberFiles,
    MemberFolder,
    load_consortium,
    member_cn,
    member_id_from_cn,
    write_public,
)
from secagg.registry import DEFAULT_CORRUPT_FRACTION

__all__ = [
    "Consortium",
    "MemberFiles",
    "init_consortium",
    "load_consortium",
    "member_cn",
    "member_id_from_cn",
]


def init_consortium(
    members: int,
    out: Path,
    *,
    dns: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    name: str = "local test consortium",
    corrupt_fraction: Fraction = DEFAULT_CORRUPT_FRACTION,
    now: _dt.datetime | None = None,
) -> Path:
    """Enrol members ``1..members`` and an aggregator named ``dns`` / ``ips`` under ``out``."""
    if not 2 <= members <= 100_000:
        raise ValueError("a consortium has between 2 and 100000 members")
    if (out / "admin").exists():
        raise FileExistsError(f"{out} already holds a consortium")
    admin = AdminFolder(out / "admin")
    admin.init(name, corrupt_fraction=corrupt_fraction, now=now)
    agg = AggregatorFolder(out / "aggregator")
    cert, _ = admin.certify_aggregator(agg.request(dns, ips).read_bytes(), now=now)
    write_public(agg.path / "aggregator.pem", cert)
    folders = []
    for i in range(1, members + 1):
        member = MemberFolder(out / "members" / member_cn(i))
        _, cert, _ = admin.enrol(member.enrol(i).read_bytes(), now=now)
        write_public(member.path / "member.pem", cert)
        folders.append(member)
    agg.install(admin.public, agg.path / "aggregator.pem", now=now)
    for member in folders:
        member.install(admin.public, member.path / "member.pem", now=now)
    return out
