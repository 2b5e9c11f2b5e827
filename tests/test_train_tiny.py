"""The tiny trainer: a few steps give a checkpoint in build_checkpoint's layout that transformers
loads, with decreasing losses; the corpus prompts are deterministic and extend each other."""

import json
import random

import pytest
import torch
from safetensors import safe_open

from vllm_qwen3next.tools.make_checkpoint import weight_specs
from vllm_qwen3next.tools.train_tiny import (
    KINDS,
    NUM_SYMBOLS,
    SYMBOL_BASE,
    corpus_prompts,
    corpus_sequence,
    train_tiny_checkpoint,
)

transformers = pytest.importorskip("transformers")


def test_corpus_prompts():
    a, b = corpus_prompts(6, 9, seed=2), corpus_prompts(6, 70, seed=2)
    assert a == corpus_prompts(6, 9, seed=2) and a != corpus_prompts(6, 9, seed=3)
    assert [p[:9] for p in b] == a
    for i, kind in enumerate(KINDS):  # each kind in its own block of token ids
        seq = corpus_sequence(random.Random(0), 63, kind)
        lo = SYMBOL_BASE + i * NUM_SYMBOLS
        assert len(seq) == 63 and all(lo <= t < lo + NUM_SYMBOLS for t in seq)


def test_train_tiny_checkpoint(tmp_path):
    history = []
    out = train_tiny_checkpoint(tmp_path / "ckpt", steps=12, batch_size=4, seq_len=63, log_every=4,
                                history=history)
    steps, final = history[:-1], history[-1]
    assert len(steps) == 12 and final["eval"]
    for k in range(3):  # main, draft step 1, draft step 2
        first, last = steps[0]["losses"][k], sum(h["losses"][k] for h in steps[-3:]) / 3
        assert last < 0.7 * first, (k, first, last)

    cfg = json.loads((out / "config.json").read_text())
    with safe_open(out / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert {f.get_tensor(n).dtype for n in names} == {torch.float32}
    assert set(names) == set(weight_specs(cfg, with_mtp=True))
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()

    model, info = transformers.Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                                    output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert all(k.startswith("mtp.") for k in info["unexpected_keys"])  # transformers skips mtp.*
    with torch.no_grad():
        logits = model(torch.tensor(corpus_prompts(2, 20, seed=1))).logits
    assert torch.isfinite(logits).all()
