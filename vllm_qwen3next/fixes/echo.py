"""vLLM 0.32: the fix that lets `echo` return a prompt whose text is empty.

With `echo`, a prompt given as token ids is decoded to text (`BaseRenderer._detokenize_prompt`).
Ids the tokenizer does not know decode to "" (the real Qwen3-Next has such ids: its vocab_size
151936 is larger than its tokenizer), and so may other ids. The renderer then builds the engine
input with `if prompt_text := prompt.get("prompt")` (`BaseRenderer._process_tokens` and its
async twin), which drops an empty text, and the completion server's `assert prompt_text is not
None` turns the request into a 500.

`install()` wraps both methods so that an empty prompt text stays in the engine input: the
echo is then "" for the unknown ids, as the tokenizer decodes them (and as vLLM's detokenizer
gives for generated ids past the tokenizer). It runs from `register()` and only patches a
renderer module that is already imported: the API server and `LLM` import it before they load
plugins, and other processes never render prompts, so `register()` stays cheap there.
"""

import functools
import sys
from types import SimpleNamespace

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")

RENDERER = "vllm.renderers.base"


def _result(coroutine):
    """The value of a coroutine that finishes without waiting on anything."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine waited on something")


def drops_empty_prompt_text(renderer_cls) -> bool:
    """True where the renderer loses a prompt text that is "" (both methods checked)."""
    def prompt():
        return {"prompt_token_ids": [0], "prompt": ""}

    sync = renderer_cls._process_tokens(SimpleNamespace(), prompt())
    coro = _result(renderer_cls._process_tokens_async(SimpleNamespace(), prompt()))
    return "prompt" not in sync or "prompt" not in coro


def _keep_empty_text(prompt: dict, engine_input: dict) -> dict:
    if prompt.get("prompt") == "":
        engine_input.setdefault("prompt", "")
    return engine_input


def install() -> None:
    """Keep empty prompt texts in the engine input where vLLM's renderer drops them."""
    base = sys.modules.get(RENDERER)
    if base is None:
        return  # this process renders no prompts (yet); see the module docstring
    renderer_cls = base.BaseRenderer
    if getattr(renderer_cls._process_tokens, "keeps_empty_text", False):
        return
    if not drops_empty_prompt_text(renderer_cls):
        return
    process, process_async = renderer_cls._process_tokens, renderer_cls._process_tokens_async

    @functools.wraps(process)
    def _process_tokens(self, prompt, **kwargs):
        return _keep_empty_text(prompt, process(self, prompt, **kwargs))

    @functools.wraps(process_async)
    async def _process_tokens_async(self, prompt, **kwargs):
        return _keep_empty_text(prompt, await process_async(self, prompt, **kwargs))

    _process_tokens.keeps_empty_text = True
    renderer_cls._process_tokens = _process_tokens
    renderer_cls._process_tokens_async = _process_tokens_async
    # No package name in the text: register()'s own line is the one that names the plugin.
    logger.info("Prompts whose text is empty keep it (vLLM 0.32's renderer drops it: echo of token ids "
                "the tokenizer does not know gave a 500); fixed by the Qwen3-Next plugin")
