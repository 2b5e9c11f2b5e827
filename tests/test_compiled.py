"""Our model under vLLM's default torch.compile (what users get on CPU, and what the CPU benchmark measures) against
the same engine in eager mode: our custom ops are opaque to the compiled graph and must give the same results."""

from harness import make_prompts

MAX_TOKENS = 24


def _spec(checkpoint, prompts, enforce_eager: bool) -> dict:
    llm = dict(model=str(checkpoint), dtype="float32", max_model_len=1024, enforce_eager=enforce_eager, seed=0)
    return {"llm": llm, "prompts": prompts, "max_tokens": MAX_TOKENS}


def test_compiled_matches_eager(store):
    ckpt = store.checkpoint("tiny")
    prompts = make_prompts(ckpt, lens=(1, 63, 65, 300))
    eager = store.engine("compile-eager", _spec(ckpt, prompts, True))
    compiled = store.engine("compile-default", _spec(ckpt, prompts, False))

    assert compiled["classes"]["model"] == "vllm_qwen3next.model.Qwen3NextForCausalLM"
    for e, c in zip(eager["results"], compiled["results"]):
        assert c["output_ids"] == e["output_ids"]
        logprobs = [r["prompt_logprobs"][1:] + r["output_logprobs"] for r in (e, c)]
        assert max(abs(a - b) for a, b in zip(*logprobs)) < 1e-4  # fp32; measured 1.3e-5
