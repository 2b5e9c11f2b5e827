"""qwen3_next_mtp speculative decoding with our draft: lossless, and accepted as often
as vLLM's built-in MTP on the same weights."""

import math
from collections import Counter

import pytest

from harness import make_prompts

MAX_TOKENS = 40


@pytest.fixture(scope="module")
def mtp_checkpoint(store):
    return store.trained_checkpoint()


@pytest.fixture(scope="module")
def prompts(mtp_checkpoint):
    from vllm_qwen3next.train_tiny import corpus_prompts

    # Corpus-like prompts (the draft predicts them well: long accepted runs) and
    # random ones (frequent rejections), of lengths around the GDN chunk size.
    return corpus_prompts(4, 70, seed=1) + corpus_prompts(2, 9, seed=2) + make_prompts(
        mtp_checkpoint, lens=(5, 64, 130), seed=3
    )


def _llm(checkpoint, dtype: str, k: int | None, method: str = "qwen3_next_mtp", **extra) -> dict:
    args = dict(model=str(checkpoint), dtype=dtype, max_model_len=1024, enforce_eager=True, seed=0)
    if k:
        args["speculative_config"] = {"method": method, "num_speculative_tokens": k}
    return args | extra


def _run(store, checkpoint, prompts, dtype, k, method="qwen3_next_mtp", env=None, **extra):
    name = f"mtp-{dtype}-k{k}-{method}" + ("-builtin" if env else "") + "".join(f"-{v}" for v in extra.values())
    spec = {"llm": _llm(checkpoint, dtype, k, method, **extra), "prompts": prompts, "max_tokens": MAX_TOKENS}
    if env:
        spec["env"] = env
    return store.engine(name, spec)


def acceptance(out: dict) -> float:
    m = out["metrics"]
    return m["vllm:spec_decode_num_accepted_tokens"] / m["vllm:spec_decode_num_draft_tokens"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_greedy_output_unchanged(store, mtp_checkpoint, prompts, dtype, k):
    base = _run(store, mtp_checkpoint, prompts, dtype, None)
    spec = _run(store, mtp_checkpoint, prompts, dtype, k)
    assert "vllm_qwen3next: Qwen3NextMTP draft" in spec["log"]  # our draft class ran
    assert spec["metrics"]["vllm:spec_decode_num_accepted_tokens"] > 0
    for i, (a, b) in enumerate(zip(base["results"], spec["results"])):
        assert a["output_ids"] == b["output_ids"], f"prompt {i} differs with k={k}"
    print(f"[{dtype} k={k}] acceptance {acceptance(spec):.3f}")


def test_mtp_alias_method(store, mtp_checkpoint, prompts):
    base = _run(store, mtp_checkpoint, prompts, "float32", None)
    spec = _run(store, mtp_checkpoint, prompts, "float32", 2, method="mtp")
    assert "vllm_qwen3next: Qwen3NextMTP draft" in spec["log"]
    assert [r["output_ids"] for r in spec["results"]] == [r["output_ids"] for r in base["results"]]


def test_prefix_caching_turned_off_with_a_log_line(store, mtp_checkpoint, prompts):
    spec = _run(store, mtp_checkpoint, prompts, "float32", 2, enable_prefix_caching=True)
    assert "vllm_qwen3next: prefix caching is turned off" in spec["log"]
    base = _run(store, mtp_checkpoint, prompts, "float32", None)
    assert [r["output_ids"] for r in spec["results"]] == [r["output_ids"] for r in base["results"]]


def test_acceptance_equals_builtin(store, mtp_checkpoint, prompts):
    """Same weights and wiring: our draft is accepted as often as the built-in's
    (bf16, the built-in's only CPU dtype; prefix caching off, its CPU MTP needs that)."""
    ours = _run(store, mtp_checkpoint, prompts, "bfloat16", 2, enable_prefix_caching=False)
    builtin = _run(
        store, mtp_checkpoint, prompts, "bfloat16", 2, env={"VLLM_PLUGINS": ""},
        enable_prefix_caching=False,
    )
    assert "vllm_qwen3next" not in builtin["log"]
    print(f"acceptance k=2 bf16: ours {acceptance(ours):.3f}, built-in {acceptance(builtin):.3f}")
    assert acceptance(ours) > 0.5
    assert abs(acceptance(ours) - acceptance(builtin)) < 0.05


def test_sampled_distribution_unchanged(store, mtp_checkpoint):
    """With sampling (temperature 2, so the draft is often rejected) the joint law of
    the first two tokens with MTP equals the target's exact law, computed from
    transformers: the 8 x 8 most likely pairs, the rest in one bucket.
    (top-k is left out: vLLM 0.32's CPU rejection sampler crashes with top-k.)"""
    import torch
    from transformers import AutoModelForCausalLM

    temperature, m, n = 2.0, 8, 3000
    prompt = make_prompts(mtp_checkpoint, lens=(12,), seed=5)[0]
    spec = {
        "llm": _llm(mtp_checkpoint, "float32", 2),
        "prompts": [prompt] * n,
        "max_tokens": 2,
        # Unseeded requests: with a seed per request, vLLM 0.32's CPU rejection sampler
        # skews the law (seen with its built-in MTP too: P(552 | 1164) 0.36 vs 0.03 exact).
        "sampling": {"temperature": temperature, "per_request_seed": False},
    }
    out = store.engine("mtp-sampling", spec)

    model = AutoModelForCausalLM.from_pretrained(mtp_checkpoint, dtype=torch.float32)

    def law(ids):
        with torch.no_grad():
            return torch.softmax(model(torch.tensor([ids])).logits[0, -1] / temperature, -1)

    exact = {}
    p1 = law(prompt)
    for t1 in p1.topk(m).indices.tolist():
        p2 = law(prompt + [t1])
        for t2 in p2.topk(m).indices.tolist():
            exact[(t1, t2)] = (p1[t1] * p2[t2]).item()
    exact["other"] = 1 - sum(exact.values())
    counts = Counter(
        tuple(r["output_ids"]) if tuple(r["output_ids"]) in exact else "other" for r in out["results"]
    )
    tv = 0.5 * sum(abs(counts[key] / n - p) for key, p in exact.items())
    # Expected total variation of n samples from the exact law itself (normal
    # approximation of each count), times 3.
    bound = 3 * 0.5 * sum(math.sqrt(2 * p * (1 - p) / (math.pi * n)) for p in exact.values())
    print(f"total variation {tv:.4f} (bound {bound:.4f}); acceptance {acceptance(out):.3f}")
    accepted = out["metrics"]["vllm:spec_decode_num_accepted_tokens"]
    assert 50 < accepted < out["metrics"]["vllm:spec_decode_num_draft_tokens"] - 50  # both outcomes occur
    assert tv < bound


def test_checkpoint_without_mtp_tensors_is_rejected(store):
    ckpt = store.checkpoint("tiny", with_mtp=False)
    spec = {"llm": _llm(ckpt, "float32", 1), "prompts": [[1, 2, 3]], "max_tokens": 2}
    with pytest.raises(RuntimeError) as err:
        store.engine("mtp-missing", spec)
    assert "The checkpoint has no mtp.* tensors" in str(err.value)
    assert "missing: mtp.fc.weight" in str(err.value)
