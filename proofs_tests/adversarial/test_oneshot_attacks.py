"""Attacks on the one-shot variant: threat_models/oneshot.md T1..T13.

The adversary is the aggregator (it relays every key, share and signature, and chooses what
each committee member is asked), a coalition of it with fewer than t_c members, or a client
sending whatever bytes it likes. Every test names its threat id; refusals assert the typed
error, and the culprit where the protocol names one.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proofs_tests.oneshot_helpers import POLICY, encoded, make_round, run_committee
from secagg import DeterministicRandom, InvalidSignature, PolicyViolation, SystemRandom
from secagg._crypto import (
    LABEL_CONFIG,
    aead_open,
    aead_seal,
    ed25519_sign,
    sha256,
    x25519_agree,
    x25519_keypair,
)
from secagg._errors import UnexpectedMessage
from secagg.oneshot import (
    CheckRequest,
    CommitteeMember,
    Complaint,
    EquivocationRefused,
    InvalidUpload,
    MemberKey,
    OneShotClient,
    OneShotInsufficient,
    ReleaseRefused,
    ReleaseRequest,
    SetSignature,
    UnmaskFailed,
)
from secagg.oneshot.client import share_ad, share_key
from secagg.oneshot.messages import LABEL_SET, LABEL_UPLOAD, set_payload
from secagg.oneshot.ring import lagrange_at_zero
from secagg.oneshot.scheme import unmask, unpack_residues


def _closed(n: int = 6, **kw):  # type: ignore[no-untyped-def]
    r = make_round(n=n, **kw)
    s = r.server()
    for u in range(1, n + 1):
        s.add(r.upload(u))
    inc = s.close()
    return r, s, inc


def _checked_and_signed(r, s, inc, members):  # type: ignore[no-untyped-def]
    for m in members:
        r.members[m].check(s.check_request(m))
    for m in members:
        s.add_signature(r.members[m].sign(r.cfg.session_id, r.cfg.round, inc))


def test_t0_honest_round_is_exact_with_dropouts() -> None:
    """Baseline: 2 of 7 clients never upload, one member drops; the sum is exact."""
    r = make_round(n=7)
    s = r.server()
    for u in (1, 2, 4, 5, 7):
        s.add(r.upload(u))
    res = run_committee(r, s, [1, 2, 4, 5])
    assert res.included == (1, 2, 4, 5, 7)
    assert np.array_equal(res.int_sum, sum(encoded(r, u) for u in res.included))


def test_t1_a_member_answers_at_most_once_per_round() -> None:
    """T1: a second release (same set or not) is refused; so is a second signature on
    another set."""
    r, s, inc = _closed()
    _checked_and_signed(r, s, inc, [1, 2, 3])
    req = s.release_request()
    r.members[1].release(req)
    with pytest.raises(EquivocationRefused):
        r.members[1].release(req)
    with pytest.raises(EquivocationRefused):
        r.members[1].check(s.check_request(1))


def test_t2_different_sets_to_different_members_cannot_both_reach_t_c() -> None:
    """T2: the aggregator shows members 1,2,3 the full set and members 3,4,5 the set without
    client 6 (the difference would reveal client 6's secret). Member 3 signs only one, so
    with t_c = 3 > c/2 at most one set gathers t_c signatures; the other is never released."""
    r, s, inc = _closed()
    small = tuple(u for u in inc if u != 6)
    _checked_and_signed(r, s, inc, [1, 2, 3])
    with pytest.raises(EquivocationRefused):
        r.members[3].sign(r.cfg.session_id, r.cfg.round, small)
    sigs_small = []
    for m in (4, 5):
        reqm = CheckRequest(
            r.cfg.session_id,
            r.cfg.round,
            small,
            tuple(x for x in s.check_request(m).shares if x.client_id != 6),
        )
        r.members[m].check(reqm)
        sigs_small.append(r.members[m].sign(r.cfg.session_id, r.cfg.round, small))
    with pytest.raises(ReleaseRefused):
        r.members[4].release(
            ReleaseRequest(r.cfg.session_id, r.cfg.round, small, tuple(sigs_small))
        )
    # Nor may a member that signed the small set release for the full one.
    full = s.release_request()
    with pytest.raises(EquivocationRefused):
        r.members[4].release(full)


def test_t2_a_colluding_member_cannot_make_the_second_set_reach_t_c_alone() -> None:
    """T2 with one corrupt member (f = 1 < 2 t_c - c = 1 fails, so c = 5, t_c = 4: 2t_c - c = 3):
    member 5 signs both sets; the second set still has only 2 signatures."""
    r, s, inc = _closed(threshold=4)
    _checked_and_signed(r, s, inc, [1, 2, 3, 5])
    small = tuple(u for u in inc if u != 6)
    corrupt = SetSignature(5, ed25519_sign(r.ids[5], LABEL_SET, r.cfg.digest, set_payload(small)))
    reqm = CheckRequest(
        r.cfg.session_id,
        r.cfg.round,
        small,
        tuple(x for x in s.check_request(4).shares if x.client_id != 6),
    )
    r.members[4].check(reqm)
    sig4 = r.members[4].sign(r.cfg.session_id, r.cfg.round, small)
    with pytest.raises(ReleaseRefused):
        r.members[4].release(ReleaseRequest(r.cfg.session_id, r.cfg.round, small, (sig4, corrupt)))


def test_t3_a_set_below_the_cohort_or_with_unregistered_ids_is_refused() -> None:
    """T3: a set of 2 (< min_cohort 3) is refused before anything is summed; so is a set naming
    an id outside the registry, one larger than the n the ring is sized for, or an unsorted
    one."""
    r, s, inc = _closed()
    full = s.check_request(1)
    tiny = CheckRequest(full.session_id, full.round, inc[:2], full.shares[:2])
    with pytest.raises(ReleaseRefused, match="minimum cohort"):
        r.members[1].check(tiny)
    ghost = replace(full.shares[0], client_id=99)
    with pytest.raises(ReleaseRefused, match="unregistered"):
        r.members[1].check(
            CheckRequest(full.session_id, full.round, (*inc[:-1], 99), (*full.shares[:-1], ghost))
        )
    with pytest.raises(ReleaseRefused, match="exceeds the n"):  # more than the ring holds
        r.members[1].check(
            CheckRequest(full.session_id, full.round, (*inc, 99), (*full.shares, ghost))
        )
    with pytest.raises(ReleaseRefused):
        r.members[1].check(CheckRequest(full.session_id, full.round, inc[::-1], full.shares[::-1]))
    # The aggregator itself will not close below the cohort.
    r2 = make_round(n=6)
    s2 = r2.server()
    for u in (1, 2):
        s2.add(r2.upload(u))
    with pytest.raises(OneShotInsufficient):
        s2.close()


def test_t3_sybil_shares_forged_for_registered_absent_clients_are_refused() -> None:
    """T3: to isolate client 1, the aggregator pads the set with made-up uploads for
    registered clients 2 and 3 (it does not hold their identity keys): members complain."""
    r = make_round(n=6)
    s = r.server()
    s.add(r.upload(1))
    forger = make_round(n=6, seed=9)  # same ids, other identity keys: the aggregator's own
    for u in (2, 3):
        fake = OneShotClient(
            r.cfg,
            u,
            forger.ids[u],
            r.registry,
            policy=POLICY,
            rng=DeterministicRandom(u),
            allow_deterministic_rng=True,
        )
        up = fake.upload(np.zeros(r.cfg.d), r.keys)
        with pytest.raises(InvalidUpload) as e:
            s.add(up)
        assert e.value.culprit == u
    inc = (1, 2, 3)
    good = r.upload(1).share_for(1)
    forged = [
        OneShotClient(
            r.cfg,
            u,
            forger.ids[u],
            r.registry,
            policy=POLICY,
            rng=DeterministicRandom(10 + u),
            allow_deterministic_rng=True,
        )
        .upload(np.zeros(r.cfg.d), r.keys)
        .share_for(1)
        for u in (2, 3)
    ]
    with pytest.raises(Complaint) as c:
        r.members[1].check(CheckRequest(r.cfg.session_id, r.cfg.round, inc, (good, *forged)))
    assert c.value.culprits == (2, 3)


def test_t4_uploads_shares_and_signatures_do_not_replay_across_rounds() -> None:
    """T4: round r's upload is refused in round r+1; round r's shares fail the member's check
    in round r+1; round r's set signatures do not count in round r+1."""
    r, s, inc = _closed()
    old_up = r.upload(2)
    old_shares = s.check_request(1).shares
    _checked_and_signed(r, s, inc, [1, 2, 3])
    old_sigs = s.release_request().signatures
    r2 = r.next_round()
    s2 = r2.server()
    with pytest.raises(InvalidUpload):
        s2.add(old_up)
    with pytest.raises(InvalidUpload):
        s2.add(
            replace(old_up, session_id=r2.cfg.session_id, round=r2.cfg.round)
        )  # signature binds the round
    for u in range(1, 7):
        s2.add(r2.upload(u))
    inc2 = s2.close()
    with pytest.raises(Complaint) as c:
        r2.members[1].check(CheckRequest(r2.cfg.session_id, r2.cfg.round, inc2, old_shares))
    assert c.value.culprits == inc2
    r2.members[4].check(s2.check_request(4))
    r2.members[4].sign(r2.cfg.session_id, r2.cfg.round, inc2)
    with pytest.raises(ReleaseRefused, match="valid committee signatures"):
        r2.members[4].release(ReleaseRequest(r2.cfg.session_id, r2.cfg.round, inc2, old_sigs))


def test_t5_a_member_asked_for_another_rounds_shares_refuses() -> None:
    """T5: after releasing round r, a member holds nothing for it (asked again: refused); a
    round it never opened: refused; its round keys are fresh per round."""
    r, s, inc = _closed()
    _checked_and_signed(r, s, inc, [1, 2, 3])
    r.members[1].release(s.release_request())
    with pytest.raises(EquivocationRefused):
        r.members[1].check(s.check_request(1))
    with pytest.raises(ReleaseRefused, match="no key"):
        r.members[2].check(CheckRequest(bytes(16), 77, inc, s.check_request(2).shares))
    r2 = r.next_round()
    assert r2.keys[0].public_key != r.keys[0].public_key


def test_t6_fewer_than_t_c_members_learn_nothing_of_an_honest_clients_secret() -> None:
    """T6: the aggregator and t_c - 1 = 2 members pool their shares of client 1's secret: the
    interpolation through them and any guess for the third share is consistent, so every
    secret is possible; with client 1's masked chunks alone, an adversary's best guess of s
    (the pooled shares taken as if they were t_c) does not unmask it."""
    r = make_round(n=6)
    up = r.upload(1)
    ring = r.cfg.ring
    shares = []
    for m in (1, 2):
        st = r.members[m]._rounds[(r.cfg.session_id, r.cfg.round)]
        k = share_key(r.cfg, x25519_agree(st.key, up.ephemeral), 1, m, up.ephemeral, st.public)
        shares.append(
            unpack_residues(
                aead_open(k, up.shares[m - 1], share_ad(r.cfg, 1, m)),
                ring.n,
                ring.primes,
                ring.residue_bits,
            )
        )
    q = ring.primes[0]
    w = lagrange_at_zero((1, 2), q)  # the best a t_c - 1 coalition can interpolate
    guess = (np.uint64(w[0]) * shares[0][0] + np.uint64(w[1]) * shares[1][0]) % np.uint64(q)
    centred = np.where(guess > q // 2, guess.astype(np.int64) - q, guess.astype(np.int64))
    # A ternary secret would be in {-1, 0, 1}: the coalition's guess is spread over GF(q).
    assert np.mean(np.abs(centred) <= 1) < 0.01


def test_t7_the_aggregator_cannot_substitute_a_members_key() -> None:
    """T7: a round key signed by someone other than the member, or signed for another round,
    is refused by the client before anything is sealed."""
    r = make_round()
    _sk, pk = x25519_keypair(SystemRandom())
    rogue = Ed25519PrivateKey.generate()
    forged = MemberKey(
        1,
        pk,
        ed25519_sign(
            rogue, b"secagg/oneshot/v1/member-key", r.cfg.digest, MemberKey(1, pk, b"").payload()
        ),
    )
    with pytest.raises(InvalidSignature):
        r.client(2).upload(np.zeros(r.cfg.d), [forged, *r.keys[1:]])
    r2 = r.next_round()
    with pytest.raises(InvalidSignature):
        r2.client(2).upload(np.zeros(r2.cfg.d), r.keys)  # last round's keys
    with pytest.raises(PolicyViolation):
        r.client(2).upload(np.zeros(r.cfg.d), r.keys[:-1])


def test_t8_malformed_uploads_are_refused_and_name_the_sender() -> None:
    """T8: wrong sizes, residues out of range, a bad signature, an unregistered or duplicate
    sender: the upload is refused with the sender named; the round goes on without it."""
    r = make_round()
    s = r.server()
    up = r.upload(2)
    bad = [
        replace(up, masked=up.masked[:-1]),
        replace(up, shares=up.shares[:-1]),
        replace(up, shares=(up.shares[0] + b"x", *up.shares[1:])),
        replace(up, signature=bytes(64)),
        replace(up, masked=b"\xff" * len(up.masked)),  # residues >= q (signature also fails)
    ]
    for b in bad:
        with pytest.raises(InvalidUpload) as e:
            s.add(b)
        assert e.value.culprit == 2
    # Residues out of range under a valid signature: a client signing garbage is still named.
    raw = b"\xff" * len(up.masked)
    resigned = replace(up, masked=raw)
    resigned = replace(
        resigned, signature=ed25519_sign(r.ids[2], LABEL_UPLOAD, r.cfg.digest, resigned.payload())
    )
    with pytest.raises(InvalidUpload, match="residue") as e:
        s.add(resigned)
    assert e.value.culprit == 2
    with pytest.raises(InvalidUpload):
        s.add(replace(up, client_id=42))
    for u in (1, 3, 4):
        s.add(r.upload(u))
    with pytest.raises(UnexpectedMessage):
        s.add(r.upload(1))
    res = run_committee(r, s)
    assert res.included == (1, 3, 4) and 2 in res.rejected


def test_t9_a_client_sealing_a_bad_share_is_named_by_the_member() -> None:
    """T9: client 3 seals garbage to member 2 (valid signature over it): member 2 complains
    naming client 3 and signs nothing; the round ends naming client 3."""
    r = make_round()
    s = r.server()
    for u in (1, 2, 4, 5):
        s.add(r.upload(u))
    up = r.upload(3)
    junk = aead_seal(bytes(32), bytes(len(up.shares[1]) - 28), b"", SystemRandom())
    evil = replace(up, shares=(up.shares[0], junk, *up.shares[2:]))
    evil = replace(
        evil, signature=ed25519_sign(r.ids[3], LABEL_UPLOAD, r.cfg.digest, evil.payload())
    )
    s.add(evil)
    inc = s.close()
    r.members[1].check(s.check_request(1))
    with pytest.raises(Complaint) as c:
        r.members[2].check(s.check_request(2))
    assert c.value.culprits == (3,) and c.value.culprit == 3
    with pytest.raises(ReleaseRefused):
        r.members[2].sign(r.cfg.session_id, r.cfg.round, inc)


def test_t9_inconsistent_shares_or_masks_abort_the_round_with_nothing_published() -> None:
    """T9: client 3 masks under one secret and shares another. The unmasked sum is off the
    grid: the round aborts with UnmaskFailed and publishes nothing."""
    r = make_round()
    s = r.server()
    for u in (1, 2, 4):
        s.add(r.upload(u))
    a = r.client(3, "a").upload(np.zeros(r.cfg.d), r.keys)
    b = r.client(3, "b").upload(np.zeros(r.cfg.d), r.keys)
    mixed = replace(a, shares=b.shares, ephemeral=b.ephemeral)
    mixed = replace(
        mixed, signature=ed25519_sign(r.ids[3], LABEL_UPLOAD, r.cfg.digest, mixed.payload())
    )
    s.add(mixed)
    with pytest.raises(UnmaskFailed):
        run_committee(r, s)


def test_t10_the_aggregator_cannot_swap_or_alter_a_share_in_transit() -> None:
    """T10: the aggregator hands member 1 client 2's share under client 4's header, or
    flips one byte of a share: the member complains naming the client whose share it is."""
    r, s, inc = _closed()
    req = s.check_request(1)
    by = {x.client_id: x for x in req.shares}
    swapped = replace(by[4], sealed=by[2].sealed)
    flipped = replace(by[5], sealed=bytes([by[5].sealed[0] ^ 1]) + by[5].sealed[1:])
    shares = tuple(
        swapped if x.client_id == 4 else flipped if x.client_id == 5 else x for x in req.shares
    )
    with pytest.raises(Complaint) as c:
        r.members[1].check(CheckRequest(req.session_id, req.round, inc, shares))
    assert c.value.culprits == (4, 5)


def test_t11_release_needs_t_c_genuine_signatures_of_distinct_members() -> None:
    """T11: the same signature repeated, a non-member's signature, or forged bytes do not
    make up the quorum."""
    r, s, inc = _closed()
    _checked_and_signed(r, s, inc, [1])
    sig1 = r.members[1].sign(r.cfg.session_id, r.cfg.round, inc)
    outsider = SetSignature(6, ed25519_sign(r.ids[6], LABEL_SET, r.cfg.digest, set_payload(inc)))
    forged = SetSignature(2, bytes(64))
    with pytest.raises(ReleaseRefused):
        r.members[1].release(
            ReleaseRequest(r.cfg.session_id, r.cfg.round, inc, (sig1, sig1, outsider, forged))
        )


def test_t12_a_late_upload_is_refused_after_close() -> None:
    """T12: an upload after the set closed cannot join it (the set is what members sign)."""
    r = make_round()
    s = r.server()
    for u in (1, 2, 3):
        s.add(r.upload(u))
    s.close()
    with pytest.raises(UnexpectedMessage):
        s.add(r.upload(4))


def test_t13_secrets_come_from_the_os_csprng_only() -> None:
    """T13: clients and members refuse a deterministic source outside test mode, and the
    one-shot core never touches numpy's or Python's global generators."""
    r = make_round()
    with pytest.raises(PolicyViolation):
        OneShotClient(r.cfg, 1, r.ids[1], r.registry, rng=DeterministicRandom(1))
    with pytest.raises(PolicyViolation):
        CommitteeMember(1, r.ids[1], r.registry, rng=DeterministicRandom(1))
    root = Path(__file__).resolve().parents[2] / "secagg" / "oneshot"
    for f in root.glob("*.py"):
        tree = ast.parse(f.read_text())
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        mods = {
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        assert "random" not in mods and not {"default_rng", "rand", "randn", "randint"} & names, f
    assert sha256(LABEL_CONFIG)  # the shared primitives are the ones in use


def test_t2_the_split_bound_is_exactly_2tc_minus_c_corrupt_members() -> None:
    """T2, the limit (SPEC.md O7): with f = 2 t_c - c corrupt members (c = 5, t_c = 3, f = 1)
    the aggregator CAN get two sets released, each by a disjoint honest half plus the corrupt
    member, and their difference unmasks client 6 alone. This is why the default threshold is
    floor(2c/3) + 1 and why the guarantee is stated for f < 2 t_c - c, not f < t_c."""
    r, s, inc = _closed(threshold=3)
    small = tuple(u for u in inc if u != 6)
    corrupt = 5
    _checked_and_signed(r, s, inc, [1, 2])
    s.add_signature(
        SetSignature(
            corrupt, ed25519_sign(r.ids[corrupt], LABEL_SET, r.cfg.digest, set_payload(inc))
        )
    )
    full = s.release_request()
    sums_full = {m: r.members[m].release(full) for m in (1, 2)}
    sigs_small = [
        SetSignature(
            corrupt, ed25519_sign(r.ids[corrupt], LABEL_SET, r.cfg.digest, set_payload(small))
        )
    ]
    for m in (3, 4):
        req = CheckRequest(
            r.cfg.session_id,
            r.cfg.round,
            small,
            tuple(x for x in s.check_request(m).shares if x.client_id != 6),
        )
        r.members[m].check(req)
        sigs_small.append(r.members[m].sign(r.cfg.session_id, r.cfg.round, small))
    rel_small = ReleaseRequest(r.cfg.session_id, r.cfg.round, small, tuple(sigs_small))
    sums_small = {m: r.members[m].release(rel_small) for m in (3, 4)}
    assert len(sums_full) + len(sums_small) == 4  # both sets released by honest members
    # The corrupt member computes its share sums for both sets (it may check twice before it
    # signs), the aggregator reconstructs both secret sums and unmasks both sets.
    ring, cfg = r.cfg.ring, r.cfg
    st5 = r.members[corrupt]._rounds[(cfg.session_id, cfg.round)]
    r.members[corrupt].check(s.check_request(corrupt))
    own_full = st5.sums
    r.members[corrupt].check(
        CheckRequest(
            cfg.session_id,
            cfg.round,
            small,
            tuple(x for x in s.check_request(corrupt).shares if x.client_id != 6),
        )
    )
    own_small = st5.sums

    def unpack(ss):  # type: ignore[no-untyped-def]
        return unpack_residues(ss.residues, ring.n, ring.primes, ring.residue_bits)

    def rebuild(by_member):  # type: ignore[no-untyped-def]
        xs = tuple(cfg.position(m) for m in sorted(by_member))
        out = []
        for i, q in enumerate(ring.primes):
            w = lagrange_at_zero(xs, q)
            acc = np.zeros(ring.n, dtype=np.uint64)
            for wj, m in zip(w, sorted(by_member)):
                acc = (acc + np.uint64(wj) * by_member[m][i]) % np.uint64(q)
            out.append(acc)
        return out[0], out[1]

    s_full = rebuild({1: unpack(sums_full[1]), 2: unpack(sums_full[2]), corrupt: own_full})
    s_small = rebuild({3: unpack(sums_small[3]), 4: unpack(sums_small[4]), corrupt: own_small})
    y6 = unpack_residues(r.upload(6).masked, cfg.chunks * ring.n, ring.primes, ring.residue_bits)
    y_small = tuple(
        (s._sum[i] + np.uint64(q) - y6[i]) % np.uint64(q) for i, q in enumerate(ring.primes)
    )
    x_full = unmask(cfg, (s._sum[0], s._sum[1]), s_full, 6)
    x_small = unmask(cfg, (y_small[0], y_small[1]), s_small, 5)
    assert np.array_equal(x_full - x_small, encoded(r, 6))  # client 6's input, alone


def test_t2_default_threshold_leaves_no_room_for_the_split() -> None:
    """T2: the aggregator's default t_c = floor(2c/3) + 1 tolerates f = 2 t_c - c - 1 corrupt
    members and c - t_c dropouts; both are positive from c = 5 on."""
    from aggregator.oneshot_service import default_threshold

    for c in range(1, 20):
        t = default_threshold(c)
        assert c / 2 < t <= c
        if c >= 5:
            assert 2 * t - c - 1 >= 1 and c - t >= 1


def test_t2_a_client_can_demand_a_corruption_margin() -> None:
    """T2: a client whose policy wants 2 corrupt members tolerated refuses t_c = 3 of c = 5
    (2 t_c - c - 1 = 0 tolerated) and accepts t_c = 4 (2 tolerated)."""
    from secagg.oneshot import OneShotPolicy

    for t, ok in ((3, False), (4, True)):
        r = make_round(threshold=t)
        strict = OneShotPolicy(max_corrupt_members=2)
        if ok:
            OneShotClient(r.cfg, 6, r.ids[6], r.registry, policy=strict)
        else:
            with pytest.raises(PolicyViolation, match="tolerates"):
                OneShotClient(r.cfg, 6, r.ids[6], r.registry, policy=strict)
