"""Through vLLM's OpenAI server with our plugin: 200 concurrent requests of mixed
lengths all complete and each equals the same request run alone; bad requests get a
clear error while the server keeps serving; a broken checkpoint stops the start with
an error that names the problem."""

import asyncio
import json
import random
import shutil

import pytest
from openai import AsyncOpenAI, BadRequestError, OpenAI
from serving import LocalServer, log_problems, tiny_server_args

NUM_REQUESTS = 200
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    ckpt = store.checkpoint("tiny")
    log = tmp_path_factory.mktemp("load") / "server.log"
    srv = LocalServer(
        ckpt, [*tiny_server_args(), "--max-model-len", "1024", "--max-num-seqs", "64"],
        served_model_name="tiny", log_path=log,
    )
    with srv:
        yield srv
    assert not log_problems(srv.log_text())


def _requests(vocab: int) -> list[list[int]]:
    rng = random.Random(31)
    lens = [rng.choice([1, 5, 30, 63, 64, 65, 200, 500]) for _ in range(NUM_REQUESTS)]
    return [[rng.randrange(vocab) for _ in range(n)] for n in lens]


def test_200_concurrent_requests_equal_each_alone(server, store):
    from transformers import AutoTokenizer

    vocab = min(AutoTokenizer.from_pretrained(store.checkpoint("tiny")).added_tokens_decoder)
    prompts = _requests(vocab)

    async def burst():
        client = AsyncOpenAI(base_url=server.api_url, api_key="EMPTY", max_retries=0, timeout=600)
        calls = [
            client.completions.create(
                model="tiny", prompt=p, max_tokens=MAX_TOKENS, temperature=0.0,
                extra_body={"ignore_eos": True},
            )
            for p in prompts
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    together = asyncio.run(burst())
    errors = [r for r in together if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} of {NUM_REQUESTS} failed, first: {errors[:1]}"
    assert all(r.choices[0].finish_reason == "length" for r in together)

    client = OpenAI(base_url=server.api_url, api_key="EMPTY", max_retries=0, timeout=120)
    rng = random.Random(32)
    # Each request alone (a sample of 40, sequentially, to keep the test short).
    for i in rng.sample(range(NUM_REQUESTS), 40):
        alone = client.completions.create(
            model="tiny", prompt=prompts[i], max_tokens=MAX_TOKENS, temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        assert alone.choices[0].text == together[i].choices[0].text, f"request {i} differs"


def test_bad_requests_get_errors_and_server_keeps_serving(server):
    client = OpenAI(base_url=server.api_url, api_key="EMPTY", max_retries=0)
    with pytest.raises(BadRequestError, match="at least one prompt"):
        client.completions.create(model="tiny", prompt=[], max_tokens=4)
    with pytest.raises(BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt=[5] * 2000, max_tokens=4)
    with pytest.raises(BadRequestError):
        client.completions.create(model="tiny", prompt="hi", max_tokens=-3)
    ok = client.completions.create(model="tiny", prompt="hello there", max_tokens=4, temperature=0.0)
    assert ok.choices[0].finish_reason == "length"


def test_server_refuses_impossible_config(store, tmp_path):
    bad = tmp_path / "bad-heads"
    shutil.copytree(store.checkpoint("tiny"), bad)
    config = json.loads((bad / "config.json").read_text())
    config["linear_num_value_heads"] = 3
    (bad / "config.json").write_text(json.dumps(config))
    srv = LocalServer(bad, tiny_server_args(), log_path=tmp_path / "server.log", startup_timeout=300)
    with pytest.raises(RuntimeError, match="exited"):
        srv.start()
    assert "linear_num_value_heads (3) must be a multiple of linear_num_key_heads (2)" in srv.log_text()
