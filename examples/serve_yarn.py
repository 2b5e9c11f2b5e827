"""Serve past the native context with YaRN rope scaling, and send a prompt longer than that context.

    python examples/serve_yarn.py                   # tiny checkpoint: native 256 positions, YaRN x4 -> 1024 (~1 min)
    python examples/serve_yarn.py --model PATH --original-max 262144 --max-model-len 1010000 --tp 4

Qwen3-Next is trained for 262,144 positions; the model card extends it to about 1M with YaRN,
factor 4. With vLLM that is a config override at start, nothing in the checkpoint changes:

    VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 vllm serve MODEL --max-model-len 1010000 \\
        --hf-overrides '{"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144}}'

- The override holds only the YaRN keys. vLLM replaces the whole `rope_scaling` dict with it,
  which drops the checkpoint's rope_theta and partial_rotary_factor; this plugin reads them
  back from the checkpoint (vLLM's built-in model silently rotates the whole head with base
  10000 instead), for the MTP draft as well.
- vLLM 0.32 takes the default context from max_position_embeddings without the YaRN factor,
  so a longer --max-model-len needs VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.
- YaRN is static: short prompts also get the scaled rope. The model card advises turning it on
  only when long contexts are needed (examples/serve_yarn_1m.sh has an opt-in per-request mode).

The tiny checkpoint here is built with max_position_embeddings=256 so that the same steps run on
a CPU in a minute: native 256, factor 4, context 1024. The script sends a "needle" prompt of
about --prompt-tokens tokens (a fact near the start, the question at the end), then one longer
than --max-model-len, which the server rejects with HTTP 400. The tiny model's answer is random
text; the real one finds the needle.

For the real model on GPUs (Qwen/Qwen3-Next-80B-A3B-Instruct, 4 x 80 GB): --model
Qwen/Qwen3-Next-80B-A3B-Instruct --tp 4 --original-max 262144 --max-model-len 1010000
--prompt-tokens 300000. Only its 12 full-attention layers keep a KV cache (2 KV heads of 256:
24 KiB per token in bf16, about 23 GiB for 1M tokens); the 36 GDN layers keep a fixed-size state.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

import openai
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import LocalServer, tiny_server_args  # noqa: E402

FILLER = ("The river runs past the old mill and the garden behind the library. "
          "A quiet morning in the city starts with the bakery opening its doors. ")
NEEDLE = "The secret code for the vault is 4721. "
QUESTION = "\nWhat is the secret code for the vault? Answer with the number."


def count_tokens(base_url: str, model: str, text: str) -> int:
    """vLLM's /tokenize endpoint: the prompt's length under the served tokenizer."""
    req = urllib.request.Request(f"{base_url}/tokenize", data=json.dumps({"model": model, "prompt": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["count"]


def needle_prompt(base_url: str, model: str, tokens: int, per_filler: float) -> tuple[str, int]:
    """About `tokens` tokens: the needle, filler, the question."""
    fixed = count_tokens(base_url, model, NEEDLE + QUESTION)
    text = NEEDLE + FILLER * max(0, int((tokens - fixed) / per_filler)) + QUESTION
    return text, count_tokens(base_url, model, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: build the tiny one with 256 native positions)")
    parser.add_argument("--original-max", type=int, default=256,
                        help="native context: original_max_position_embeddings")
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--prompt-tokens", type=int, default=900)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--workdir", default="/tmp/qwen3next-yarn")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    yarn = {"rope_type": "yarn", "factor": args.factor, "original_max_position_embeddings": args.original_max}
    server_args = []
    if args.model is None:
        from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

        print(f"building the tiny random checkpoint with {args.original_max} native positions")
        args.model = str(build_checkpoint(Path(args.workdir) / "tiny", "tiny", dtype="float32",
                                          max_position_embeddings=args.original_max))
        server_args += tiny_server_args()
    server_args += ["--tensor-parallel-size", str(args.tp), "--max-model-len", str(args.max_model_len),
                    "--hf-overrides", json.dumps({"rope_scaling": yarn})]
    env = {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}

    with LocalServer(args.model, server_args, served_model_name="qwen3next", env=env,
                     log_path=Path(args.workdir) / "server.log") as server:
        for line in server.log_text().splitlines():
            if "vllm_qwen3next: rope" in line:  # what the plugin built: theta, rotated dims, YaRN
                print(line[line.index("vllm_qwen3next: rope"):])
                break
        client = OpenAI(base_url=server.api_url, api_key="EMPTY")
        per_filler = count_tokens(server.base_url, "qwen3next", FILLER * 8) / 8
        text, n = needle_prompt(server.base_url, "qwen3next", args.prompt_tokens, per_filler)
        print(f"needle prompt: {n} tokens (native context {args.original_max}, served {args.max_model_len})")
        out = client.completions.create(model="qwen3next", prompt=text, max_tokens=args.max_tokens, temperature=0.0)
        print(f"answer: {out.choices[0].text!r} ({out.usage.prompt_tokens} prompt tokens, "
              f"{out.usage.completion_tokens} generated)")

        too_long = FILLER * int(1.1 * args.max_model_len / per_filler)
        try:
            client.completions.create(model="qwen3next", prompt=too_long, max_tokens=1)
            print("a prompt over --max-model-len was accepted (unexpected)")
        except openai.BadRequestError as e:
            print(f"a prompt over --max-model-len is rejected: HTTP {e.status_code}")


if __name__ == "__main__":
    main()
