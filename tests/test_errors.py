"""Bad input through LLM(...): each gets an error that names the problem, and the
engine keeps serving the other requests."""

import json
import shutil

import pytest

from harness import make_prompts


def _llm(ckpt, **extra) -> dict:
    return dict(model=str(ckpt), dtype="float32", max_model_len=512, enforce_eager=True) | extra


def test_bad_requests_are_refused_and_engine_keeps_serving(store):
    ckpt = store.checkpoint("tiny")
    prompts = make_prompts(ckpt, (5, 40), seed=21)
    out = store.engine(
        "errors-requests",
        {
            "llm": _llm(ckpt),
            "prompts": prompts,
            "max_tokens": 8,
            "bad_prompts": [[], list(range(600))],
        },
    )
    empty, too_long = out["refused"]
    assert empty is not None and "empty" in empty.lower()
    assert too_long is not None and "maximum context length is 512" in too_long
    assert all(len(r["output_ids"]) == 8 for r in out["results"])


def _fails(store, name, llm_args) -> str:
    with pytest.raises(RuntimeError) as err:
        store.engine(name, {"llm": llm_args, "prompts": [[1, 2, 3]], "max_tokens": 2})
    return str(err.value)


def test_invalid_speculative_config(store):
    ckpt = store.checkpoint("tiny")
    text = _fails(
        store, "errors-spec",
        _llm(ckpt, speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": -1}),
    )
    assert "num_speculative_tokens" in text


def test_truncated_safetensors(store):
    src = store.checkpoint("tiny")
    bad = store.root / "tiny-truncated"
    shutil.copytree(src, bad, dirs_exist_ok=True)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    text = _fails(store, "errors-truncated", _llm(bad))
    assert "model.safetensors" in text or "safetensors" in text.lower()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("linear_num_value_heads", 5, "linear_num_value_heads (5) must be a multiple of linear_num_key_heads (2)"),
        ("hidden_size", "128", "hidden_size"),
    ],
    ids=["impossible-heads", "wrong-type"],
)
def test_bad_config(store, field, value, message):
    src = store.checkpoint("tiny")
    bad = store.root / f"tiny-bad-{field}"
    shutil.copytree(src, bad, dirs_exist_ok=True)
    config = json.loads((bad / "config.json").read_text())
    config[field] = value
    (bad / "config.json").write_text(json.dumps(config))
    text = _fails(store, f"errors-config-{field}", _llm(bad))
    assert message in text


def test_broken_checkpoint_lists_missing_and_unexpected(store):
    from safetensors.torch import load_file, save_file

    src = store.checkpoint("tiny")
    bad = store.root / "tiny-missing-tensor"
    shutil.copytree(src, bad, dirs_exist_ok=True)
    tensors = load_file(bad / "model.safetensors")
    del tensors["model.layers.1.linear_attn.dt_bias"]
    tensors["model.layers.2.linear_attn.extra.weight"] = tensors["model.norm.weight"].clone()
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    text = _fails(store, "errors-missing", _llm(bad))
    assert "1 missing: model.layers.1.linear_attn.dt_bias" in text
    assert "1 unexpected: model.layers.2.linear_attn.extra.weight" in text
