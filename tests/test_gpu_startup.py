"""GPU start-up hooks of vLLM that inspect model internals, called on our model in vLLM's CPU engine.

vLLM's GPU worker runs ``kernel_warmup`` before serving; for model_type qwen3_next it calls
``qwen_triton_warmup``, which finds GDN layers by attribute names. On our layers it crashed
(``norm.norm_before_gate``) and divided our per-rank head counts by the TP size again. The hooks
(tests/gpu_startup_hooks.py) run in the TP 2 engines of tests/test_equivalence.py (same spec, so
the session runs each engine once): per rank, vLLM's detection, config builder and whole warm-up
on our ``static_forward_context``, then our own warm-up through vLLM's JIT warm-up registry.
"""

import pytest

from gpu_startup_hooks import STARTUP_HOOKS
from harness import make_prompts
from test_equivalence import _llm


def _tp2_run(store, preset: str) -> dict:
    # Must stay the spec of tests/test_equivalence.py::test_tensor_parallel_2_equals_1.
    ckpt = store.checkpoint(preset)
    spec = {
        "prompts": make_prompts(ckpt, (1, 65, 300), seed=14),
        "max_tokens": 16,
        "llm": _llm(ckpt, enable_prefix_caching=False, tensor_parallel_size=2),
        "env": {"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
        "apply": STARTUP_HOOKS,
    }
    return store.engine(f"equiv-tp2-{preset}", spec)


@pytest.mark.parametrize("preset", ["tiny", "slice"])
def test_vllm_qwen_warmup_skips_our_layers(store, preset):
    out = _tp2_run(store, preset)
    ranks = out["applied"]["gpu_startup_hooks:vllm_qwen_gdn_warmup"]
    assert len(ranks) == 2
    for rank in ranks:
        print(f"[{preset}] vLLM qwen_triton_warmup on our layers, per rank: {rank}")
        assert rank["our_gdn_layers"] > 0 and rank["caches_bound"] == rank["our_gdn_layers"]
        assert rank["narrowed"] and rank["detected"] == 0
        assert rank.get("config_error") is None and rank["config"] is None
        assert rank["warmup_error"] is None
    assert "vLLM's Qwen GDN Triton warm-up skips our Qwen3NextGatedDeltaNet layers" in out["log"]
    assert "Skipping Qwen GDN Triton warmup: no Qwen GDN layer found." in out["log"]


def test_vllm_qwen_warmup_as_shipped_breaks_on_our_layers(store):
    """vLLM's own fault, which the narrowing works around: fails once vLLM stops matching our
    layers or learns to read them (then re-check whether warmup.py's narrowing is still needed)."""
    rank = _tp2_run(store, "tiny")["applied"]["gpu_startup_hooks:vllm_qwen_gdn_warmup"][0]
    assert rank["detected_by_vllm_as_shipped"] == rank["our_gdn_layers"]
    assert rank["config_error_as_shipped"].startswith("AttributeError")
    assert "norm_before_gate" in rank["config_error_as_shipped"]
    # TP 2: vLLM would divide our per-rank key-head count by the TP size a second time.
    assert rank["h_as_vllm_computes"] == [rank["h_per_rank"][0] // 2] != rank["h_per_rank"]


@pytest.mark.parametrize("preset", ["tiny", "slice"])
def test_our_warmup_per_rank_sizes(store, preset):
    out = _tp2_run(store, preset)
    ranks = out["applied"]["gpu_startup_hooks:our_triton_warmup"]
    assert len(ranks) == 2
    for rank in ranks:
        assert rank["error"] is None, rank["error"]
        print(
            f"[{preset}] our GDN warm-up, per rank: {len(rank['cases'])} cases in {rank['warmup_s']:.2f} s, "
            f"(H, HV, K, V, state dtype) {rank['geometries']}, Triton serves CPU: {rank['triton_serves_cpu']}"
        )
        assert rank["registered"] > 0
        # One geometry for every layer of the rank, with this rank's head counts (total / TP).
        assert len(rank["geometries"]) == 1
        h, hv = rank["geometries"][0][:2]
        assert [h, hv] == rank["expected_per_rank"]
        # Decode batches 1, 2, 4, ... up to max_num_seqs; no verification without MTP. Our CPU ops
        # run the cases of up to 16 sequences (gpu_startup_hooks.CPU_OPS_MAX_SEQS).
        batches = [1 << i for i in range(rank["max_num_seqs"].bit_length())]
        assert [c[1] for c in rank["keys"] if c[0] == "decode"] == batches
        assert [c[1:] for c in rank["keys"] if c[0] == "prefill"][:4] == [[1, 1], [1, 2], [1, 16], [2, 40]]
        assert not any(c[0] == "verify" for c in rank["keys"])
        assert rank["cases"] == [c for c in rank["keys"] if c[1] <= 16]
        assert rank["cache_untouched"]
