"""MTP acceptance and decode speed on CPU: ours for k = 1, 2, 3 against no MTP, and
the built-in MTP (our plugin excluded) on the same checkpoint.

    python examples/bench_mtp.py [--model CKPT] [--dtype bfloat16]

Without --model it trains the tiny model + MTP layer first (vllm_qwen3next.train_tiny,
a minute or two on idle cores). Each configuration runs in its own process:
`LLM.generate` over 16 corpus prompts of 40 tokens, 128 greedy tokens each; tokens/s is
output tokens over the wall time of that call. vLLM's built-in needs bf16 on CPU, so
the comparison with it runs in bf16 for both. For the 80B model on GPUs the same script
applies with --model Qwen/Qwen3-Next-80B-A3B-Instruct and real prompts.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUM_PROMPTS, PROMPT_LEN, MAX_TOKENS = 16, 40, 128


def _child(model: str, dtype: str, k: int) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_qwen3next.tools.train_tiny import corpus_prompts

    spec = {"method": "qwen3_next_mtp", "num_speculative_tokens": k} if k else None
    llm = LLM(model=model, dtype=dtype, max_model_len=1024, enforce_eager=True,
              enable_prefix_caching=False, speculative_config=spec, disable_log_stats=False)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in corpus_prompts(NUM_PROMPTS, PROMPT_LEN, seed=7)]
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    metrics = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    drafts = metrics.get("vllm:spec_decode_num_draft_tokens") or 0
    accepted = metrics.get("vllm:spec_decode_num_accepted_tokens") or 0
    print("RESULT " + json.dumps({
        "tokens_per_s": sum(len(o.outputs[0].token_ids) for o in outs) / wall,
        "acceptance": accepted / drafts if drafts else None,
        "outputs": [list(o.outputs[0].token_ids) for o in outs],
    }), flush=True)


def run(model: str, dtype: str, k: int, builtin: bool) -> dict:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    if builtin:
        env["VLLM_PLUGINS"] = ""  # our plugin excluded: vLLM's built-in Qwen3-Next and its MTP
    proc = subprocess.run([sys.executable, __file__, "--child", model, dtype, str(k)], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"k={k} builtin={builtin} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from vllm_qwen3next.tools.train_tiny import train_tiny_checkpoint

        model = str(train_tiny_checkpoint(Path(tempfile.mkdtemp()) / "trained"))
    rows = []
    base = None
    for k, builtin in ((0, False), (1, False), (2, False), (3, False), (2, True)):
        label = f"{'built-in' if builtin else 'ours'}, " + (f"MTP k={k}" if k else "no MTP")
        print(f"running {label} ...", flush=True)
        r = run(model, args.dtype, k, builtin)
        base = base or r
        same = r["outputs"] == base["outputs"]
        rows.append((label, r["acceptance"], r["tokens_per_s"], r["tokens_per_s"] / base["tokens_per_s"], same))
    print(f"\n{args.dtype}, {NUM_PROMPTS} prompts x {PROMPT_LEN} tokens, {MAX_TOKENS} greedy tokens each; {model}")
    print("| configuration | acceptance | output tokens/s | speed-up vs no MTP | same tokens as no MTP |")
    print("|---|---|---|---|---|")
    for label, acc, tps, speedup, same in rows:
        print(f"| {label} | {'-' if acc is None else f'{acc:.3f}'} | {tps:.1f} | {speedup:.2f}x | {same} |")


if __name__ == "__main__":
    main()
