"""The echo fix for vLLM 0.32 (vllm_qwen3next/fixes/echo.py), and the fault it replaces. The end-to-end
check (echo of token ids the tokenizer does not know, through the server) is in
tests/test_client_faults.py."""

import asyncio
from types import SimpleNamespace

from vllm_qwen3next.fixes import echo


def _prompt(text: str) -> dict:
    return {"prompt_token_ids": [3, 4], "prompt": text}


def _originals():
    from vllm.renderers.base import BaseRenderer

    process, process_async = BaseRenderer._process_tokens, BaseRenderer._process_tokens_async
    return getattr(process, "__wrapped__", process), getattr(process_async, "__wrapped__", process_async)


def test_vllm_renderer_drops_empty_prompt_text():
    """Why we patch: vLLM keeps a prompt text only if it is truthy, so "" (the decoding of ids the
    tokenizer does not know) is lost and the completion server's echo asserts on it."""
    process, process_async = _originals()
    assert "prompt" not in process(SimpleNamespace(), _prompt(""))
    assert "prompt" not in asyncio.run(process_async(SimpleNamespace(), _prompt("")))
    assert process(SimpleNamespace(), _prompt("hi"))["prompt"] == "hi"


def test_installed_renderer_keeps_empty_prompt_text():
    from vllm.renderers.base import BaseRenderer

    echo.install()
    assert BaseRenderer._process_tokens.keeps_empty_text
    assert not echo.drops_empty_prompt_text(BaseRenderer)
    for text in ("", "hi"):
        sync = BaseRenderer._process_tokens(SimpleNamespace(), _prompt(text))
        coro = asyncio.run(BaseRenderer._process_tokens_async(SimpleNamespace(), _prompt(text)))
        assert sync["prompt"] == coro["prompt"] == text
        assert sync["prompt_token_ids"] == [3, 4]
    no_text = BaseRenderer._process_tokens(SimpleNamespace(), {"prompt_token_ids": [3]})
    assert "prompt" not in no_text  # no text given: none invented
    echo.install()  # idempotent
    assert not hasattr(BaseRenderer._process_tokens.__wrapped__, "keeps_empty_text")  # wrapped once

