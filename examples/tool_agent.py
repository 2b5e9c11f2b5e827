"""A tool-calling agent over vLLM's OpenAI API: the loop Qwen-Agent runs, written out.

    python examples/tool_agent.py                        # tiny scripted checkpoint, own server (~1 min)
    python examples/tool_agent.py --model PATH_OR_NAME   # own server for that model
    python examples/tool_agent.py --base-url http://127.0.0.1:8000/v1 --served-model-name NAME

The loop: send the messages and the tool schemas; if the reply has `tool_calls`, run each with
the local Python function of that name, append the assistant message and one `tool` message
per call, and ask again; stop at the first reply without tool calls (the final answer).
Qwen-Agent's `Assistant` runs this loop for Qwen3 against an OpenAI-compatible endpoint
(`llm_cfg = {"model": ..., "model_server": "http://127.0.0.1:8000/v1", "api_key": "EMPTY"}`).

The server must parse tool calls: `--enable-auto-tool-choice --tool-call-parser hermes`
(Qwen3's chat template writes `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, the
hermes format). Without `--model`/`--base-url` this script builds the tiny random checkpoint
with this conversation scripted into its lm_head (see scripted_model.py: a random model never
calls a tool by itself) and decodes greedily, so every run shows one tool call and the answer.

For the real model on GPUs (Qwen/Qwen3-Next-80B-A3B-Instruct, 4 x 80 GB):
    vllm serve Qwen/Qwen3-Next-80B-A3B-Instruct --tensor-parallel-size 4 \\
        --max-model-len 262144 --enable-auto-tool-choice --tool-call-parser hermes
then `--base-url` to it (or `--model` with `--tp 4`); sampling follows the model card
(temperature 0.7, top_p 0.8, top_k 20, min_p 0), and the model decides which tools to call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import LocalServer, tiny_server_args  # noqa: E402
from scripted_model import QUESTION, TOOLS, get_weather  # noqa: E402

FUNCTIONS = {"get_weather": get_weather}  # tool name -> local Python function
CARD_SAMPLING = dict(temperature=0.7, top_p=0.8, extra_body={"top_k": 20, "min_p": 0.0})
GREEDY = dict(temperature=0.0)
TOOL_PARSER_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def run_tool(call) -> str:
    fn = FUNCTIONS.get(call.function.name)
    if fn is None:
        return json.dumps({"error": f"unknown tool {call.function.name!r}"})
    try:
        return json.dumps(fn(**json.loads(call.function.arguments)))
    except (TypeError, ValueError) as e:  # bad arguments: tell the model, as Qwen-Agent does
        return json.dumps({"error": str(e)})


def agent(client: OpenAI, model: str, question: str, sampling: dict, max_rounds: int = 5,
          max_tokens: int = 512) -> str:
    messages = [{"role": "user", "content": question}]
    print(f"user: {question}")
    for round_ in range(1, max_rounds + 1):
        reply = client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, max_tokens=max_tokens, **sampling
        )
        msg = reply.choices[0].message
        if not msg.tool_calls:
            print(f"assistant (round {round_}, final): {msg.content}")
            return msg.content
        messages.append(
            {
                "role": "assistant",
                "content": msg.content or "",
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.function.name,
                                                                  "arguments": c.function.arguments}}
                    for c in msg.tool_calls
                ],
            }
        )
        for call in msg.tool_calls:
            result = run_tool(call)
            print(f"assistant (round {round_}): calls {call.function.name}({call.function.arguments})")
            print(f"tool {call.function.name}: {result}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError(f"no final answer after {max_rounds} rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--base-url", help="an OpenAI-compatible endpoint that is already serving")
    where.add_argument("--model", help="checkpoint to serve here (default: build the tiny scripted one)")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size when serving here")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--greedy", action="store_true", help="temperature 0 instead of the model card's sampling")
    parser.add_argument("--workdir", default="/tmp/qwen3next-tool-agent")
    args = parser.parse_args()

    if args.base_url:
        client = OpenAI(base_url=args.base_url, api_key="EMPTY")
        model = args.served_model_name or client.models.list().data[0].id
        agent(client, model, args.question, GREEDY if args.greedy else CARD_SAMPLING)
        return

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    server_args = [*TOOL_PARSER_ARGS, "--tensor-parallel-size", str(args.tp),
                   "--max-model-len", str(args.max_model_len)]
    greedy = args.greedy
    if args.model is None:
        from scripted_model import build_scripted_checkpoint

        print("building the tiny checkpoint with the agent conversation scripted in")
        args.model = str(build_scripted_checkpoint(Path(args.workdir) / "scripted"))
        server_args += tiny_server_args()
        greedy = True  # the scripted replies are the greedy ones
    name = args.served_model_name or "qwen3next"
    with LocalServer(args.model, server_args, served_model_name=name,
                     log_path=Path(args.workdir) / "server.log") as server:
        client = OpenAI(base_url=server.api_url, api_key="EMPTY")
        agent(client, name, args.question, GREEDY if greedy else CARD_SAMPLING)


if __name__ == "__main__":
    main()
