"""Issue 16, item 1: a user's own causal LM (a folder transformers loads), any torch module with
the LoRA targets named by the caller, and local datasets (plain text, JSON Lines, a `datasets`
folder), through the same training, CLI and job-file paths as the shipped models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from client import data as client_data
from client.training import (
    AdapterSpec,
    InvalidTrainingConfig,
    ModelUnavailable,
    adapter_spec,
    attach_lora,
    evaluate_loss,
    initial_adapter,
    load_base_model,
    load_texts,
    tokenize_blocks,
    train_dp,
)
from proofs_tests.byo import SENTENCES, save_tiny_llama, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return save_tiny_llama(tmp_path_factory.mktemp("byo") / "my-model")


def test_own_model_folder_and_jsonl_train_with_dp(model_dir: Path, tmp_path: Path) -> None:
    model, tok = load_base_model(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    net = attach_lora(model, targets=["q_proj", "v_proj"], r=4, public_seed=3)
    spec = adapter_spec(net)
    assert spec.size > 0 and all("q_proj" in n or "v_proj" in n for n in spec.names)
    docs = load_texts(write_jsonl(tmp_path / "mine.jsonl", 40))
    assert len(docs) == 40 and docs[0].startswith(SENTENCES[0])
    blocks = tokenize_blocks(docs, tok, 16)
    before = evaluate_loss(net, blocks)
    res = train_dp(net, blocks, steps=4, batch_size=8, lr=0.5, noise_multiplier=1.0, seed=2)
    assert 0 < res.epsilon < float("inf")
    assert np.abs(res.delta_vector).max() > 0
    assert evaluate_loss(net, blocks) != before


def test_initial_adapter_is_the_same_for_every_client(model_dir: Path) -> None:
    lora = {"mode": "ffa", "r": 4, "alpha": 8, "targets": ["q_proj"], "public_seed": 5}
    v1, s1 = initial_adapter(model_dir, lora)
    v2, s2 = initial_adapter(str(model_dir), lora)
    assert s1.digest == s2.digest and np.array_equal(v1, v2)
    _, s3 = initial_adapter(model_dir, {**lora, "targets": ["v_proj"]})
    assert s3.digest != s1.digest
    assert AdapterSpec.from_json(s1.to_json()).digest == s1.digest


def test_separate_tokenizer_folder_and_bad_folders(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    weights = tmp_path / "weights"
    toks = tmp_path / "tok"
    weights.mkdir()
    toks.mkdir()
    for p in model_dir.iterdir():
        shutil.copy(p, (toks if p.name.startswith("tokenizer") else weights) / p.name)
    with pytest.raises(ModelUnavailable, match="tokenizer"):
        load_base_model(weights)
    model, tok = load_base_model(weights, tokenizer=toks)
    assert tok.encode("the cat") and type(model).__name__ == "LlamaForCausalLM"
    with pytest.raises(ModelUnavailable, match=r"config\.json"):
        load_base_model(toks)
    with pytest.raises(ModelUnavailable, match="unknown model"):
        load_base_model(tmp_path / "missing")


class _TinyLM(nn.Module):
    """Not a transformers model: embedding, a named projection, a head; returns logits."""

    def __init__(self, vocab: int = 257, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_any_torch_module_with_named_targets() -> None:
    from client.models import ByteTokenizer

    torch.manual_seed(0)
    model = _TinyLM()
    with pytest.raises(InvalidTrainingConfig, match="no default LoRA targets"):
        attach_lora(model)
    net = attach_lora(model, targets=["mix"], r=2)
    assert all(".mix." in n for n in adapter_spec(net).names)
    blocks = tokenize_blocks(list(SENTENCES) * 4, ByteTokenizer(257), 12)
    res = train_dp(net, blocks, steps=3, batch_size=4, lr=0.5, noise_multiplier=1.0, seed=1)
    assert np.abs(res.delta_vector).max() > 0 and res.epsilon < float("inf")
    assert np.isfinite(evaluate_loss(net, blocks))


def test_load_texts_formats(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("first document\n\nstill the first\n")
    assert load_texts(plain) == ["first document\n\nstill the first\n"]
    lines = tmp_path / "strings.jsonl"
    lines.write_text('"one"\n\n"two"\n')
    assert load_texts(lines) == ["one", "two"]
    custom = write_jsonl(tmp_path / "custom.jsonl", 3, field="body")
    assert len(load_texts(custom, text_field="body")) == 3
    with pytest.raises(InvalidTrainingConfig, match="'text'"):
        load_texts(custom)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "b.txt").write_text("bee")
    (folder / "a.md").write_text("ay")
    (folder / "ignored.bin").write_bytes(b"\x00")
    assert load_texts(folder) == ["ay", "bee"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(InvalidTrainingConfig, match=r"bad\.jsonl:2"):
        load_texts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(InvalidTrainingConfig, match="no text"):
        load_texts(empty)
    with pytest.raises(InvalidTrainingConfig, match="no dataset"):
        load_texts(tmp_path / "nothing.jsonl")


def test_load_texts_datasets_save_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"content": ["alpha", "", "beta"], "n": [1, 2, 3]})
    ds.save_to_disk(str(tmp_path / "single"))
    assert load_texts(tmp_path / "single", text_field="content") == ["alpha", "beta"]
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    dd.save_to_disk(str(tmp_path / "splits"))
    assert load_texts(tmp_path / "splits", text_field="content") == ["alpha", "beta"]
    with pytest.raises(InvalidTrainingConfig, match="columns"):
        load_texts(tmp_path / "single")


def test_cli_and_job_file_take_a_model_folder_and_data(model_dir: Path, tmp_path: Path) -> None:
    """`secagg-client train --model PATH --data PATH` and a serve-fl job naming the model: the
    aggregator's task and a client's contribution agree on the adapter, in process."""
    from aggregator import cli as agg_cli
    from client import cli as client_cli
    from client.fl import FlClientOptions, FlContributor, local_documents
    from dp.ledger import generate_signing_key, save_signing_key
    from secagg import RoundConfig

    data = write_jsonl(tmp_path / "member.jsonl", 48)
    args = client_cli._parser().parse_args(
        [
            "train",
            "--consortium",
            "c",
            "--id",
            "1",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--ledger",
            "l.db",
            "--ledger-key",
            "k.pem",
        ]
    )
    assert args.model == str(model_dir) and args.data == data and args.slice is None
    job = {
        "model": str(model_dir),
        "l2_clip": 1.0,
        "noise_multiplier": 0.5,
        "user_budget": 1e6,
        "train": {
            "steps": 2,
            "batch_size": 4,
            "lr": 0.5,
            "clip": 1.0,
            "noise_multiplier": 1.0,
            "record_budget": 50.0,
            "block_size": 16,
            "lora": {"mode": "ffa", "r": 2, "alpha": 4, "targets": ["q_proj"], "public_seed": 1},
        },
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    ns = argparse.Namespace(
        job=tmp_path / "job.json",
        initial_adapter=None,
        adapter_spec=None,
        ledger_key=None,
        threshold=2,
        run_id="byo",
        ledger=None,
        verify=False,
        neighbors=None,
    )
    task = agg_cli._fl_task(ns, 3)
    rnd = task.begin(0)
    key = tmp_path / "k.pem"
    save_signing_key(generate_signing_key(), key)
    opts = FlClientOptions(
        client_id=1, model=str(model_dir), ledger=tmp_path / "l.db", ledger_key=key, data=data
    )
    assert len(local_documents(opts)) == 48
    contributor = FlContributor(opts)
    cfg = RoundConfig(n=3, t=2, d=rnd.d, bits=rnd.bits, clip=1.0)
    ring = contributor.contribute(cfg, rnd.task, rnd.model)
    assert ring.shape == (rnd.d,) and ring.dtype == np.uint32
    assert contributor.last["update_l2"] > 0
    with pytest.raises(Exception, match="slice"):
        local_documents(FlClientOptions(1, "tiny", tmp_path, key, slice_index=0))
    assert client_data.load_texts(data)[:1] == local_documents(opts)[:1]
