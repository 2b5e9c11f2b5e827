"""Build a tiny checkpoint that answers one tool-calling conversation with fixed replies.

    python examples/scripted_model.py OUT_DIR

A random-weight model never emits a tool call by chance. To run the tool-calling agent
(`tool_agent.py`) and the server tests on this machine, this script builds the tiny random
checkpoint and then changes one tensor, `lm_head.weight`, so that greedy decoding of the
conversation below gives the scripted replies:

1. user asks for the weather in Paris (with the `get_weather` tool offered)
   -> `<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>`
2. the tool result comes back -> "It is sunny and 22 degrees in Paris."

How: run the model (transformers, float32) over each prompt followed by its reply, teacher-
forced, and take the final hidden states h_i [N, H] at the N positions that predict a reply
token y_i. The new lm_head is W + dW, with dW the least-norm change such that at those
positions the logits stay as they were except the logit of y_i, which is raised to the
largest logit plus MARGIN. N (45) is below the hidden size (128) and the h_i are well
conditioned, so the system is solved exactly. Everything else about the model (its layers,
its state, its behaviour on other prompts) is the random checkpoint's; the model served is the
one on disk, with no logits processor or sampling tricks. The replies come out only for this
conversation rendered by the checkpoint's chat template, token for token.

The real Qwen3-Next-80B-A3B-Instruct needs none of this: it calls tools when they help.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

QUESTION = "What is the weather in Paris?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name, e.g. Paris"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
FINAL_ANSWER = "It is sunny and 22 degrees in Paris."
MARGIN = 15.0  # logits of the tiny random model have a std of about 4


def get_weather(city: str) -> dict:
    """The local tool the agent runs (a stand-in for a weather API)."""
    return {"city": city, "condition": "sunny", "temperature_c": 22}


def tool_call_text(call: dict) -> str:
    """A tool call as Qwen3's chat template writes it (hermes style)."""
    return f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {json.dumps(call["arguments"])}}}\n</tool_call>'


def scripted_turns() -> list[tuple[list[dict], list[dict], str]]:
    """(messages, tools, reply) for both turns of the agent conversation."""
    first = [{"role": "user", "content": QUESTION}]
    call_id = "call_0"
    second = first + [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    # As the OpenAI API returns it: arguments as a JSON string.
                    "function": {"name": TOOL_CALL["name"], "arguments": json.dumps(TOOL_CALL["arguments"])},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(get_weather(**TOOL_CALL["arguments"]))},
    ]
    return [(first, TOOLS, tool_call_text(TOOL_CALL)), (second, TOOLS, FINAL_ANSWER)]


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[scripted_model] {msg}", flush=True)


def _prompt_and_reply_ids(tok, messages, tools, reply) -> tuple[list[int], list[int]]:
    prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    reply_ids = tok.encode(reply, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    return prompt, reply_ids


def _hidden_and_targets(model, tok, turns) -> tuple[torch.Tensor, torch.Tensor]:
    """h [N, H]: final (normed) hidden states at the positions that predict reply tokens y [N]."""
    hs, ys = [], []
    for messages, tools, reply in turns:
        prompt, reply_ids = _prompt_and_reply_ids(tok, messages, tools, reply)
        ids = torch.tensor([prompt + reply_ids])
        with torch.no_grad():
            h = model.model(input_ids=ids).last_hidden_state[0]  # [T, H]
        hs.append(h[len(prompt) - 1 : -1])
        ys.append(torch.tensor(reply_ids))
    return torch.cat(hs).double(), torch.cat(ys)


def _weight_file(checkpoint: Path, name: str) -> Path:
    index = checkpoint / "model.safetensors.index.json"
    if index.exists():
        return checkpoint / json.loads(index.read_text())["weight_map"][name]
    return checkpoint / "model.safetensors"


def script_replies(checkpoint: str | Path, turns, margin: float = MARGIN, verbose: bool = True) -> float:
    """Rewrite `lm_head.weight` of a float32 checkpoint so that greedy decoding answers each
    (messages, tools, reply) in `turns` with `reply`; returns the smallest margin reached."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, Qwen3NextForCausalLM

    checkpoint = Path(checkpoint)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = Qwen3NextForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if model.lm_head.weight.dtype != torch.float32:
        raise ValueError("script_replies needs a float32 checkpoint")
    h, y = _hidden_and_targets(model, tok, turns)  # [N, H], [N]
    W = model.lm_head.weight.detach().double()  # [V, H]
    logits = h @ W.T  # [N, V]
    wanted = logits.clone()
    rows = torch.arange(len(y))
    wanted[rows, y] = logits.max(dim=1).values + margin
    # Least-norm dW [V, H] with h @ dW.T == wanted - logits (only the columns y are nonzero).
    dW = torch.linalg.lstsq(h, wanted - logits, driver="gelsd").solution.T
    sv = torch.linalg.svdvals(h)
    _log(verbose, f"{len(y)} reply tokens, hidden states [{h.shape[0]}, {h.shape[1]}] with singular values "
         f"{sv[-1]:.2f}..{sv[0]:.2f}; |dW| = {dW.norm():.1f} (|W| = {W.norm():.1f})")

    path = _weight_file(checkpoint, "lm_head.weight")
    tensors = load_file(path)
    tensors["lm_head.weight"] = (W + dW).float().contiguous()
    save_file(tensors, str(path), metadata={"format": "pt"})

    # Check with the checkpoint as written.
    model = Qwen3NextForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    h, y = _hidden_and_targets(model, tok, turns)
    logits = h.float() @ model.lm_head.weight.detach().T
    if not torch.equal(logits.argmax(dim=1), y):
        raise RuntimeError("scripted replies are not the greedy outputs of the rewritten checkpoint")
    other = logits.clone()
    other[rows, y] = -torch.inf
    reached = (logits[rows, y] - other.max(dim=1).values).min().item()
    _log(verbose, f"rewrote lm_head.weight in {path.name}: every reply token leads by at least "
         f"{reached:.1f} logits ({time.perf_counter() - t0:.1f} s)")
    return reached


def build_scripted_checkpoint(out_dir: str | Path, verbose: bool = True) -> Path:
    """The tiny random checkpoint (float32, no MTP) with the agent conversation scripted in."""
    from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

    out = build_checkpoint(out_dir, "tiny", dtype="float32", with_mtp=False, verbose=verbose)
    script_replies(out, scripted_turns(), verbose=verbose)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    args = parser.parse_args()
    build_scripted_checkpoint(args.out_dir)


if __name__ == "__main__":
    main()
