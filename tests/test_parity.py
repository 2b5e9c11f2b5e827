"""vLLM + our model against transformers' Qwen3NextForCausalLM (float32, CPU),
and against vLLM's built-in Qwen3-Next in bf16."""

import pytest

from harness import make_prompts
from reference import hf_reference

MAX_TOKENS = 32


def _llm_args(checkpoint, dtype: str) -> dict:
    return dict(
        model=str(checkpoint),
        dtype=dtype,
        max_model_len=4096,
        enforce_eager=True,
        seed=0,
    )


def _logprob_errors(results: list[dict], reference: list[dict]) -> list[float]:
    return [
        abs(a - b)
        for r, ref in zip(results, reference)
        for a, b in zip(r["prompt_logprobs"][1:], ref["prompt_logprobs"][1:])
    ]


@pytest.fixture(scope="module", params=["tiny", "slice"])
def fp32_run(request, store):
    preset = request.param
    ckpt = store.checkpoint(preset)
    prompts = make_prompts(ckpt)
    ours = store.engine(
        f"ours-{preset}-fp32",
        {"llm": _llm_args(ckpt, "float32"), "prompts": prompts, "max_tokens": MAX_TOKENS,
         "replay_outputs": True},
    )
    reference = hf_reference(ckpt, prompts, MAX_TOKENS)
    return preset, prompts, ours, reference


def test_our_classes_ran(fp32_run):
    preset, _, ours, _ = fp32_run
    print(
        f"[{preset}] engine start {ours['engine_start_s']:.1f} s; generate: "
        f"{ours['prompt_tokens']} prompt + {ours['generated_tokens']} output tokens in {ours['generate_s']:.1f} s"
    )
    classes = ours["classes"]
    assert classes["model"] == "vllm_qwen3next.model.Qwen3NextForCausalLM"
    assert {c.split(".")[0] for c in classes["layers"]} == {"vllm_qwen3next"}


def test_prompt_logprobs_match_transformers(fp32_run):
    preset, prompts, ours, reference = fp32_run
    errors = _logprob_errors(ours["results"], reference)
    assert len(errors) == sum(len(p) - 1 for p in prompts)
    print(f"[{preset}] max |logprob diff| vs transformers fp32: {max(errors):.2e} over {len(errors)} tokens")
    assert max(errors) < 1e-3


def test_greedy_matches_transformers(fp32_run):
    preset, _, ours, reference = fp32_run
    for r, ref in zip(ours["results"], reference):
        assert r["output_ids"] == ref["output_ids"]


def test_prefill_then_decode_equals_longer_prefill(fp32_run):
    _, _, ours, _ = fp32_run
    for r in ours["results"]:
        diffs = [abs(a - b) for a, b in zip(r["output_logprobs"], r["replay_logprobs"])]
        assert len(diffs) == MAX_TOKENS
        assert max(diffs) < 1e-4


def test_bf16_against_builtin(store):
    """Judge our bf16 by its distance from transformers fp32, relative to the
    built-in's own distance (flash-attention's rule: at most twice its error)."""
    ckpt = store.checkpoint("tiny")
    prompts = make_prompts(ckpt, lens=(1, 63, 64, 65, 700))
    spec = {"llm": _llm_args(ckpt, "bfloat16"), "prompts": prompts, "max_tokens": 1}
    ours = store.engine("ours-tiny-bf16", spec)
    builtin = store.engine("builtin-tiny-bf16", spec | {"env": {"VLLM_PLUGINS": ""}})
    assert builtin["classes"]["model"].startswith("vllm.model_executor.models.qwen3_next.")
    reference = hf_reference(ckpt, prompts, 1)
    ours_err = _logprob_errors(ours["results"], reference)
    builtin_err = _logprob_errors(builtin["results"], reference)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(
        f"bf16 |logprob diff| vs transformers fp32: ours mean {mean(ours_err):.4f} "
        f"max {max(ours_err):.4f}; built-in mean {mean(builtin_err):.4f} max {max(builtin_err):.4f}"
    )
    assert mean(ours_err) <= 2 * mean(builtin_err)
    assert max(ours_err) <= 2 * max(builtin_err)
