"""The registry as the aggregator uses it (docs/consortium.md): reread before every round, so a
revocation or a rotation the administrator published takes effect at the next round; every
caller checked against it; relayed to members, who check the administrator's signature.

The aggregator only reads the registry: it cannot add a member or change a key (members
verify the administrator's signature, and a member's own entry, themselves).

A caller is admitted when its TLS certificate (issued by the consortium CA, checked by the
TLS layer) names a member id, that id is in the current registry, and the certificate is the
one the registry pins for it (SHA-256 of its DER). A revoked member, or a member's certificate
from before a rotation, is refused with PERMISSION_DENIED and one sentence.

Members that decline a round (their policy refuses its parameters) say so with ``Decline``; the
round's abort reason then names them and their reasons instead of only counting who was
missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from protos import pki
from protos.consortium import AggregatorFolder, Consortium, ConsortiumError
from protos.secagg.consortium.v1 import consortium_pb2 as cpb
from protos.secagg.consortium.v1 import consortium_pb2_grpc as cpb_grpc
from secagg.registry import Registry, RegistryError

__all__ = ["Membership", "MembershipService", "add_membership_service", "peer_certificate"]

log = logging.getLogger("secagg.aggregator.membership")
_MAX_REASON = 500
_MAX_DECLINES = 4096


def peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The caller's TLS certificate (PEM), if it presented one."""
    raw: bytes | list[bytes] = context.auth_context().get("x509_pem_cert") or []
    first = raw if isinstance(raw, bytes) else (raw[0] if raw else None)
    return bytes(first) if first else None


class Membership:
    """The current registry, the signed bytes it came from, and members' declines."""

    def __init__(self, consortium: Consortium, *, insecure: bool = False) -> None:
        self.folder = AggregatorFolder(consortium.root)
        self.insecure = insecure
        self.current: Registry = consortium.signed
        self.data = self.folder.signed_registry()
        self._lock = threading.Lock()
        self._declines: dict[tuple[int, bytes], dict[int, str]] = {}

    @property
    def identities(self) -> dict[int, bytes]:
        return self.current.identities

    def refresh(self) -> bool:
        """Adopt a newer registry installed in the aggregator's folder; True if it changed.
        A registry that does not verify, or is older, is refused and the current one kept."""
        try:
            data = self.folder.signed_registry()
            if data == self.data:
                return False
            new = self.folder.registry()
        except (RegistryError, ConsortiumError) as exc:
            log.warning("registry not adopted, keeping v%d: %s", self.current.version, exc)
            return False
        if new.version <= self.current.version:
            return False
        old = self.current
        with self._lock:
            self.current, self.data = new, data
        gone = sorted(set(old.members) - set(new.members))
        joined = sorted(set(new.members) - set(old.members))
        rotated = sorted(
            i for i in set(old.members) & set(new.members) if old.members[i] != new.members[i]
        )
        log.info(
            "registry v%d adopted (was v%d): %d members%s%s%s",
            new.version,
            old.version,
            len(new.members),
            f"; removed {gone}" if gone else "",
            f"; joined {joined}" if joined else "",
            f"; new keys for {rotated}" if rotated else "",
        )
        return True

    # -- who is calling -------------------------------------------------------------------------

    def member_of_certificate(self, context: grpc.ServicerContext) -> int:
        """The member id the caller's certificate names (any id, member or not)."""
        raw: bytes | list[bytes] = context.auth_context().get("x509_common_name") or []
        names = [raw] if isinstance(raw, bytes) else list(raw)
        ids = {pki.member_id_from_cn(bytes(n).decode(errors="replace")) for n in names} - {None}
        if len(ids) != 1:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no member certificate")
        return int(next(iter(ids)))  # type: ignore[arg-type]

    def authorize(self, context: grpc.ServicerContext, claimed: int) -> int:
        """``claimed`` if the caller may speak for it now; PERMISSION_DENIED otherwise."""
        reg = self.current
        if self.insecure:
            if claimed not in reg.members:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{claimed} is not a member")
            return claimed
        peer = self.member_of_certificate(context)
        if peer != claimed:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate of member {peer} cannot speak for member {claimed}",
            )
        entry = reg.members.get(claimed)
        if entry is None:
            why = "was revoked" if claimed in reg.revoked else "is not a member"
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"member {claimed} {why} (registry v{reg.version})",
            )
        assert entry is not None
        cert = peer_certificate(context)
        if cert is None or pki.fingerprint(cert) != entry.certificate_sha256:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this is not member {claimed}'s current certificate (registry v{reg.version}: "
                "its keys were rotated; install the new certificate)",
            )
        return claimed

    # -- declines -------------------------------------------------------------------------------

    def decline(self, number: int, session: bytes, member: int, reason: str) -> None:
        with self._lock:
            if len(self._declines) > 64:  # old rounds: keep the recent ones only
                for key in sorted(self._declines)[:-8]:
                    del self._declines[key]
            per = self._declines.setdefault((number, session), {})
            if len(per) < _MAX_DECLINES:
                per.setdefault(member, reason[:_MAX_REASON])

    def declined(self, number: int, session: bytes) -> dict[int, str]:
        with self._lock:
            return dict(self._declines.get((number, session), {}))

    def explain(self, number: int, session: bytes | None, reason: str) -> str:
        """``reason``, followed by who declined round ``number`` and why (if anyone did)."""
        got = self.declined(number, session or b"")
        if not got:
            return reason
        shown = sorted(got.items())[:3]
        more = f" and {len(got) - 3} more" if len(got) > 3 else ""
        why = "; ".join(f"member {m}: {r}" for m, r in shown)
        return f"{reason}; {len(got)} members declined the round's parameters ({why}{more})"


class MembershipService(cpb_grpc.MembershipServicer):
    """``GetRegistry`` (any certificate of the consortium CA that names a member, so a
    revoked member learns that it was revoked) and ``Decline`` (current members only)."""

    def __init__(
        self,
        membership: Membership,
        is_open: Callable[[int, bytes], bool],
        notify: Callable[[], None],
    ) -> None:
        self.membership = membership
        self.is_open = is_open  # whether (round, session) is the round now open
        self.notify = notify

    def GetRegistry(
        self, request: cpb.GetRegistryRequest, context: grpc.ServicerContext
    ) -> cpb.SignedRegistry:
        if not self.membership.insecure:
            self.membership.member_of_certificate(context)
        return cpb.SignedRegistry(data=self.membership.data)

    def Decline(self, request: cpb.DeclineRequest, context: grpc.ServicerContext) -> cpb.DeclineAck:
        me = self.membership.authorize(context, request.client_id)
        session = bytes(request.session_id)
        if not self.is_open(request.round, session):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "that round is not open")
        reason = " ".join(request.reason.split()) or "no reason given"
        self.membership.decline(request.round, session, me, reason)
        log.info("member %d declines round %d: %s", me, request.round, reason[:_MAX_REASON])
        self.notify()
        return cpb.DeclineAck()


def add_membership_service(service: MembershipService, server: grpc.Server) -> None:
    cpb_grpc.add_MembershipServicer_to_server(service, server)  # type: ignore[no-untyped-call]
