"""A malicious HE aggregator tries to make the key holder release one client's input
(threats.md HE-03; threat_models/he.md, "Tags").

Before the tags, the key holder checked only the decrypted count field and the aggregator's
list of contributors, so an aggregator released a victim's input by (a) adding the victim's
upload three times under made-up ids, or (b) adding a plaintext 2 to the count slot with its
parameters-only context (no key needed). Now every claimed contributor must be registered and
have signed its sealed per-round tag, and the check slots of every ciphertext must hold the sum
of the claimed contributors' tags: these tests play (a), (b) and the variants the issue names
(adding a multiple, adding an encryption of a guess, reordering chunks), for BFV and CKKS, and
assert that the key holder refuses (``ForgedSum``) and never releases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import tenseal as ts  # type: ignore[import-untyped]

from proofs_tests.he_helpers import REGISTRY, he_upload
from secagg.he import (
    DecryptionRefused,
    ForgedSum,
    HeAccumulator,
    HeKeyHolder,
    HeRoundConfig,
    HeRoundKeys,
    HeScheme,
    HeSumMessage,
    HeUpload,
)
from secagg.he._ops import ContextKind, load_chunk, load_context
from secagg.he.tags import TAG_SEED_BYTES, open_tag_seed, tag_values

SESSION = bytes(range(16))
SCHEMES = ["bfv-4096", "ckks-4096"]
VICTIM = 1


@dataclass
class Round:
    cfg: HeRoundConfig
    holder: HeKeyHolder
    keys: HeRoundKeys
    uploads: dict[int, HeUpload]
    inputs: dict[int, np.ndarray]

    ctx: Any = None

    def vectors(self, chunks: Sequence[Any]) -> list[Any]:
        """The aggregator's view: its parameters-only context parses and adds, nothing more."""
        if self.ctx is None:  # kept alive as long as the round: TenSEAL vectors point into it
            p = self.cfg.he_params
            self.ctx = load_context(self.keys.parameters_context, p, ContextKind.PARAMETERS)
        raw = [c if isinstance(c, bytes) else bytes(c.serialize()) for c in chunks]
        return [load_chunk(self.ctx, self.cfg.he_params, c) for c in raw]

    def message(self, chunks: Sequence[Any], ids: Sequence[int]) -> HeSumMessage:
        contribs = tuple(self.uploads[u].contribution() for u in ids)
        raw = tuple(c if isinstance(c, bytes) else bytes(c.serialize()) for c in chunks)
        return HeSumMessage(SESSION, 0, raw, tuple(ids), contribs)

    def honest_sum(self, ids: Sequence[int]) -> HeSumMessage:
        acc = HeAccumulator(self.cfg, self.keys.parameters_context, REGISTRY)
        for u in ids:
            acc.add(u, self.uploads[u])
        return acc.close()


def _round(params: str, d: int = 3000) -> Round:
    cfg = HeRoundConfig(n=5, d=d, params=params, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY, min_cohort=3)
    keys = holder.open_round(cfg)
    gen = np.random.default_rng(14)  # test data only
    inputs = {u: gen.uniform(-0.9, 0.9, d) for u in range(1, 6)}
    uploads = {u: he_upload(cfg, keys, u, x) for u, x in inputs.items()}
    return Round(cfg, holder, keys, uploads, inputs)


def _times(r: Round, vecs: list[Any], k: int) -> list[Any]:
    out = r.vectors(vecs)
    for _ in range(k - 1):
        for o, v in zip(out, vecs, strict=True):
            o.add_(v)
    return out


def _refused_and_spent(r: Round, forged: HeSumMessage) -> None:
    """The forgery is refused after decryption (the key is spent), so not even the honest sum
    is released afterwards: one decryption per round."""
    with pytest.raises(ForgedSum, match="check slots"):
        r.holder.release(forged)
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        r.holder.release(r.honest_sum([1, 2, 3]))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_victim_three_times_under_made_up_ids_is_refused(params: str) -> None:
    """(a) The victim's upload added three times. Under unregistered ids (with the victim's
    signed contribution copied) it is refused before decryption; under the ids of registered
    members 2 and 3, whose genuine signed contributions the aggregator holds, the tag check
    fails: the check slots hold three victim tags, not the victim's, 2's and 3's."""
    r = _round(params)
    triple = _times(r, r.vectors(r.uploads[VICTIM].chunks), 3)
    v = r.uploads[VICTIM].contribution()
    made_up = HeSumMessage(
        SESSION,
        0,
        tuple(bytes(x.serialize()) for x in triple),
        (VICTIM, 4242, 4243),
        (v, replace(v, client_id=4242), replace(v, client_id=4243)),
    )
    with pytest.raises(ForgedSum, match="not registered"):
        r.holder.release(made_up)
    copied = replace(
        made_up,
        included=(1, 2, 3),
        contributions=(v, replace(v, client_id=2), replace(v, client_id=3)),
    )
    with pytest.raises(ForgedSum, match="did not sign"):
        r.holder.release(copied)
    _refused_and_spent(r, r.message(triple, (VICTIM, 2, 3)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_colluders_cannot_multiply_an_honest_upload(params: str) -> None:
    """(a) with colluders: members 2 and 3 collude and hand the aggregator their tag seeds, so it
    can add their tags (and count) as plaintexts to three copies of the victim. The victim's own
    tag is then counted three times; the check slots expose it."""
    r = _round(params)
    cfg, lay, p = r.cfg, r.cfg.layout, r.cfg.he_params
    triple = _times(r, r.vectors(r.uploads[VICTIM].chunks), 3)
    width = lay.ciphertext_slots if p.scheme is HeScheme.BFV else lay.check_slots
    for u in (2, 3):
        seed = _seed_of(r, u)
        tags = tag_values(seed, cfg.digest, u, p, cfg.n, lay.chunks * width).reshape(
            lay.chunks, width
        )
        for ci, vec in enumerate(triple):
            plain = np.zeros(lay.ciphertext_slots, dtype=np.int64)
            plain[lay.ciphertext_slots - width :] = tags[ci]
            vec.add_(plain.tolist() if p.scheme is HeScheme.BFV else plain.astype(float).tolist())
    # the count already reads 3 (three copies): only the tags can tell
    _refused_and_spent(r, r.message(triple, (VICTIM, 2, 3)))


def _seed_of(r: Round, u: int) -> bytes:
    """A colluder's tag seed. The colluder simply remembers it; the test reads it back with the
    key holder's round key (test oracle only)."""
    _, _, sk, pk = r.holder._open[(SESSION, 0)]
    return open_tag_seed(r.cfg.digest, u, r.uploads[u].sealed_tag, sk, pk)


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_plaintext_added_to_the_count_slot_is_refused(params: str) -> None:
    """(b) The victim's upload alone plus a plaintext 2 in the count slot (no key needed), claimed
    as {victim, 2, 3} with 2's and 3's genuine signed contributions: their tags are missing."""
    r = _round(params)
    (vec, *rest) = r.vectors(r.uploads[VICTIM].chunks)
    bump = [2] + [0] * (r.cfg.layout.ciphertext_slots - 1)
    vec.add_(bump if r.cfg.scheme is HeScheme.BFV else [float(b) for b in bump])
    _refused_and_spent(r, r.message([vec, *rest], (VICTIM, 2, 3)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_count_bump_on_a_real_sum_claiming_one_more_is_refused(params: str) -> None:
    """(b) variant: the honest sum of {1, 2, 3} plus 1 in the count slot, claimed as {1, 2, 3, 4}
    with 4's genuine signed contribution (4 uploaded, but its ciphertext was left out)."""
    r = _round(params)
    vecs = r.vectors(r.honest_sum([1, 2, 3]).chunks)
    bump = [1] + [0] * (r.cfg.layout.ciphertext_slots - 1)
    vecs[0].add_(bump if r.cfg.scheme is HeScheme.BFV else [float(b) for b in bump])
    _refused_and_spent(r, r.message(vecs, (1, 2, 3, 4)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_a_multiple_of_a_valid_sum_is_refused(params: str) -> None:
    """Variant: twice the honest sum of {1, 2, 3} (or of {1, 2, 3, 4, 5}) claimed as is."""
    r = _round(params)
    doubled = _times(r, r.vectors(r.honest_sum([1, 2, 3]).chunks), 2)
    _refused_and_spent(r, r.message(doubled, (1, 2, 3)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_encryption_of_a_guess_is_refused(params: str) -> None:
    """Variant: the victim three times, plus the aggregator's own encryption (under the public
    key it relays) of its best guess of what the check slots miss: zero, or fresh random tags."""
    r = _round(params)
    cfg, lay, p = r.cfg, r.cfg.layout, r.cfg.he_params
    width = lay.ciphertext_slots if p.scheme is HeScheme.BFV else lay.check_slots
    guess = np.zeros(lay.ciphertext_slots, dtype=np.int64)
    rnd = tag_values(bytes(TAG_SEED_BYTES), cfg.digest, 99, p, cfg.n, width)
    guess[lay.ciphertext_slots - width :] = rnd
    for attempt in (np.zeros_like(guess), guess):
        r2 = _round(params)
        triple = _times(r2, r2.vectors(r2.uploads[VICTIM].chunks), 3)
        pub2 = load_context(r2.keys.public_context, p, ContextKind.PUBLIC)
        enc = (
            ts.bfv_vector(pub2, attempt.tolist())
            if p.scheme is HeScheme.BFV
            else ts.ckks_vector(pub2, attempt.astype(float).tolist())
        )
        extra = r2.vectors([bytes(enc.serialize())])[0]
        triple[0].add_(extra)
        _refused_and_spent(r2, r2.message(triple, (VICTIM, 2, 3)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_reordered_or_spliced_chunks_are_refused(params: str) -> None:
    """Variant: a two-ciphertext round. Swapping the chunks of the honest sum, or splicing the
    honest sum's first chunk with three times the victim's second, fails the check slots."""
    d = 9000 if params.startswith("bfv") else 4500  # two ciphertexts either way
    r = _round(params, d=d)
    assert r.cfg.layout.chunks == 2
    honest = r.honest_sum([1, 2, 3])
    swapped = replace(honest, chunks=honest.chunks[::-1])
    _refused_and_spent(r, swapped)
    r = _round(params, d=d)
    honest = r.honest_sum([1, 2, 3])
    victim2 = _times(r, r.vectors(r.uploads[VICTIM].chunks[1:]), 3)[0]
    _refused_and_spent(r, r.message([honest.chunks[0], victim2], (1, 2, 3)))


@pytest.mark.parametrize("params", SCHEMES)
def test_he03_honest_sum_is_released_exactly(params: str) -> None:
    """Control: the honest sum of {1, 2, 3, 4} passes every check and is the clipped sum."""
    r = _round(params)
    rel = r.holder.release(r.honest_sum([1, 2, 3, 4]))
    want = sum(r.cfg.encoding.clipped(r.inputs[u]) for u in (1, 2, 3, 4))
    assert rel.count == 4 and np.max(np.abs(rel.aggregate - want)) <= rel.error_bound
