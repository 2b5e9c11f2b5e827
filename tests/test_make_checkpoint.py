"""The random-weight checkpoint builder (tiny preset): layout, transformers loading,
tokenizer and chat template, and that every tensor changes the logits."""

import contextlib
import json
import math
import re

import pytest
import torch
from safetensors import safe_open

from vllm_qwen3next.tools.make_checkpoint import PRESETS, build_checkpoint, generate_corpus

transformers = pytest.importorskip("transformers")

MARKERS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
           "<tool_response>", "</tool_response>", "<think>", "</think>"]


def _tensors(ckpt) -> dict[str, torch.Tensor]:
    with safe_open(ckpt / "model.safetensors", "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("tiny"), "tiny", verbose=False)


@pytest.fixture(scope="module")
def hf_model(tiny):
    model, info = transformers.Qwen3NextForCausalLM.from_pretrained(
        tiny, dtype=torch.float32, output_loading_info=True
    )
    return model.eval(), info


@pytest.fixture(scope="module")
def prompt(tiny):
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    ids = tok(" ".join(generate_corpus(40, seed=7)), return_tensors="pt").input_ids[:, :100]
    assert ids.shape == (1, 100)
    return ids


def test_build_checkpoint_layout(tiny):
    cfg = json.loads((tiny / "config.json").read_text())
    p = PRESETS["tiny"]
    assert cfg["architectures"] == ["Qwen3NextForCausalLM"] and cfg["model_type"] == "qwen3_next"
    assert "layer_types" not in cfg and cfg["full_attention_interval"] == 4
    assert cfg["rope_theta"] == 1e6 and cfg["partial_rotary_factor"] == 0.25
    assert cfg["tie_word_embeddings"] is False and cfg["vocab_size"] % 64 == 0

    t = _tensors(tiny)
    H, E, I = p["hidden_size"], p["num_experts"], p["moe_intermediate_size"]
    HK, HV, K, V = (p[k] for k in ("linear_num_key_heads", "linear_num_value_heads",
                                   "linear_key_head_dim", "linear_value_head_dim"))
    NQ, NKV, D = p["num_attention_heads"], p["num_key_value_heads"], p["head_dim"]
    gdn = "model.layers.0.linear_attn."
    assert t[gdn + "in_proj_qkvz.weight"].shape == (2 * HK * K + 2 * HV * V, H)
    assert t[gdn + "in_proj_ba.weight"].shape == (2 * HV, H)
    assert t[gdn + "conv1d.weight"].shape == (2 * HK * K + HV * V, 1, p["linear_conv_kernel_dim"])
    assert t[gdn + "A_log"].shape == t[gdn + "dt_bias"].shape == (HV,)
    assert t[gdn + "norm.weight"].shape == (V,) and t[gdn + "out_proj.weight"].shape == (H, HV * V)
    for prefix in ("model.layers.3.", "mtp.layers.0."):
        assert t[prefix + "self_attn.q_proj.weight"].shape == (NQ * 2 * D, H)
        assert t[prefix + "self_attn.k_proj.weight"].shape == (NKV * D, H)
        assert t[prefix + "self_attn.o_proj.weight"].shape == (H, NQ * D)
        assert t[prefix + "mlp.gate.weight"].shape == (E, H)
        assert t[prefix + f"mlp.experts.{E - 1}.down_proj.weight"].shape == (H, I)
        assert t[prefix + "mlp.shared_expert_gate.weight"].shape == (1, H)
    assert t["mtp.fc.weight"].shape == (H, 2 * H)
    assert {"mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight"} <= set(t)
    assert not torch.equal(t["lm_head.weight"], t["model.embed_tokens.weight"])
    # the mtp layer carries the same tensor names as a main full-attention layer
    main = {k.removeprefix("model.layers.3.") for k in t if k.startswith("model.layers.3.")}
    assert main == {k.removeprefix("mtp.layers.0.") for k in t if k.startswith("mtp.layers.0.")}

    gen = json.loads((tiny / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_p"], gen["top_k"]) == (0.7, 0.8, 20)


def test_build_checkpoint_variants(tiny, tmp_path):
    base = _tensors(tiny)
    again = build_checkpoint(tmp_path / "again", "tiny", verbose=False)
    assert (again / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()

    d = build_checkpoint(tmp_path / "v", "tiny", verbose=False, with_mtp=False, num_hidden_layers=2,
                         layer_types=["linear_attention", "full_attention"])
    t = _tensors(d)
    assert not any(k.startswith("mtp.") for k in t)
    assert json.loads((d / "config.json").read_text())["layer_types"] == ["linear_attention", "full_attention"]
    # tensors are seeded by name: layer 0 is the same as in the default build
    assert all(torch.equal(v, base[k]) for k, v in t.items() if k.startswith("model.layers.0."))
    model, info = transformers.Qwen3NextForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.isfinite(model(torch.arange(20)[None]).logits).all()


def test_transformers_forward(tiny, hf_model, prompt):
    model, info = hf_model
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert all(k.startswith("mtp.") for k in info["unexpected_keys"])
    assert model.config.rope_parameters["rope_theta"] == 1e6
    with torch.no_grad():
        logits = model(prompt).logits[0]
    assert torch.isfinite(logits).all()
    assert 2.0 < logits.std(-1).mean() < 6.0
    top2 = logits.topk(2, -1).values
    margin = top2[:, 0] - top2[:, 1]
    assert margin.median() > 0.3 and (margin < 0.01).float().mean() < 0.1


def test_tokenizer_and_chat_template(tiny):
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    cfg = json.loads((tiny / "config.json").read_text())
    assert 1000 <= len(tok) <= cfg["vocab_size"] < len(tok) + 64
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == cfg["eos_token_id"]
    assert tok.pad_token == "<|endoftext|>"
    for m in MARKERS:
        assert len(tok(m).input_ids) == 1, m
    text = "Ünïcode 日本語 🙂, tabs\tand\n\nnewlines; {\"json\": [1, 2]}"
    assert tok.decode(tok(text).input_ids) == text

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    plain = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert plain == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
                     "<|im_start|>assistant\n")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    msgs += [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "{\"temp\": 3}"}]
    text = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(tools[0]) + "\n</tools>" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp": 3}\n</tool_response><|im_end|>\n' in text
    assert text.endswith("<|im_start|>assistant\n")


@contextlib.contextmanager
def _one_thread():
    """Many small forwards: one thread is fastest and does not suffer from busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_every_tensor_changes_logits(tiny, hf_model, prompt):
    """Perturb each checkpoint tensor (mtp.* aside: transformers ignores it) by a relative 1e-3."""
    model, _ = hf_model
    I = PRESETS["tiny"]["moe_intermediate_size"]

    def param_view(name):  # transformers packs experts as gate_up_proj [E, 2I, H], down_proj [E, H, I]
        m = re.fullmatch(r"(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight", name)
        if not m:
            return model.get_parameter(name).data
        experts, e = model.get_submodule(m[1]), int(m[2])
        return {"gate": experts.gate_up_proj.data[e, :I], "up": experts.gate_up_proj.data[e, I:],
                "down": experts.down_proj.data[e]}[m[3]]

    g = torch.Generator().manual_seed(0)
    unchanged = []
    with torch.no_grad(), _one_thread():
        base = model(prompt).logits
        for name, saved in _tensors(tiny).items():
            if name.startswith("mtp."):
                continue
            p = param_view(name)
            assert torch.equal(p, saved.float()), name
            scale = max(p.std().item() if p.numel() > 1 else 0.0, p.abs().mean().item(), 1e-2)
            delta = torch.randn(p.shape, generator=g) * 1e-3 * scale
            p.add_(delta)
            diff = (model(prompt).logits - base).abs().max().item()
            p.sub_(delta)
            if not (math.isfinite(diff) and diff > 1e-4):
                unchanged.append((name, diff))
    assert not unchanged
