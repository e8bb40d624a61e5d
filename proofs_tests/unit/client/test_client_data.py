"""Local corpora (stdlib docstrings) and tokenisation: deterministic, disjoint, non-IID."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from client.data import (
    HELD_OUT_MODULES,
    STDLIB_FAMILIES,
    held_out_corpus,
    local_text_corpus,
    module_documents,
    tokenize_blocks,
)
from client.models import ByteTokenizer
from client.training import InvalidTrainingConfig


def test_slices_are_deterministic_disjoint_and_cover_everything() -> None:
    n = 4
    slices = [local_text_corpus(i, n) for i in range(n)]
    assert slices == [local_text_corpus(i, n) for i in range(n)]
    assert all(len(s) > 50 for s in slices)
    everything = [d for s in slices for d in s]
    assert everything == local_text_corpus(0, 1)
    # Contiguous in family order: different slices talk about different things.
    assert slices[0][:5] != slices[1][:5]


def test_slices_are_non_iid() -> None:
    """Byte histograms of two slices differ more than two halves of one slice do."""

    def hist(docs: list[str]) -> torch.Tensor:
        counts = torch.bincount(torch.tensor(list("".join(docs).encode())), minlength=256)
        return counts.double() / counts.sum()

    a, b = local_text_corpus(0, 2), local_text_corpus(1, 2)
    within = (hist(a[::2]) - hist(a[1::2])).abs().sum()
    between = (hist(a) - hist(b)).abs().sum()
    assert between > within


def test_held_out_is_disjoint_from_every_family() -> None:
    family_modules = {m for _, mods in STDLIB_FAMILIES for m in mods}
    assert not family_modules & set(HELD_OUT_MODULES)
    held = held_out_corpus()
    assert len(held) > 20
    assert not set(held) & set(local_text_corpus(0, 1))


def test_module_documents_skips_missing_modules() -> None:
    assert module_documents("no_such_module_for_sure") == []
    docs = module_documents("textwrap")
    assert docs and "wrap" in docs[0].lower()


@pytest.mark.parametrize(("i", "n"), [(-1, 2), (2, 2), (0, 0), (0, 10**6)])
def test_bad_slices_are_refused(i: int, n: int) -> None:
    with pytest.raises(InvalidTrainingConfig):
        local_text_corpus(i, n)


def test_tokenize_blocks_are_full_int64_blocks() -> None:
    tok = ByteTokenizer()
    blocks = tokenize_blocks(["abc", "de"], tok, 3)
    # a b c eos d e eos -> ids 98 99 100 0 101 102 0 -> two full blocks, remainder dropped
    assert blocks.dtype == torch.long
    assert blocks.tolist() == [[98, 99, 100], [0, 101, 102]]
    big = tokenize_blocks(local_text_corpus(0, 8), tok, 32, max_blocks=10)
    assert big.shape == (10, 32)
    assert int(big.max()) < tok.vocab_size
    with pytest.raises(InvalidTrainingConfig):
        tokenize_blocks(["abc"], tok, 1)


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_byte_tokenizer_round_trips(text: str) -> None:
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(1 <= i <= 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([0, *ids, 0, 999]) == tok.decode(ids)
