"""Serve with multi-token prediction (MTP) speculative decoding and report how often drafts are accepted.

    python examples/serve_mtp.py                 # tiny random checkpoint with its mtp.* layer (~1 min)
    python examples/serve_mtp.py --trained       # train the tiny model + MTP layer first (300 steps: minutes)
    python examples/serve_mtp.py --model PATH    # any Qwen3-Next checkpoint with mtp.* tensors

The server runs with the model's own MTP layer as the draft model:

    vllm serve MODEL --speculative-config '{"method": "qwen3_next_mtp", "num_speculative_tokens": 2}'

(this plugin serves both the target, Qwen3NextForCausalLM, and the draft, Qwen3NextMTP; the
method is accepted under its old name `qwen3_next_mtp` with a deprecation warning, or as `mtp`).
Greedy outputs are the same with and without MTP; only the speed changes. The script sends a
few greedy requests and reads vLLM's Prometheus counters at /metrics: draft tokens proposed,
draft tokens accepted, and the mean number of tokens a decode step produces.

On a random checkpoint the draft is rarely right (acceptance near 0); with --trained the tiny
model and its MTP layer learn a predictable synthetic corpus first
(vllm_qwen3next.train_tiny) and the prompts come from that corpus, so most drafts are accepted.

On CPU, vLLM 0.32's GDN state pre-copy for MTP is GPU-only with prefix caching, so this plugin
turns prefix caching off when MTP is on (one warning line); on GPUs it stays on.

For the real model on GPUs (Qwen/Qwen3-Next-80B-A3B-Instruct, 4 x 80 GB), the model card's command:
    vllm serve Qwen/Qwen3-Next-80B-A3B-Instruct --tensor-parallel-size 4 --max-model-len 262144 \\
        --speculative-config '{"method": "qwen3_next_mtp", "num_speculative_tokens": 2}'
or `python examples/serve_mtp.py --model Qwen/Qwen3-Next-80B-A3B-Instruct --tp 4 --max-model-len 262144`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.request
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import LocalServer, tiny_server_args  # noqa: E402

PROMPTS = [
    "Give me a short introduction to large language models.",
    "In 2024, Alice and Bob",
    "def compute_cache(x, n=8):",
    "The weather in Paris is",
]


def spec_decode_counters(base_url: str) -> dict[str, float]:
    """vllm:spec_decode_* counters from the Prometheus endpoint, summed over label sets."""
    text = urllib.request.urlopen(f"{base_url}/metrics", timeout=10).read().decode()
    counters: dict[str, float] = {}
    for m in re.finditer(r"^(vllm:spec_decode_num_\w+?)(?:_total)?(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.M):
        counters[m[1]] = counters.get(m[1], 0.0) + float(m[2])
    return counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint with mtp.* tensors (default: build the tiny one)")
    parser.add_argument("--trained", action="store_true", help="train the tiny model and MTP layer first")
    parser.add_argument("--num-speculative-tokens", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--workdir", default="/tmp/qwen3next-mtp")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    server_args = ["--tensor-parallel-size", str(args.tp), "--max-model-len", str(args.max_model_len),
                   "--speculative-config", json.dumps({"method": "qwen3_next_mtp",
                                                       "num_speculative_tokens": args.num_speculative_tokens})]
    prompts: list = PROMPTS
    # A random model often ends a reply at once; the tiny runs generate max_tokens regardless.
    extra_body = {"ignore_eos": args.model is None}
    if args.model is None:
        if args.trained:
            from vllm_qwen3next.tools.train_tiny import corpus_prompts, train_tiny_checkpoint

            print("training the tiny model and its MTP layer on the synthetic corpus")
            args.model = str(train_tiny_checkpoint(Path(args.workdir) / "trained"))
            prompts = corpus_prompts(len(PROMPTS), 40, seed=1)  # token ids: the corpus is not text
        else:
            from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

            print("building the tiny random checkpoint (with its mtp.* layer)")
            args.model = str(build_checkpoint(Path(args.workdir) / "tiny", "tiny", dtype="float32"))
        server_args += tiny_server_args()

    with LocalServer(args.model, server_args, served_model_name="qwen3next",
                     log_path=Path(args.workdir) / "server.log") as server:
        client = OpenAI(base_url=server.api_url, api_key="EMPTY")
        before = spec_decode_counters(server.base_url)
        for prompt in prompts:
            # Greedy, so that the output is the one the target model alone would give.
            out = client.completions.create(model="qwen3next", prompt=prompt, max_tokens=args.max_tokens,
                                            temperature=0.0, extra_body=extra_body)
            shown = prompt if isinstance(prompt, str) else f"<{len(prompt)} corpus token ids>"
            print(f"{shown!r} -> {out.choices[0].text!r}")
        after = spec_decode_counters(server.base_url)

    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    drafts = delta.get("vllm:spec_decode_num_draft_tokens", 0.0)
    accepted = delta.get("vllm:spec_decode_num_accepted_tokens", 0.0)
    steps = delta.get("vllm:spec_decode_num_drafts", 0.0)
    print(f"MTP with {args.num_speculative_tokens} speculative tokens: {drafts:.0f} draft tokens, "
          f"{accepted:.0f} accepted ({accepted / max(drafts, 1):.0%}); "
          f"{1 + accepted / max(steps, 1):.2f} tokens per decode step")


if __name__ == "__main__":
    main()
