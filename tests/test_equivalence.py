"""The same answer however the engine schedules the work (float32, CPU): batched vs
one by one, chunked vs whole prefill, prefix cache on vs off, with preemption,
TP 2 vs TP 1, long prompts against transformers, and long decodes under extreme gates."""

import math
import shutil

import pytest
from safetensors.torch import load_file, save_file

from gpu_startup_hooks import STARTUP_HOOKS
from harness import make_prompts
from reference import hf_reference

LENS = (1, 63, 64, 65, 300, 700)
MAX_TOKENS = 24


def _llm(ckpt, **extra) -> dict:
    return dict(model=str(ckpt), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0) | extra


def _ids(out) -> list[list[int]]:
    return [r["output_ids"] for r in out["results"]]


@pytest.fixture(scope="module")
def tiny(store):
    return store.checkpoint("tiny")


@pytest.fixture(scope="module")
def reference_run(store, tiny):
    """Plain engine: all prompts batched, then each prompt alone (prefix caching off)."""
    prompts = make_prompts(tiny, LENS, seed=11)
    spec = {
        "llm": _llm(tiny, enable_prefix_caching=False),
        "prompts": prompts,
        "max_tokens": MAX_TOKENS,
        "extra_passes": [[i] for i in range(len(prompts))],
    }
    return prompts, store.engine("equiv-reference", spec)


def test_batched_equals_one_by_one(reference_run):
    _, out = reference_run
    one_by_one = [p[0] for p in out["passes"]]
    assert _ids(out) == one_by_one


def test_chunked_prefill_equals_whole_prefill(store, tiny, reference_run):
    prompts, whole = reference_run
    chunked = store.engine(
        "equiv-chunked",
        {
            # 96-token steps: chunk boundaries off the GDN chunk size (64).
            "llm": _llm(tiny, enable_prefix_caching=False, max_num_batched_tokens=96, max_num_seqs=4),
            "prompts": prompts,
            "max_tokens": MAX_TOKENS,
        },
    )
    assert _ids(chunked) == _ids(whole)


def test_prefix_cache_on_equals_off_and_hits(store, tiny):
    base = make_prompts(tiny, (400,), seed=12)[0]
    suffixes = make_prompts(tiny, (7, 40, 65, 130), seed=13)
    prompts = [base + s for s in suffixes]
    spec = {
        "prompts": prompts,
        "max_tokens": MAX_TOKENS,
        # The first prompt alone fills the cache; the others then share its 400-token prefix.
        "extra_passes": [[0], [1, 2, 3], [0, 1, 2, 3]],
    }
    on = store.engine("equiv-prefix-on", spec | {"llm": _llm(tiny, enable_prefix_caching=True)})
    off = store.engine("equiv-prefix-off", spec | {"llm": _llm(tiny, enable_prefix_caching=False)})
    assert "Mamba cache mode is set to 'align'" in on["log"]
    hits = on["metrics"]["vllm:prefix_cache_hits"]
    print(f"prefix cache: {hits} hit tokens of {on['metrics']['vllm:prefix_cache_queries']} queried")
    assert hits >= 3 * 256  # at least two 128-token blocks for each later prompt
    assert _ids(on) == _ids(off)
    assert on["passes"] == off["passes"]
    assert on["passes"][2] == _ids(off)


def test_preemption_keeps_outputs(store, tiny):
    """Six requests that outgrow a KV cache of about 1100 tokens while decoding: some
    are preempted (their state recomputed from scratch) and resumed. Each must equal
    the same request run alone in the same engine (where it fits)."""
    prompts = make_prompts(tiny, (150, 151, 152, 153, 154, 155), seed=18)
    out = store.engine(
        "equiv-preempt",
        {
            "llm": _llm(
                tiny, enable_prefix_caching=False, num_gpu_blocks_override=12, max_num_seqs=6,
                max_model_len=1024,
            ),
            "prompts": prompts,
            "max_tokens": 150,
            "extra_passes": [[i] for i in range(len(prompts))],
        },
    )
    preemptions = out["metrics"].get("vllm:num_preemptions", 0)
    print(f"preemptions: {preemptions}")
    assert preemptions > 0
    assert _ids(out) == [p[0] for p in out["passes"]]


@pytest.mark.parametrize("preset", ["tiny", "slice"])
def test_tensor_parallel_2_equals_1(store, preset):
    ckpt = store.checkpoint(preset)
    prompts = make_prompts(ckpt, (1, 65, 300), seed=14)
    spec = {"prompts": prompts, "max_tokens": 16}
    tp1 = store.engine(f"equiv-tp1-{preset}", spec | {"llm": _llm(ckpt, enable_prefix_caching=False)})
    tp2 = store.engine(
        f"equiv-tp2-{preset}",
        spec
        | {
            "llm": _llm(ckpt, enable_prefix_caching=False, tensor_parallel_size=2),
            "env": {"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
            "apply": STARTUP_HOOKS,  # GPU start-up hooks per rank, checked by tests/test_gpu_startup.py
        },
    )
    assert _ids(tp2) == _ids(tp1)
    diffs = [
        abs(a - b)
        for r1, r2 in zip(tp1["results"], tp2["results"])
        for a, b in zip(r1["prompt_logprobs"][1:], r2["prompt_logprobs"][1:])
    ]
    print(f"[{preset}] TP2 vs TP1 max |logprob diff| {max(diffs):.2e}")
    assert max(diffs) < 1e-3


def test_long_prompts_match_transformers(store, tiny):
    prompts = make_prompts(tiny, (3000, 5000), seed=15)
    out = store.engine(
        "equiv-long",
        {"llm": _llm(tiny, max_model_len=6144), "prompts": prompts, "max_tokens": 8},
    )
    reference = hf_reference(tiny, prompts, 8)
    errors = [
        abs(a - b)
        for r, ref in zip(out["results"], reference)
        for a, b in zip(r["prompt_logprobs"][1:], ref["prompt_logprobs"][1:])
    ]
    errors.sort()
    p99 = errors[int(0.99 * len(errors))]
    print(f"3000/5000-token prompts vs transformers: max |logprob diff| {errors[-1]:.2e}, 99th percentile {p99:.2e}")
    # Float32 rounding can flip a near-tied top-2 expert choice of the random router (the
    # tiny checkpoint has 3% of its routing gaps below 0.01): one token then moves by up to
    # ~1e-2 and the recurrent state carries a decaying trace of it (measured: 18 of 7998
    # tokens above 1e-3, max 9e-3, all near position 3891 of the 5000-token prompt; the
    # 3000-token prompt stays within 2e-5). A broken state hand-off would move every later
    # token instead.
    assert p99 < 1e-3
    assert errors[-1] < 5e-2
    assert _ids(out) == [r["output_ids"] for r in reference]


def _extreme_gate_checkpoint(store, tiny):
    """The tiny weights with decays pushed to both ends: exp(g) ~ 1 (no forgetting)
    on half the value heads and ~ 0 on the rest; beta saturated near 0 and 1."""
    path = store.root / "tiny-extreme-gates"
    if not path.exists():
        shutil.copytree(tiny, path)
        tensors = load_file(path / "model.safetensors")
        for name in list(tensors):
            if name.endswith("linear_attn.A_log"):
                a_log = tensors[name].clone()
                half = a_log.shape[0] // 2
                a_log[:half] = -20.0  # A ~ 2e-9: g ~ 0
                a_log[half:] = 4.0  # A ~ 55: g very negative
                tensors[name] = a_log
            if name.endswith("linear_attn.in_proj_ba.weight"):
                tensors[name] = tensors[name] * 40.0  # saturates sigmoid(b) and softplus(a)
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_extreme_gates_and_long_decode_stay_finite(store, tiny):
    ckpt = _extreme_gate_checkpoint(store, tiny)
    prompts = make_prompts(tiny, (65, 500), seed=16)
    out = store.engine(
        "equiv-extreme",
        {"llm": _llm(ckpt, max_model_len=4096), "prompts": prompts, "max_tokens": 3000},
    )
    for r in out["results"]:
        assert len(r["output_ids"]) == 3000
        assert all(math.isfinite(x) for x in r["output_logprobs"])
        assert all(math.isfinite(x) for x in r["prompt_logprobs"][1:])


def test_fp32_vs_bf16_recurrent_state(store, tiny):
    """The recurrent state in bf16 (vLLM's built-in default) against our fp32 default,
    both judged against transformers in float32."""
    prompts = make_prompts(tiny, (700, 2000), seed=17)
    spec = {"prompts": prompts, "max_tokens": 1}
    fp32 = store.engine("equiv-state-fp32", spec | {"llm": _llm(tiny)})
    bf16 = store.engine(
        "equiv-state-bf16", spec | {"llm": _llm(tiny, mamba_ssm_cache_dtype="bfloat16")}
    )
    reference = hf_reference(tiny, prompts, 1)

    def err(out):
        return max(
            abs(a - b)
            for r, ref in zip(out["results"], reference)
            for a, b in zip(r["prompt_logprobs"][1:], ref["prompt_logprobs"][1:])
        )

    print(f"max |logprob diff| vs transformers: fp32 state {err(fp32):.2e}, bf16 state {err(bf16):.2e}")
    assert err(fp32) < 1e-3
    assert err(bf16) > err(fp32)
