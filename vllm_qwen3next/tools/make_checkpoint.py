"""Build a small random-weight Qwen3-Next checkpoint that transformers and vLLM load.

    python -m vllm_qwen3next.make_checkpoint OUT_DIR --preset tiny|slice [--seed N] [--dtype bfloat16|float32]

Writes `config.json` (in the style of Qwen/Qwen3-Next-80B-A3B-Instruct), `generation_config.json`,
`model.safetensors` (or shards plus `model.safetensors.index.json`) with the real tensor names
and layouts (grouped `in_proj_qkvz` / `in_proj_ba`, one tensor per expert, `mtp.*`), and a
byte-level BPE tokenizer trained here on a generated corpus, with a ChatML + hermes-tools template.

Weights are random but not degenerate: every tensor changes the logits, hidden states stay O(1)
through the layers, routing varies across tokens and the logits have a std of about 4.
Each tensor is drawn from its own generator, seeded by (seed, tensor name), so variants built
with other overrides (fewer layers, no MTP) share the tensors they have in common.

This module imports only torch, safetensors, tokenizers, the standard library and
`vllm_qwen3next.config` (no vLLM, no transformers), so it runs wherever the kernels run.

Shapes (the config's sizes, not the kernels' notation): H = hidden_size, I = moe_intermediate_size,
E = num_experts, HK / HV = linear key / value heads, K / V = linear key / value head dim,
W = conv kernel, NQ / NKV = attention q / kv heads, D = attention head dim.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import time
import zlib
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vllm_qwen3next.config import LAYER_TYPES, layer_types

PRESETS: dict[str, dict] = {
    # Loads in seconds; linear head dims of 64 so vLLM's CPU GDN kernel (64 or 128 only) runs it.
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=4,
        full_attention_interval=4,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=64,
        linear_value_head_dim=64,
        linear_conv_kernel_dim=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        partial_rotary_factor=0.25,
        rope_theta=1_000_000,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=64,
        shared_expert_intermediate_size=64,
        intermediate_size=256,
        max_position_embeddings=65536,
    ),
    # The real model's per-layer sizes; 4 layers and 8 experts so it fits a CPU.
    "slice": dict(
        hidden_size=2048,
        num_hidden_layers=4,
        full_attention_interval=4,
        linear_num_key_heads=16,
        linear_num_value_heads=32,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_conv_kernel_dim=4,
        num_attention_heads=16,
        num_key_value_heads=2,
        head_dim=256,
        partial_rotary_factor=0.25,
        rope_theta=10_000_000,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
        intermediate_size=5120,
        max_position_embeddings=262144,
    ),
}

# Init scales (std of the pre-activation they produce, inputs having rms 1).
EMBED_STD = 1.0
GEMMA_NORM_STD = 0.1  # weights w of x_hat * (1 + w)
GATED_NORM_STD = 0.1  # weights w of w * rmsnorm(x) * silu(z), drawn around 1
ROUTER_LOGIT_STD = 2.0  # so top-k routing varies across tokens with clear margins
LOGIT_STD = 4.0  # lm_head: greedy decoding is not a near-tie everywhere
ATTN_OUT_GAIN = 2.0  # o_proj: attention averages values over positions, which shrinks its output
# GDN decay exp(g), g = -A * softplus(a + dt_bias): with these, 90% of exp(g) over a prompt lie in about (0.6, 0.997).
A_RANGE = (1.0, 16.0)  # A = exp(A_log) ~ U(1, 16), as in fla / Mamba2
DT_RANGE = (1e-3, 3e-2)  # softplus(dt_bias) log-uniform in this range, as in Mamba
A_PROJ_STD = 0.5  # std of the `a` rows' output, which scales softplus(a + dt_bias) by about exp(a)

TOKENIZER_VOCAB = 1520  # byte-level BPE size before the added tokens
MAX_SHARD_BYTES = 512 * 2**20

# Qwen2/Qwen3 pre-tokenizer split (the one in the real tokenizer.json).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Added after the BPE vocabulary, in Qwen's order. As in Qwen3's tokenizer, the tool and think
# markers are added tokens that are not "special": skip_special_tokens keeps them in the text
# so tool-call and reasoning parsers see them.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

# Qwen3-2507 Instruct chat template (ChatML, hermes-style tools, no think blocks).
CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[make_checkpoint] {msg}", flush=True)


_WORDS = dict(
    noun="time year people way day man woman child world life hand part place case week company system "
    "program question work government number night point home water room mother area money story fact "
    "month lot right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea kid body "
    "information back parent face others level office door health person art war history party result "
    "change morning reason research girl guy moment air teacher force education model kernel token cache "
    "layer matrix vector server request weather river mountain garden library engine signal window table".split(),
    verb="be have do say go get make know think take see come want look use find give tell work call try "
    "ask need feel become leave put mean keep let begin seem help talk turn start show hear play run move "
    "like live believe hold bring happen write provide sit stand lose pay meet include continue set learn "
    "change lead understand watch follow stop create speak read allow add spend grow open walk win offer "
    "remember love consider appear buy wait serve die send expect build stay fall cut reach kill remain "
    "compute decode predict schedule load store measure compare explain describe".split(),
    adj="good new first last long great little own other old right big high different small large next "
    "early young important few public bad same able free sure clear full special easy strong certain "
    "whole real best simple quiet bright dark warm cold fast slow careful random hidden linear sparse".split(),
    adv="up so out just now how then more also here well only very even back there down still in as too "
    "when never really most often always sometimes together quickly slowly carefully again".split(),
    name="Alice Bob Carol David Emma Frank Grace Henry Irene Jack Karen Liam Mia Noah Olivia Paul Quinn "
    "Rosa Sam Tina Victor Wendy Xavier Yara Zoe".split(),
    place="Paris London Tokyo Berlin Madrid Rome Cairo Lima Oslo Seoul Boston Denver Sydney Toronto "
    "Nairobi Dublin Vienna Prague Lisbon Athens".split(),
    prep="in on at with from into during including until against among throughout despite towards upon "
    "about over before after between under around".split(),
    det="the a this that every some no each another".split(),
)


def _sentence(rng: random.Random) -> str:
    w = _WORDS
    pick = rng.choice
    forms = [
        lambda: f"{pick(w['det'])} {pick(w['adj'])} {pick(w['noun'])} {pick(w['verb'])}s {pick(w['prep'])} "
        f"{pick(w['det'])} {pick(w['noun'])}.",
        lambda: f"{pick(w['name'])} {pick(w['adv'])} {pick(w['verb'])}s the {pick(w['noun'])} in {pick(w['place'])}.",
        lambda: f"Why does {pick(w['det'])} {pick(w['noun'])} {pick(w['verb'])} {pick(w['adv'])}?",
        lambda: f"In {rng.randint(1900, 2030)}, {pick(w['name'])} and {pick(w['name'])} {pick(w['verb'])}ed "
        f"{rng.randint(2, 999)} {pick(w['noun'])}s {pick(w['prep'])} {pick(w['place'])}.",
        lambda: f"\"{pick(w['adj']).capitalize()} {pick(w['noun'])}s {pick(w['verb'])} {pick(w['adv'])},\" said "
        f"{pick(w['name'])}.",
        lambda: f"It's {pick(w['adj'])}, isn't it? We'll {pick(w['verb'])} the {pick(w['noun'])} at "
        f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}.",
        lambda: f"The {pick(w['noun'])} costs ${rng.randint(1, 500)}.{rng.randint(0, 99):02d} "
        f"({rng.randint(1, 99)}% {pick(w['adj'])}).",
    ]
    return rng.choice(forms)()


def _code(rng: random.Random) -> str:
    n, v = rng.choice(_WORDS["noun"]), rng.choice(_WORDS["verb"])
    k = rng.randint(2, 64)
    return rng.choice(
        [
            f"def {v}_{n}(x, n={k}):\n    \"\"\"{v.capitalize()} the {n}.\"\"\"\n    for i in range(n):\n"
            f"        x = x * {k} + i\n    return x\n",
            f"for (int i = 0; i < {k}; ++i) {{\n    {n}[i] += {v}(i);\n}}\n",
            f"{n}s = [{', '.join(str(rng.randint(0, 99)) for _ in range(rng.randint(2, 6)))}]\n"
            f"print(sum({n}s) / len({n}s))\n",
            f"$ python -m {n}.{v} --size {k} --out /tmp/{n}_{k}.json\n",
        ]
    )


def _tool_json(rng: random.Random) -> str:
    fn = f"{rng.choice(_WORDS['verb'])}_{rng.choice(_WORDS['noun'])}"
    key = rng.choice(["city", "query", "unit", "count", "name", "date"])
    date = f"2025-01-{rng.randint(1, 28):02d}"
    value = rng.choice([rng.choice(_WORDS["place"]), rng.randint(0, 100), rng.choice(_WORDS["adj"]), date])
    schema = {"type": "object", "properties": {key: {"type": "string"}}, "required": [key]}
    return rng.choice(
        [
            json.dumps({"name": fn, "arguments": {key: value}}),
            json.dumps({"type": "function", "function": {"name": fn, "description": fn.replace("_", " ") + ".",
                                                         "parameters": schema}}),
            json.dumps({"result": rng.choice(_WORDS["adj"]), "value": rng.randint(-50, 50) / 4}),
        ]
    )


def generate_corpus(num_docs: int = 3000, seed: int = 1234) -> list[str]:
    """Varied English-like text, numbers, code, JSON and markdown; deterministic."""
    rng = random.Random(seed)
    docs = []
    for i in range(num_docs):
        kind = rng.random()
        if kind < 0.6:
            doc = " ".join(_sentence(rng) for _ in range(rng.randint(2, 8)))
        elif kind < 0.75:
            doc = _code(rng)
        elif kind < 0.9:
            doc = _tool_json(rng)
        else:
            doc = f"## {rng.choice(_WORDS['noun']).capitalize()} {i}\n\n" + "\n".join(
                f"{j + 1}. {_sentence(rng)}" if rng.random() < 0.5 else f"- {_sentence(rng)}"
                for j in range(rng.randint(2, 5))
            )
        docs.append(doc)
    return docs


@functools.lru_cache(maxsize=2)
def build_tokenizer(vocab_size: int = TOKENIZER_VOCAB) -> Tokenizer:
    """Byte-level BPE in Qwen2's pipeline (NFC, regex split, byte level), special tokens appended."""
    tok = Tokenizer(models.BPE(byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(generate_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    tok.save(str(out_dir / "tokenizer.json"))
    added = {}
    for t in SPECIAL_TOKENS + ADDED_TOKENS:
        added[str(tok.token_to_id(t))] = dict(
            content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=t in SPECIAL_TOKENS
        )
    tokenizer_config = dict(
        add_bos_token=False,
        add_prefix_space=False,
        added_tokens_decoder=added,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        eos_token="<|im_end|>",
        errors="replace",
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
        split_special_tokens=False,
        tokenizer_class="Qwen2Tokenizer",
        unk_token=None,
    )
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")


def make_config(preset: str, dtype: torch.dtype, vocab_size: int, bos_id: int, eos_id: int, **overrides) -> dict:
    """config.json in the real model's style (top-level rope_theta, no layer_types unless overridden)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = dict(
        architectures=["Qwen3NextForCausalLM"],
        attention_bias=False,
        attention_dropout=0.0,
        bos_token_id=bos_id,
        decoder_sparse_step=1,
        eos_token_id=eos_id,
        hidden_act="silu",
        initializer_range=0.02,
        mlp_only_layers=[],
        model_type="qwen3_next",
        norm_topk_prob=True,
        output_router_logits=False,
        rms_norm_eps=1e-6,
        rope_scaling=None,
        router_aux_loss_coef=0.001,
        tie_word_embeddings=False,
        torch_dtype=str(dtype).removeprefix("torch."),
        use_cache=True,
        use_sliding_window=False,
        vocab_size=vocab_size,
    )
    cfg.update(PRESETS[preset])
    cfg.update(overrides)
    types, n = layer_types(cfg), cfg["num_hidden_layers"]
    if len(types) != n or not set(types) <= set(LAYER_TYPES):
        raise ValueError(f"layer_types {types} does not fit num_hidden_layers={n}")
    return dict(sorted(cfg.items()))


def _is_moe_layer(cfg: dict, i: int) -> bool:
    return i not in cfg["mlp_only_layers"] and cfg["num_experts"] > 0 and (i + 1) % cfg["decoder_sparse_step"] == 0


# A weight spec: name -> (shape, init) with init(generator) -> fp32 tensor of that shape.
Init = Callable[[torch.Generator], torch.Tensor]


def _normal(shape, std: float, mean: float = 0.0) -> Init:
    return lambda g: torch.randn(shape, generator=g) * std + mean


def _gdn_specs(cfg: dict, p: str) -> dict[str, tuple[tuple, Init]]:
    H, W = cfg["hidden_size"], cfg["linear_conv_kernel_dim"]
    HK, HV = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    K, V = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    r = HV // HK  # value heads per key head
    if HV % HK:
        raise ValueError("linear_num_value_heads must be a multiple of linear_num_key_heads")
    std_in = H**-0.5

    def qkvz(g):  # rows grouped per key head: [q K | k K | v r*V | z r*V]
        return torch.randn(HK, 2 * K + 2 * r * V, H, generator=g).mul_(std_in).reshape(-1, H)

    def ba(g):  # rows grouped per key head: [b r | a r]
        w = torch.randn(HK, 2 * r, H, generator=g).mul_(std_in)
        w[:, r:] *= A_PROJ_STD
        return w.reshape(-1, H)

    def a_log(g):
        return torch.log(torch.rand(HV, generator=g) * (A_RANGE[1] - A_RANGE[0]) + A_RANGE[0])

    def dt_bias(g):  # inverse softplus of a log-uniform dt
        lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
        dt = torch.exp(torch.rand(HV, generator=g) * (hi - lo) + lo)
        return dt + torch.log(-torch.expm1(-dt))

    return {
        f"{p}.in_proj_qkvz.weight": ((HK * (2 * K + 2 * r * V), H), qkvz),
        f"{p}.in_proj_ba.weight": ((HK * 2 * r, H), ba),
        # channels flat [q HK*K | k HK*K | v HV*V]
        f"{p}.conv1d.weight": ((2 * HK * K + HV * V, 1, W), _normal((2 * HK * K + HV * V, 1, W), W**-0.5)),
        f"{p}.A_log": ((HV,), a_log),
        f"{p}.dt_bias": ((HV,), dt_bias),
        f"{p}.norm.weight": ((V,), _normal((V,), GATED_NORM_STD, mean=1.0)),
        f"{p}.out_proj.weight": ((H, HV * V), _normal((H, HV * V), (HV * V) ** -0.5)),
    }


def _attn_specs(cfg: dict, p: str) -> dict[str, tuple[tuple, Init]]:
    H, NQ, NKV, D = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    shapes = {
        "q_proj.weight": ((NQ * 2 * D, H), H**-0.5),  # per head: [query D | gate D]
        "k_proj.weight": ((NKV * D, H), H**-0.5),
        "v_proj.weight": ((NKV * D, H), H**-0.5),
        "o_proj.weight": ((H, NQ * D), ATTN_OUT_GAIN * (NQ * D) ** -0.5),
        "q_norm.weight": ((D,), GEMMA_NORM_STD),
        "k_norm.weight": ((D,), GEMMA_NORM_STD),
    }
    return {f"{p}.{n}": (s, _normal(s, std)) for n, (s, std) in shapes.items()}


def _mlp_specs(H: int, inter: int, p: str) -> dict[str, tuple[tuple, Init]]:
    return {
        f"{p}.gate_proj.weight": ((inter, H), _normal((inter, H), H**-0.5)),
        f"{p}.up_proj.weight": ((inter, H), _normal((inter, H), H**-0.5)),
        f"{p}.down_proj.weight": ((H, inter), _normal((H, inter), inter**-0.5)),
    }


def _moe_specs(cfg: dict, p: str) -> dict[str, tuple[tuple, Init]]:
    H, E = cfg["hidden_size"], cfg["num_experts"]
    specs = {f"{p}.gate.weight": ((E, H), _normal((E, H), ROUTER_LOGIT_STD * H**-0.5))}
    for e in range(E):
        specs.update(_mlp_specs(H, cfg["moe_intermediate_size"], f"{p}.experts.{e}"))
    specs.update(_mlp_specs(H, cfg["shared_expert_intermediate_size"], f"{p}.shared_expert"))
    specs[f"{p}.shared_expert_gate.weight"] = ((1, H), _normal((1, H), H**-0.5))
    return specs


def _decoder_layer_specs(cfg: dict, p: str, layer_type: str, moe: bool) -> dict[str, tuple[tuple, Init]]:
    H = cfg["hidden_size"]
    specs = {f"{p}.input_layernorm.weight": ((H,), _normal((H,), GEMMA_NORM_STD))}
    if layer_type == "linear_attention":
        specs.update(_gdn_specs(cfg, f"{p}.linear_attn"))
    else:
        specs.update(_attn_specs(cfg, f"{p}.self_attn"))
    specs[f"{p}.post_attention_layernorm.weight"] = ((H,), _normal((H,), GEMMA_NORM_STD))
    specs.update(_moe_specs(cfg, f"{p}.mlp") if moe else _mlp_specs(H, cfg["intermediate_size"], f"{p}.mlp"))
    return specs


def weight_specs(cfg: dict, with_mtp: bool = True) -> dict[str, tuple[tuple, Init]]:
    """Every checkpoint tensor: name -> (shape, init), in checkpoint order."""
    H, vocab = cfg["hidden_size"], cfg["vocab_size"]
    specs = {"model.embed_tokens.weight": ((vocab, H), _normal((vocab, H), EMBED_STD))}
    for i, t in enumerate(layer_types(cfg)):
        specs.update(_decoder_layer_specs(cfg, f"model.layers.{i}", t, _is_moe_layer(cfg, i)))
    specs["model.norm.weight"] = ((H,), _normal((H,), GEMMA_NORM_STD))
    specs["lm_head.weight"] = ((vocab, H), _normal((vocab, H), LOGIT_STD * H**-0.5))
    if with_mtp:
        specs["mtp.fc.weight"] = ((H, 2 * H), _normal((H, 2 * H), (2 * H) ** -0.5))
        for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
            specs[f"mtp.{n}.weight"] = ((H,), _normal((H,), GEMMA_NORM_STD))
        specs.update(_decoder_layer_specs(cfg, "mtp.layers.0", "full_attention", moe=cfg["num_experts"] > 0))
    return specs


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def materialize(specs: dict, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for name, (shape, init) in specs.items():
        t = init(_generator(seed, name))
        assert tuple(t.shape) == tuple(shape), (name, t.shape, shape)
        out[name] = t.to(dtype).contiguous()
    return out


def save_weights(
    specs: dict, out_dir: Path, seed: int, dtype: torch.dtype, max_shard_bytes: int, verbose: bool
) -> list[str]:
    """Writes model.safetensors, or model-0000i-of-0000n.safetensors + index when over max_shard_bytes."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards, cur, cur_bytes = [], [], 0
    for name, (shape, _) in specs.items():
        nbytes = math.prod(shape) * itemsize
        if cur and cur_bytes + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(name)
        cur_bytes += nbytes
    shards.append(cur)
    total = sum(math.prod(s) for s, _ in specs.values()) * itemsize
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for fname, shard in zip(names, shards):
        t0 = time.perf_counter()
        tensors = materialize({n: specs[n] for n in shard}, seed, dtype)
        save_file(tensors, str(out_dir / fname), metadata={"format": "pt"})
        os.chmod(out_dir / fname, 0o644)
        weight_map.update({n: fname for n in shard})
        _log(verbose, f"wrote {fname}: {len(shard)} tensors, {sum(t.numel() for t in tensors.values()) / 1e6:.1f}M "
             f"params in {time.perf_counter() - t0:.1f}s")
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


def _remove_weights(out_dir: Path) -> None:
    for stale in list(out_dir.glob("model*.safetensors")) + list(out_dir.glob("model.safetensors.index.json")):
        stale.unlink()


def save_state_dict(
    tensors: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    verbose: bool = True,
) -> list[str]:
    """Writes `tensors` (checkpoint names, in file order, one dtype) to `out_dir` as build_checkpoint
    writes its random weights, replacing the weight files already there; returns the file names."""
    out = Path(out_dir)
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1:
        raise ValueError(f"tensors of several dtypes: {sorted(map(str, dtypes))}")
    specs = {name: (tuple(t.shape), lambda g, t=t: t) for name, t in tensors.items()}  # init ignores its generator
    _remove_weights(out)
    return save_weights(specs, out, 0, dtypes.pop(), max_shard_bytes, verbose)


def build_checkpoint(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    dtype: str | torch.dtype = "bfloat16",
    *,
    with_mtp: bool = True,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    verbose: bool = True,
    **config_overrides,
) -> Path:
    """Writes a random-weight Qwen3-Next checkpoint to `out_dir` and returns its path.

    `config_overrides` replace config.json fields (e.g. num_hidden_layers=2,
    layer_types=[...], num_experts=4); shapes follow the final config.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype

    t0 = time.perf_counter()
    tok = build_tokenizer()
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    _log(verbose, f"trained byte-level BPE tokenizer: {n_tok} tokens in {time.perf_counter() - t0:.1f}s")
    vocab_size = config_overrides.pop("vocab_size", None) or -(-n_tok // 64) * 64
    if vocab_size < n_tok:
        raise ValueError(f"vocab_size {vocab_size} < tokenizer size {n_tok}")
    eos_id, pad_id = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")

    cfg = make_config(preset, dtype, vocab_size, bos_id=pad_id, eos_id=eos_id, **config_overrides)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    generation_config = dict(
        bos_token_id=pad_id,
        do_sample=True,
        eos_token_id=[eos_id, pad_id],
        pad_token_id=pad_id,
        temperature=0.7,
        top_k=20,
        top_p=0.8,
    )
    (out / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    save_tokenizer(tok, out, model_max_length=cfg["max_position_embeddings"])

    specs = weight_specs(cfg, with_mtp=with_mtp)
    n_params = sum(math.prod(s) for s, _ in specs.values())
    _log(verbose, f"preset {preset}: {len(specs)} tensors, {n_params / 1e6:.1f}M params, {dtype}, "
         f"layers {layer_types(cfg)}")
    _remove_weights(out)
    save_weights(specs, out, seed, dtype, max_shard_bytes, verbose)
    _log(verbose, f"done: {out} in {time.perf_counter() - t_start:.1f}s")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    ap.add_argument("--no-mtp", dest="with_mtp", action="store_false", help="leave out the mtp.* tensors")
    args = ap.parse_args(argv)
    build_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, dtype=args.dtype, with_mtp=args.with_mtp)


if __name__ == "__main__":
    main()
