"""Bring-your-own fixtures: a tiny causal LM saved to a folder as a user would, and a JSON Lines
file of text, both made here (no network, a second or two)."""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = (
    "the cat sat on the mat and looked at the door",
    "a dog ran in the park after the red ball",
    "we read a book about the sea and the ships",
    "rain fell on the roof all night long",
    "she wrote a letter to her friend in the city",
    "the train left the station at nine in the morning",
)


def write_jsonl(path: Path, n: int = 60, *, field: str = "text", offset: int = 0) -> Path:
    """``n`` JSON objects ``{field: sentence}``, one a line (plus an unrelated key)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            s = SENTENCES[(i + offset) % len(SENTENCES)]
            f.write(json.dumps({field: f"{s} ({i})", "id": i}) + "\n")
    return path


def save_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) and a byte-level BPE tokenizer trained on SENTENCES, saved
    with save_pretrained: what ``load_base_model(folder)`` must accept."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from tokenizers import decoders as tok_decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tok_decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(SENTENCES) * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.eos_token_id,
        pad_token_id=fast.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder
