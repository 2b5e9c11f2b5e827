"""Hugging Face transformers' Qwen3NextForCausalLM on CPU in float32: the reference."""

import torch


@torch.no_grad()
def hf_reference(checkpoint, prompts: list[list[int]], max_tokens: int) -> list[dict]:
    """Per prompt: log-prob of every prompt token (None for the first) and the
    greedy continuation with its log-probs, as tests/engine_runner.py reports them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    results = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        step = model(ids, use_cache=True)
        logprobs = torch.log_softmax(step.logits[0].float(), dim=-1)
        prompt_lp = [None] + logprobs[:-1].gather(1, ids[0, 1:, None])[:, 0].tolist()
        out_ids, out_lp = [], []
        for _ in range(max_tokens):
            step_lp = torch.log_softmax(step.logits[0, -1].float(), dim=-1)
            tok = int(step_lp.argmax())
            out_ids.append(tok)
            out_lp.append(step_lp[tok].item())
            step = model(torch.tensor([[tok]]), past_key_values=step.past_key_values, use_cache=True)
        results.append(
            {"prompt_logprobs": prompt_lp, "output_ids": out_ids, "output_logprobs": out_lp}
        )
    return results
