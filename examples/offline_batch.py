"""Offline batch generation with vLLM's `LLM` over a file of prompts (one per line).

    python examples/offline_batch.py                          # tiny random checkpoint, built here
    python examples/offline_batch.py --model PATH --prompts my_prompts.txt --max-tokens 512

Each line of the prompts file becomes one chat conversation; `LLM.chat` applies the model's
chat template and runs them as one batch. Sampling follows the model card: temperature 0.7,
top_p 0.8, top_k 20, min_p 0. Results go to stdout and, with --out, to a JSON-lines file.
The tiny checkpoint has random weights: its replies are random text.

For the real model on GPUs (Qwen/Qwen3-Next-80B-A3B-Instruct, 4 x 80 GB):
    python examples/offline_batch.py --model Qwen/Qwen3-Next-80B-A3B-Instruct --tp 4 \\
        --max-model-len 262144 --max-tokens 16384 [--mtp 2]
i.e. `LLM(model=..., tensor_parallel_size=4, max_model_len=262144)` in bf16 with CUDA graphs (no
float32, no enforce_eager); 16,384 output tokens is the model card's length for most queries;
--mtp adds the model's multi-token prediction as draft,
`speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": 2}`. The plugin is
picked up by `LLM(...)` as by `vllm serve`. Past 262,144 tokens of context: YaRN, see serve_yarn.py.

vLLM starts worker processes by spawning, so the `if __name__ == "__main__":` guard is required.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: build the tiny random one)")
    parser.add_argument("--prompts", default=str(HERE / "prompts.txt"), help="one prompt per line")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--mtp", type=int, default=0, help="MTP speculative tokens (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write one JSON line per prompt here")
    parser.add_argument("--workdir", default="/tmp/qwen3next-offline")
    args = parser.parse_args()

    # KV cache in GiB on CPU (unset, vLLM wants 92% of the memory, which a shared machine may not
    # have free); ignored on GPUs, where --gpu-memory-utilization governs it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    prompts = [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    llm_args = dict(tensor_parallel_size=args.tp, max_model_len=args.max_model_len, seed=args.seed)
    if args.model is None:
        from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

        print("building the tiny random checkpoint")
        args.model = str(build_checkpoint(Path(args.workdir) / "tiny", "tiny", dtype="float32"))
        # float32 on CPU; no torch.compile warm-up (minutes on a busy CPU, nothing gained at this size).
        llm_args |= dict(dtype="float32", enforce_eager=True)
    if args.mtp:
        llm_args["speculative_config"] = {"method": "qwen3_next_mtp", "num_speculative_tokens": args.mtp}

    print(f"starting the engine for {args.model} ({len(prompts)} prompts from {args.prompts})", flush=True)
    t0 = time.perf_counter()
    llm = LLM(model=args.model, **llm_args)
    print(f"engine ready in {time.perf_counter() - t0:.0f} s", flush=True)

    # The model card's recommended sampling.
    sampling = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0, max_tokens=args.max_tokens)
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    t0 = time.perf_counter()
    outputs = llm.chat(conversations, sampling, use_tqdm=True)
    seconds = time.perf_counter() - t0
    n_out = sum(len(o.outputs[0].token_ids) for o in outputs)
    n_in = sum(len(o.prompt_token_ids) for o in outputs)

    out_file = open(args.out, "w") if args.out else None
    for prompt, o in zip(prompts, outputs):
        reply = o.outputs[0]
        print(f"\n### {prompt}\n{reply.text}\n[{len(reply.token_ids)} tokens, finish: {reply.finish_reason}]")
        if out_file:
            out_file.write(json.dumps({"prompt": prompt, "reply": reply.text, "tokens": len(reply.token_ids),
                                       "finish_reason": reply.finish_reason}) + "\n")
    if out_file:
        out_file.close()
    print(f"\n{len(prompts)} prompts, {n_in} prompt tokens, {n_out} generated tokens in {seconds:.1f} s "
          f"({n_out / seconds:.0f} tokens/s)")


if __name__ == "__main__":
    main()
