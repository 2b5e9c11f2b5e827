"""MTP speculative decoding together with prefix caching ("align" mode), on agent-shaped
multi-turn traffic: every output equals the same request run with neither MTP nor prefix
caching, token for token.

Needs the CPU stand-ins for vLLM 0.32's Triton-only hybrid-state copy kernels
(vllm_qwen3next/fixes/mamba_copy.py, unit tests in tests/test_fixes_mamba_copy.py); without
them vLLM's runner fails at the first block boundary ("'function' object is not subscriptable").

The traffic (tests/engine_runner.py `run_sessions`, one engine per configuration): sessions
share a long system prompt; each turn's prompt is the previous prompt + the model's output +
a tool-result-shaped text, cut so that the prompt ends on, one token before or one token
after a cache-block boundary; sessions start in different rounds (interleaved at different
depths); one session repeats another (identical prompts in flight together); one starts
from another's prompt + output (an exact prefix of that session's next prompt, in flight
with it); some requests are aborted mid-decode and their sessions continue from the kept
tokens. The trained tiny checkpoint, its draft made noisy (DRAFT_NOISE), makes the drafts mostly
right, so accepted drafts cross block boundaries (the post-process copies) and rejected ones
happen too.
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm_qwen3next.tools.train_tiny import corpus_prompts

TURNS = 4
TEXT = 400  # tokens of text offered per turn, cut to the asked length (up to a 256-token block)


def _texts(n: int, seed: int) -> list[list[int]]:
    return corpus_prompts(n, TEXT, seed=seed)


def _sessions() -> dict:
    system = corpus_prompts(1, 160, seed=100)[0]  # shared, longer than a block
    tool = _texts(6 * TURNS, seed=101)
    # prompt length of turn t, in blocks of the engine's block size: (blocks, delta)
    on, before, after = 0, -1, 1

    def turns(i: int, deltas, max_tokens=(14, 9, 17, 12), aborts=()):
        return [
            {
                "text": tool[i * TURNS + t],
                "length": [t + 2, deltas[t]],
                "max_tokens": max_tokens[t],
                "abort_after": dict(aborts).get(t),
            }
            for t in range(TURNS)
        ]

    sessions = [
        {"start": 0, "system": system, "turns": turns(0, (on, before, after, on))},
        {"start": 0, "system": system, "turns": turns(1, (before, after, on, before))},
        {"start": 1, "system": system, "turns": turns(2, (after, on, before, after), aborts=[(1, 5)])},
        {"start": 1, "system": system, "turns": turns(3, (on, on, after, before), aborts=[(0, 3), (2, 8)])},
    ]
    sessions.append(dict(sessions[0]))  # identical prompts in flight together, every round
    fork = {"start": 1, "fork": [1, 0], "turns": turns(5, (after, before, on, on))}
    fork["turns"][0] = {"text": [], "length": None, "max_tokens": 11, "abort_after": None}
    sessions.append(fork)  # session 1's turn-0 prompt + output: a prefix of its turn-1 prompt
    return {"sessions": sessions}


def _llm(checkpoint, dtype: str, k: int | None) -> dict:
    args = dict(model=str(checkpoint), dtype=dtype, max_model_len=2048, enforce_eager=True, seed=0,
                enable_prefix_caching=bool(k))
    if k:
        args["speculative_config"] = {"method": "qwen3_next_mtp", "num_speculative_tokens": k}
    return args


# Noise on the MTP layer's input projection, in units of that weight's std. The trained drafts alone are right
# every time on some CPUs (the training's arithmetic differs between machines), which would leave rejections
# unexercised; with the noise they are mostly right, never all.
DRAFT_NOISE = 0.5


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    """The trained tiny checkpoint with a noisy draft: the main model's weights untouched (so the reference, which
    runs no MTP, is the trained model's), mtp.fc.weight + DRAFT_NOISE * std * N(0, 1), seeded."""
    src = store.trained_checkpoint()
    dst = tmp_path_factory.mktemp("noisy-draft")
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    tensors = load_file(src / "model.safetensors")
    w = tensors["mtp.fc.weight"]
    gen = torch.Generator().manual_seed(0)
    tensors["mtp.fc.weight"] = w + DRAFT_NOISE * w.std() * torch.randn(w.shape, generator=gen, dtype=w.dtype)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _run(store, checkpoint, dtype: str, k: int | None, block: int | None = None) -> dict:
    """One engine; the reference cuts its prompts by the prefix-caching engines' block size."""
    name = f"sessions-{dtype}-" + (f"mtp{k}-prefix-cache" if k else f"reference-block{block}")
    sessions = _sessions() | ({"block_size": block} if block else {})
    return store.engine(name, {"llm": _llm(checkpoint, dtype, k), "sessions": sessions})


def _compare(ref: dict, out: dict) -> tuple[int, int]:
    """Every turn's prompt and output equal; returns (turns, output tokens compared)."""
    turns = tokens = 0
    for i, (ref_s, out_s) in enumerate(zip(ref["sessions"], out["sessions"], strict=True)):
        for t, (a, b) in enumerate(zip(ref_s, out_s, strict=True)):
            assert a["prompt"] == b["prompt"], f"session {i} turn {t}: prompts differ"
            assert a["aborted"] == b["aborted"], f"session {i} turn {t}"
            if a["aborted"]:  # the reference stops at the limit, MTP may be a few tokens past it
                assert b["output_ids"][: len(a["kept"])] == a["kept"], f"session {i} turn {t} (aborted)"
                tokens += len(a["kept"])
            else:
                assert b["output_ids"] == a["output_ids"], f"session {i} turn {t}: outputs differ"
                tokens += len(a["output_ids"])
            turns += 1
    return turns, tokens


CONFIGS = [("float32", 1), ("float32", 2), ("float32", 3), ("bfloat16", 2)]


@pytest.mark.parametrize("dtype,k", CONFIGS)
def test_mtp_with_prefix_caching_is_lossless(store, checkpoint, dtype, k):
    out = _run(store, checkpoint, dtype, k)
    block = out["block_size"]  # vLLM's pick for this hybrid model in "align" mode
    ref = _run(store, checkpoint, dtype, None, block)
    # the plugin's model and the copy stand-ins ran, and prefix caching stayed on
    assert out["classes"]["model"] == "vllm_qwen3next.model.Qwen3NextForCausalLM"
    assert "CPU stand-ins for vLLM's Triton-only hybrid-state copy kernels" in out["log"]
    assert "Mamba cache mode is set to 'align'" in out["log"]
    lengths = sorted({len(turn["prompt"]) % block for s in ref["sessions"] for turn in s})
    assert {0, 1, block - 1} <= set(lengths)  # on, just after, just before a boundary
    assert sum(turn["aborted"] for s in ref["sessions"] for turn in s) == 3
    turns, tokens = _compare(ref, out)
    m = out["metrics"]
    hits, queries = m["vllm:prefix_cache_hits"], m["vllm:prefix_cache_queries"]
    accepted, drafts = m["vllm:spec_decode_num_accepted_tokens"], m["vllm:spec_decode_num_draft_tokens"]
    assert ref["metrics"].get("vllm:prefix_cache_hits", 0) == 0
    print(
        f"[{dtype} k={k}] block size {block}: {len(out['sessions'])} sessions, {turns} turns, "
        f"{tokens} output tokens equal to the reference; prefix-cache hits {hits:.0f} of "
        f"{queries:.0f} prompt tokens; accepted drafts {accepted:.0f} of {drafts:.0f}; "
        f"engine {out['generate_s']:.1f} s"
    )
    assert hits > 0 and accepted > 0
    assert accepted < drafts  # rejections happened too
