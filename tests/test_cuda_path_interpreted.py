"""The CUDA op path end to end in vLLM's CPU engine: QWEN3NEXT_TRITON_CPU=1 with TRITON_INTERPRET=1
registers our Triton kernels for CPU tensors (kernels/backends.py), so the engine runs the Python and
Triton code a GPU runs (the [HV, V, K] state layout included), interpreted. Against transformers fp32:

- tiny checkpoint, chunked prefill (max_num_batched_tokens 32: a 100-token prompt in 4 chunks, each
  continuing the conv and recurrent states of the one before) and plain decode;
- the trained tiny checkpoint with MTP k = 2 (verification of 1 + 2 tokens per sequence, accepted
  runs of every length on corpus prompts, rejections on a random one).

Tolerances: max |log-prob diff| < 1e-3 over every prompt and output token (as tests/test_parity.py;
the fp32 CPU path is at ~2e-5); greedy tokens identical. The Triton interpreter is slow: prompts and
outputs are short. The worker reports which function serves CPU tensors for each op.
"""

import pytest

from gpu_startup_hooks import STARTUP_HOOKS
from harness import make_prompts
from reference import hf_reference

TRITON_CPU = {"QWEN3NEXT_TRITON_CPU": "1", "TRITON_INTERPRET": "1"}
HOOKS = ["gpu_startup_hooks:cpu_kernels", *STARTUP_HOOKS]
TOLERANCE = 1e-3


def _llm(ckpt, **extra) -> dict:
    return dict(
        model=str(ckpt), dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
        max_num_batched_tokens=32, max_num_seqs=4, enable_prefix_caching=False,
    ) | extra


def _errors(out: dict, reference: list[dict]) -> tuple[list[float], list[float]]:
    prompt, output = [], []
    for r, ref in zip(out["results"], reference):
        prompt += [abs(a - b) for a, b in zip(r["prompt_logprobs"][1:], ref["prompt_logprobs"][1:])]
        output += [abs(a - b) for a, b in zip(r["output_logprobs"], ref["output_logprobs"])]
    return prompt, output


@pytest.fixture(scope="module")
def chunked_run(store):
    ckpt = store.checkpoint("tiny")
    prompts = make_prompts(ckpt, (1, 40, 100), seed=21)
    spec = {"llm": _llm(ckpt), "prompts": prompts, "max_tokens": 8, "env": TRITON_CPU, "apply": HOOKS}
    return store.engine("interpreted-chunked-decode", spec), hf_reference(ckpt, prompts, 8), prompts


@pytest.fixture(scope="module")
def mtp_run(store):
    from vllm_qwen3next.tools.train_tiny import corpus_prompts

    ckpt = store.trained_checkpoint()
    prompts = corpus_prompts(2, 40, seed=1) + make_prompts(ckpt, (5,), seed=3)
    spec = {
        "llm": _llm(ckpt, speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": 2}),
        "prompts": prompts, "max_tokens": 12, "env": TRITON_CPU, "apply": HOOKS,
    }
    return store.engine("interpreted-mtp-k2", spec), hf_reference(ckpt, prompts, 12), prompts


@pytest.mark.parametrize("run", ["chunked_run", "mtp_run"])
def test_triton_kernels_serve_cpu_tensors(request, run):
    out = request.getfixturevalue(run)[0]
    report = out["applied"]["gpu_startup_hooks:cpu_kernels"][0]
    print(f"[{run}] CPU tensors served by: " + ", ".join(f"{op}={o['cpu']}" for op, o in report["ops"].items()))
    assert report["ops"] and all(o["is_triton"] for o in report["ops"].values())
    assert report["ssm_state_vk"]  # the CUDA layout, [HV, V, K]
    assert "our Triton kernels serve CPU tensors (interpreted)" in out["log"]
    assert out["classes"]["model"] == "vllm_qwen3next.model.Qwen3NextForCausalLM"


def test_chunked_prefill_and_decode_match_transformers(chunked_run):
    out, reference, prompts = chunked_run
    prompt_err, output_err = _errors(out, reference)
    assert len(prompt_err) == sum(len(p) - 1 for p in prompts) and len(output_err) == 8 * len(prompts)
    print(
        f"interpreted Triton, chunked prefill + decode vs transformers fp32: max |log-prob diff| prompt "
        f"{max(prompt_err):.2e} ({len(prompt_err)} tokens), output {max(output_err):.2e} ({len(output_err)} tokens); "
        f"engine start {out['engine_start_s']:.0f} s, generate {out['generate_s']:.0f} s"
    )
    assert max(prompt_err) < TOLERANCE and max(output_err) < TOLERANCE
    assert [r["output_ids"] for r in out["results"]] == [r["output_ids"] for r in reference]


def test_mtp_k2_verification_matches_transformers(mtp_run):
    out, reference, prompts = mtp_run
    m = out["metrics"]
    accepted, drafts = m["vllm:spec_decode_num_accepted_tokens"], m["vllm:spec_decode_num_draft_tokens"]
    prompt_err, output_err = _errors(out, reference)
    print(
        f"interpreted Triton, MTP k=2 vs transformers fp32: {accepted:.0f} of {drafts:.0f} drafts accepted; "
        f"max |log-prob diff| prompt {max(prompt_err):.2e}, output {max(output_err):.2e} "
        f"({len(output_err)} tokens); engine start {out['engine_start_s']:.0f} s, generate {out['generate_s']:.0f} s"
    )
    assert 0 < accepted < drafts  # accepted runs and rejections both verified
    assert max(prompt_err) < TOLERANCE and max(output_err) < TOLERANCE
    assert [r["output_ids"] for r in out["results"]] == [r["output_ids"] for r in reference]


def test_warmup_runs_the_interpreted_kernels(mtp_run):
    """Our GDN warm-up through vLLM's JIT registry, with Triton serving CPU tensors: verify cases too."""
    rank = mtp_run[0]["applied"]["gpu_startup_hooks:our_triton_warmup"][0]
    assert rank["error"] is None, rank["error"]
    assert rank["triton_serves_cpu"]
    print(f"interpreted warm-up: {len(rank['cases'])} cases in {rank['warmup_s']:.1f} s: {rank['cases']}")
    assert rank["cases"] == rank["keys"]  # every key ran, through the interpreted Triton kernels
    # max_num_seqs 4: verification of 1, 2 and 4 sequences of 1 + 2 tokens.
    assert [c[1:] for c in rank["cases"] if c[0] == "verify"] == [[1, 3], [2, 3], [4, 3]]
    assert rank["cache_untouched"]
