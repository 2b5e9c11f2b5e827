"""Faults of vLLM 0.32 for CPU that a client could trigger, fixed from the plugin (vllm_qwen3next/fixes/),
end to end: a seeded request whose prefill is split over steps (it stopped the engine: generator.py) and
`echo` of token ids the tokenizer does not know (a 500: echo.py). The unit tests that assert vLLM's own
faults are tests/test_fixes_generator.py and tests/test_fixes_echo.py.

Seeded sampling must stay reproducible: same seed, same tokens, alone or beside other requests, with and
without a split prefill. The reference is vLLM's own path without a split (a short prompt alone), which
the fix does not touch. One engine (`LLM`, tiny, float32, 128 tokens per step, so a 300-token prompt is
always split and a short one is split when it follows a long one) and one server with the same budget.
"""

import concurrent.futures

import pytest

from harness import make_prompts
from serving import LocalServer, log_problems, tiny_server_args

BUDGET = 128  # max_num_batched_tokens
SHORT, LONG, FILLER, FILLER_2 = 0, 1, 2, 3
LENS = (40, 300, 250, 90)  # SHORT fits a step alone; LONG never does; after FILLER, SHORT is split
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def tiny(store):
    return store.checkpoint("tiny")


@pytest.fixture(scope="module")
def seeded_run(store, tiny):
    prompts = make_prompts(tiny, LENS, seed=17)
    spec = {
        "llm": dict(model=str(tiny), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
                    max_num_batched_tokens=BUDGET, enable_prefix_caching=False),
        "prompts": prompts,
        "max_tokens": MAX_TOKENS,
        "seeded_passes": [
            [[SHORT, 7]],  # alone: not split
            [[LONG, 8]],  # alone: split 128 + 128 + 44
            [[FILLER, None], [SHORT, 7], [LONG, 8], [FILLER_2, None]],  # beside others, split elsewhere
            [[SHORT, 7], [LONG, 8]],  # seeded only: LONG split 88 + 128 + 84
            [[LONG, 8], [LONG, 8]],  # the same seeded request twice in one step
            [[SHORT, 9]],  # another seed
        ],
    }
    return store.engine("client-faults-seeded", spec)


def test_seeded_sampling_with_split_prefill(seeded_run):
    alone_short, alone_long, beside, together, twice, other_seed = seeded_run["seeded_passes"]
    short, long = alone_short[0], alone_long[0]
    print(f"\nseeded SHORT {short}\nseeded LONG  {long}")
    assert len(short) == len(long) == MAX_TOKENS
    assert beside[1] == together[0] == short  # split (after FILLER) or not: the same tokens
    assert beside[2] == together[1] == twice[0] == twice[1] == long  # split at other boundaries
    assert other_seed[0] != short  # sampled, and by the seed
    greedy = [r["output_ids"] for r in seeded_run["results"]]
    assert short != greedy[SHORT] and long != greedy[LONG]
    assert "does not use offset" not in seeded_run["log"]



MODEL = "qwen3next-tiny"
NO_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    log = tmp_path_factory.mktemp("client-faults-log") / "server.log"
    args = ["--max-model-len", "2048", "--max-num-batched-tokens", str(BUDGET), "--no-enable-prefix-caching"]
    srv = LocalServer(tiny, args + tiny_server_args(), served_model_name=MODEL, log_path=log, verbose=False)
    srv.start()
    yield srv
    srv.stop(check=False)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.api_url, api_key="EMPTY", max_retries=0, timeout=300)


def _token_ids(client, prompt, **kwargs) -> list[int]:
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS,
                                    extra_body=NO_EOS | {"return_token_ids": True}, **kwargs)
    return list(out.choices[0].token_ids)


def test_server_seeded_split_prefill(client, server, tiny):
    short, long, filler, filler_2 = make_prompts(tiny, LENS, seed=23)
    seeded = dict(temperature=1.0, seed=5)
    alone_long = _token_ids(client, long, **seeded)  # split: before the fix the engine stopped here
    alone_short = _token_ids(client, short, **seeded)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(_token_ids, client, p, **kw) for p, kw in
                [(filler, dict(temperature=1.0)), (short, seeded), (long, seeded), (filler_2, dict(temperature=1.0))]]
        beside = [job.result() for job in jobs]
    assert _token_ids(client, long, **seeded) == alone_long
    assert beside[1] == alone_short and beside[2] == alone_long
    assert _token_ids(client, short, temperature=1.0, seed=6) != alone_short
    assert "does not use offset" not in server.log_text()
    assert not log_problems(server.log_text())


def test_server_echo_of_ids_the_tokenizer_does_not_know(client, server, tiny):
    """Echo gives the tokenizer's decoding of the prompt ("" for unknown ids) before the completion."""
    import json

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    vocab = json.loads((tiny / "config.json").read_text())["vocab_size"]
    assert len(tokenizer) < vocab  # the gap this test needs (the real model has one too)
    known = make_prompts(tiny, (5,), seed=29)[0]
    unknown = list(range(len(tokenizer), vocab))
    for prompt in (unknown, unknown[:1], known[:2] + unknown + known[2:]):
        expected_echo = tokenizer.decode(prompt)
        plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0.0,
                                          extra_body=NO_EOS).choices[0].text
        echoed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0.0, echo=True,
                                           extra_body=NO_EOS).choices[0].text
        only = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True).choices[0].text
        stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0.0, echo=True,
                                           stream=True, extra_body=NO_EOS)
        streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
        assert echoed == streamed == expected_echo + plain
        assert only == expected_echo
    assert tokenizer.decode(unknown) == ""
    assert not log_problems(server.log_text())
